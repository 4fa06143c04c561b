CREATE OR REPLACE TRIGGER deliveries_audit_insert
    AFTER INSERT ON email.deliveries
    FOR EACH ROW
    EXECUTE FUNCTION email.record_delivery_event();
