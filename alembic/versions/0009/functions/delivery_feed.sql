CREATE OR REPLACE FUNCTION email.delivery_feed(p_after_xact_id bigint DEFAULT 0, p_after_event_id bigint DEFAULT 0, p_limit integer DEFAULT 1000)
RETURNS TABLE(xact_id bigint, id bigint, delivery_id text, status email.delivery_status, attempt integer, error_code text, error_message text, payload jsonb, changed_columns text[], created_at timestamp with time zone)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    legacy integer := 0;
BEGIN
    -- The change feed: every audit event exactly once, in transaction order, after the
    -- cursor (p_after_xact_id, p_after_event_id). Identity values are taken at insert, not at
    -- commit, so "id > last seen" skips an event whose transaction commits after a higher id
    -- was read. Here a page holds only events of transactions below the snapshot's xmin:
    -- every one of those has ended (committed or rolled back), and every transaction that
    -- starts later gets a higher id, so nothing can ever appear behind the cursor. The order
    -- (xact_id, id) is the btree ix_delivery_events_xact_id_id. xact_id is the 64-bit
    -- pg_current_xact_id() (epoch and xid): no wraparound. SECURITY INVOKER: the caller's
    -- own SELECT right and policies on delivery_events apply (email_reader, email_writer).
    IF p_limit IS NULL OR p_limit < 1 OR p_limit > 10000 THEN
        RAISE EXCEPTION 'p_limit must be between 1 and 10000, not %', p_limit
            USING ERRCODE = '22023', COLUMN = 'p_limit';
    END IF;
    -- Events written before revision 0006 have no xact_id: all committed long before this
    -- function existed, they come first, as xact_id 0, in id order.
    IF coalesce(p_after_xact_id, 0) = 0 THEN
        RETURN QUERY
        SELECT 0::bigint, e.id, e.delivery_id, e.status, e.attempt, e.error_code,
               e.error_message, e.payload, e.changed_columns, e.created_at
        FROM email.delivery_events AS e
        WHERE e.xact_id IS NULL AND e.id > coalesce(p_after_event_id, 0)
        ORDER BY e.id
        LIMIT p_limit;
        GET DIAGNOSTICS legacy = ROW_COUNT;
        IF legacy >= p_limit THEN
            RETURN;
        END IF;
        p_after_event_id := 0;
    END IF;
    -- One statement: the xmin and the rows come from the same snapshot.
    RETURN QUERY
    SELECT e.xact_id, e.id, e.delivery_id, e.status, e.attempt, e.error_code,
           e.error_message, e.payload, e.changed_columns, e.created_at
    FROM email.delivery_events AS e
    WHERE (e.xact_id, e.id) > (coalesce(p_after_xact_id, 0), coalesce(p_after_event_id, 0))
      AND e.xact_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
    ORDER BY e.xact_id, e.id
    LIMIT p_limit - legacy;
END
$$;
