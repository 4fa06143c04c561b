CREATE OR REPLACE TRIGGER delivery_events_notify
    AFTER INSERT ON email.delivery_events
    FOR EACH STATEMENT
    EXECUTE FUNCTION email.notify_delivery_feed();
