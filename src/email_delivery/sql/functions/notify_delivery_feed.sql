CREATE OR REPLACE FUNCTION email.notify_delivery_feed()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- Wakes feed readers that LISTEN on email_delivery_feed when the writing transaction
    -- commits (a rolled-back one notifies nobody). Once per statement, with an empty payload:
    -- PostgreSQL folds a transaction's identical notifications into one. A hint only: an
    -- event becomes readable when the oldest transaction older than it ends, which notifies
    -- nothing, so readers also poll (email_delivery.feed.follow).
    PERFORM pg_notify('email_delivery_feed', '');
    RETURN NULL;
END
$$;
