CREATE OR REPLACE TRIGGER deliveries_audit_insert
    AFTER INSERT ON email.deliveries
    REFERENCING NEW TABLE AS inserted_rows
    FOR EACH STATEMENT
    EXECUTE FUNCTION email.audit_inserted_deliveries();
