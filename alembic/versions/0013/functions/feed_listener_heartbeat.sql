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
    -- At most 2 minutes: any reader or writer may register, and while one is registered
    -- every commit that writes events NOTIFYs (which serialises commits cluster-wide).
    IF p_ttl IS NULL OR p_ttl < interval '1 second' OR p_ttl > interval '2 minutes' THEN
        RAISE EXCEPTION 'p_ttl must be between 1 second and 2 minutes, not %', p_ttl
            USING ERRCODE = '22023', COLUMN = 'p_ttl';
    END IF;
    INSERT INTO email.feed_listeners AS l (backend_pid, expires_at)
    VALUES (pg_backend_pid(), now() + p_ttl)
    ON CONFLICT (backend_pid) DO UPDATE SET expires_at = EXCLUDED.expires_at
    RETURNING l.expires_at INTO expires;
    -- Registrations that expired, or whose session has ended, no longer count.
    DELETE FROM email.feed_listeners AS l
    WHERE l.expires_at < now()
       OR NOT EXISTS (SELECT FROM pg_stat_activity AS a WHERE a.pid = l.backend_pid);
    RETURN expires;
END
$$;
