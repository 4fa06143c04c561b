CREATE OR REPLACE TRIGGER deliveries_purge_events
    AFTER DELETE ON email.deliveries
    REFERENCING OLD TABLE AS purged_rows
    FOR EACH STATEMENT
    EXECUTE FUNCTION email.purge_delivery_events();
