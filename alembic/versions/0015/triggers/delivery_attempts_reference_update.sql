CREATE OR REPLACE TRIGGER delivery_attempts_reference_update
    AFTER UPDATE ON email.delivery_attempts
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT
    EXECUTE FUNCTION email.check_delivery_reference();
