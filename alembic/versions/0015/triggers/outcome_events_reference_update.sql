CREATE OR REPLACE TRIGGER outcome_events_reference_update
    AFTER UPDATE ON email.outcome_events
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT
    EXECUTE FUNCTION email.check_delivery_reference();
