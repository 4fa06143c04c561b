CREATE OR REPLACE TRIGGER deliveries_reference_truncate
    AFTER TRUNCATE ON email.deliveries
    FOR EACH STATEMENT
    EXECUTE FUNCTION email.check_truncated_deliveries();
