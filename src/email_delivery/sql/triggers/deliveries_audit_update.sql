CREATE OR REPLACE TRIGGER deliveries_audit_update
    AFTER UPDATE ON email.deliveries
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT
    EXECUTE FUNCTION email.audit_updated_deliveries();
