CREATE OR REPLACE FUNCTION email.delivery_feed_head()
RETURNS TABLE(xact_id bigint, id bigint)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- The feed's cursor "now": after every event a page could return at this moment (every
    -- transaction below the snapshot's xmin). A reader starting here gets only later changes.
    SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint - 1, 9223372036854775807::bigint
$$;
