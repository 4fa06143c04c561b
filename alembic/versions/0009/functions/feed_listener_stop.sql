CREATE OR REPLACE FUNCTION email.feed_listener_stop()
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    -- This session no longer LISTENs: writers stop notifying once nobody else does.
    DELETE FROM email.feed_listeners WHERE backend_pid = pg_backend_pid();
$$;
