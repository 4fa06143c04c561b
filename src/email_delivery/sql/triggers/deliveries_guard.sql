CREATE OR REPLACE TRIGGER deliveries_guard
    BEFORE INSERT OR UPDATE ON email.deliveries
    FOR EACH ROW
    EXECUTE FUNCTION email.guard_delivery();
