CREATE OR REPLACE FUNCTION email.maintain(p_ahead interval DEFAULT '3 mons'::interval, p_interval interval DEFAULT '1 mon'::interval)
RETURNS TABLE(partitions_created text[], rollup_hours_recomputed integer, rollup_hours_added integer, rolled_until timestamp with time zone, covered_until timestamp with time zone, default_partition_rows bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    created text[];
    refreshed record;
BEGIN
    -- The owner's periodic step, every few minutes (`email-delivery maintain`, or pg_cron:
    -- SELECT * FROM email.maintain()): the audit log's partitions p_ahead into the future,
    -- then the dashboards' rollups (deliveries, then providers). What it reports is what verify and health warn about:
    -- how far the partitions reach, and events that landed in the default partition.
    SELECT coalesce(array_agg(p), '{}') INTO created
    FROM email.create_event_partitions(p_ahead, p_interval) AS p;
    SELECT * INTO refreshed FROM email.refresh_delivery_rollups();
    PERFORM FROM email.refresh_provider_rollups();
    RETURN QUERY
    SELECT created, refreshed.hours_recomputed, refreshed.hours_added, refreshed.rolled_until,
           (SELECT max(p.upper_bound) FROM email.event_partitions() AS p),
           (SELECT count(*) FROM email.delivery_events_default);
END
$$;
