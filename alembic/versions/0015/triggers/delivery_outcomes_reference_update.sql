CREATE OR REPLACE TRIGGER delivery_outcomes_reference_update
    AFTER UPDATE ON email.delivery_outcomes
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT
    EXECUTE FUNCTION email.check_delivery_reference();
