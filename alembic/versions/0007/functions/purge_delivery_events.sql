CREATE OR REPLACE FUNCTION email.purge_delivery_events()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    purged bigint;
BEGIN
    -- A purged delivery's events go with it (the seed's ON DELETE CASCADE), set-based, once
    -- per statement. Each event is stamped with its delivery's created_at (insert) or
    -- updated_at (change), so only the partitions of the purged deliveries' span are
    -- searched: retention's old deliveries touch old partitions only.
    DELETE FROM email.delivery_events AS e
    USING purged_rows AS d
    WHERE e.delivery_id = d.delivery_id
      AND e.created_at >= (SELECT min(p.created_at) FROM purged_rows AS p)
      AND e.created_at <= (SELECT max(greatest(p.created_at, p.updated_at)) FROM purged_rows AS p);
    -- How many, for retention's report: summed over the transaction's statements.
    GET DIAGNOSTICS purged = ROW_COUNT;
    PERFORM set_config('email.purged_events',
        (coalesce(nullif(current_setting('email.purged_events', true), ''), '0')::bigint
         + purged)::text, true);
    -- A deletion writes no audit event: the hours it changed are recorded for the rollups'
    -- next refresh (and read from the deliveries until then).
    INSERT INTO email.delivery_rollup_deletions (hour, workflow)
    SELECT DISTINCT date_bin(interval '1 hour', p.queued_at, TIMESTAMPTZ '2000-01-01 00:00:00+00'), p.workflow
    FROM purged_rows AS p
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;
