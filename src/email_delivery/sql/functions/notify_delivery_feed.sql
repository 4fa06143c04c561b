CREATE OR REPLACE FUNCTION email.notify_delivery_feed()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- Wakes feed readers that LISTEN on email_delivery_feed when the writing transaction
    -- commits (a rolled-back one notifies nobody). Only while a reader has registered
    -- (email.feed_listener_heartbeat): a NOTIFY serialises its transaction's commit with every
    -- other notifying commit of the cluster (one lock, held through the commit's WAL flush),
    -- which would cap the lifecycle's throughput for nobody's benefit. Once per statement,
    -- with an empty payload (PostgreSQL folds a transaction's identical notifications). A
    -- hint only: an event also becomes readable when an older transaction ends, which
    -- notifies nobody, so readers poll as well (email_delivery.feed.follow).
    IF EXISTS (SELECT FROM email.feed_listeners AS l WHERE l.expires_at > now()) THEN
        PERFORM pg_notify('email_delivery_feed', '');
    END IF;
    RETURN NULL;
END
$$;
