CREATE OR REPLACE FUNCTION email.feed_listener_heartbeat(p_ttl interval DEFAULT '00:01:00'::interval)
RETURNS timestamp with time zone
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    expires timestamptz;
BEGIN
    -- A session that LISTENs on email_delivery_feed says so, and again before p_ttl has
    -- passed: while one is registered, writers' commits NOTIFY (email.notify_delivery_feed).
    -- A listener that dies stops being counted when its registration expires.
    IF p_ttl IS NULL OR p_ttl < interval '1 second' OR p_ttl > interval '1 hour' THEN
        RAISE EXCEPTION 'p_ttl must be between 1 second and 1 hour, not %', p_ttl
            USING ERRCODE = '22023', COLUMN = 'p_ttl';
    END IF;
    INSERT INTO email.feed_listeners AS l (backend_pid, expires_at)
    VALUES (pg_backend_pid(), now() + p_ttl)
    ON CONFLICT (backend_pid) DO UPDATE SET expires_at = EXCLUDED.expires_at
    RETURNING l.expires_at INTO expires;
    DELETE FROM email.feed_listeners AS l WHERE l.expires_at < now() - interval '1 hour';
    RETURN expires;
END
$$;
