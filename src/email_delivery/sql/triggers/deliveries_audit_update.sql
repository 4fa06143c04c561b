CREATE OR REPLACE TRIGGER deliveries_audit_update
    AFTER UPDATE ON email.deliveries
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.attempts IS DISTINCT FROM NEW.attempts)
    EXECUTE FUNCTION email.record_delivery_event();
