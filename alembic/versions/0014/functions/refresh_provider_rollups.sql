CREATE OR REPLACE FUNCTION email.refresh_provider_rollups()
RETURNS TABLE(hours_recomputed integer, hours_added integer, rolled_until timestamp with time zone)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    state record;
    -- Every transaction below the snapshot's xmin has ended: its attempts and outcomes (and
    -- deletions) are all visible now, so the next run starts there and misses none that
    -- commit late.
    horizon bigint := pg_snapshot_xmin(pg_current_snapshot())::text::bigint;
    target timestamp with time zone := date_bin(interval '1 hour', now(), TIMESTAMPTZ '2000-01-01 00:00:00+00');
    dirty_hours timestamp with time zone[] := '{}';
    dirty_providers text[] := '{}';
    dirty_workflows text[] := '{}';
    dirty_days timestamp with time zone[];
    new_hours integer;
BEGIN
    -- The owner's maintenance (maintain, or pg_cron), as email.refresh_delivery_rollups
    -- for the delivery rollups: recompute every rolled (hour, provider, workflow) whose
    -- attempts, or their deliveries' outcomes, a transaction changed since the last run,
    -- or whose attempts retention removed; then roll up the hours that closed, and sum the
    -- closed days those hours belong to. Several runs at once wait for each other on the
    -- state row.
    SELECT s.rolled_until, s.xact_watermark INTO state
    FROM email.provider_rollup_state AS s FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO email.provider_rollup_state DEFAULT VALUES ON CONFLICT DO NOTHING;
        SELECT s.rolled_until, s.xact_watermark INTO state
        FROM email.provider_rollup_state AS s FOR UPDATE;
    END IF;
    IF state.rolled_until > '-infinity' THEN
        WITH touched AS (
            SELECT date_bin(interval '1 hour', a.reported_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS hour, a.provider, a.workflow
            FROM email.delivery_attempts AS a
            WHERE a.xact_id >= state.xact_watermark AND a.xact_id < horizon
              AND a.provider IS NOT NULL
            UNION
            SELECT date_bin(interval '1 hour', a.reported_at, TIMESTAMPTZ '2000-01-01 00:00:00+00'), a.provider, a.workflow
            FROM email.delivery_outcomes AS o
            JOIN email.delivery_attempts AS a
              ON a.delivery_id = o.delivery_id AND a.result = 'sent'
            WHERE o.xact_id >= state.xact_watermark AND o.xact_id < horizon
              AND a.provider IS NOT NULL
            UNION
            SELECT x.hour, x.provider, x.workflow FROM email.provider_rollup_deletions AS x
            WHERE x.xact_id < horizon
        )
        SELECT coalesce(array_agg(t.hour), '{}'), coalesce(array_agg(t.provider), '{}'),
               coalesce(array_agg(t.workflow), '{}')
        INTO dirty_hours, dirty_providers, dirty_workflows
        FROM touched AS t WHERE t.hour < state.rolled_until;
        DELETE FROM email.provider_rollups AS r
        USING unnest(dirty_hours, dirty_providers, dirty_workflows) AS t(hour, provider, workflow)
        WHERE r.hour = t.hour AND r.provider = t.provider AND r.workflow = t.workflow;
    END IF;
    IF state.rolled_until < target THEN
        DELETE FROM email.provider_rollups AS r
        WHERE r.hour >= state.rolled_until AND r.hour < target;
    END IF;
    WITH written AS (
        INSERT INTO email.provider_rollups
            (hour, provider, workflow, attempts, accepted, failed, delivered, deferred, bounced, hard_bounced, complained, rejected, send_buckets, send_counts, delivered_buckets, delivered_counts)
        SELECT raw.* FROM unnest(dirty_hours, dirty_providers, dirty_workflows)
                          AS t(hour, provider, workflow)
        CROSS JOIN LATERAL email.raw_provider_rollups(
            t.hour, t.hour + interval '1 hour', t.provider, t.workflow) AS raw
        UNION ALL
        SELECT raw.* FROM email.raw_provider_rollups(state.rolled_until, target) AS raw
        WHERE state.rolled_until < target
        RETURNING email.provider_rollups.hour
    )
    SELECT count(DISTINCT w.hour) FILTER (WHERE w.hour >= state.rolled_until) INTO new_hours
    FROM written AS w;
    -- The daily tier: every closed day that holds a recomputed hour, and every day that
    -- closed since the last run, summed anew from its hours.
    SELECT coalesce(array_agg(DISTINCT d.day), '{}') INTO dirty_days
    FROM (SELECT date_bin(interval '1 day', h.hour, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS day
          FROM unnest(dirty_hours) AS h(hour)
          UNION ALL
          SELECT date_bin(interval '1 day', r.hour, TIMESTAMPTZ '2000-01-01 00:00:00+00')
          FROM email.provider_rollups AS r
          WHERE r.hour >= date_bin(interval '1 day', state.rolled_until, TIMESTAMPTZ '2000-01-01 00:00:00+00')) AS d
    WHERE d.day < date_bin(interval '1 day', greatest(state.rolled_until, target), TIMESTAMPTZ '2000-01-01 00:00:00+00');
    DELETE FROM email.provider_rollups_daily AS y WHERE y.day = ANY (dirty_days);
    INSERT INTO email.provider_rollups_daily
    SELECT m.* FROM email.merge_provider_rollups(
        (SELECT array_agg(r) FROM unnest(dirty_days) AS d(day)
         JOIN email.provider_rollups AS r ON r.hour >= d.day AND r.hour < d.day + interval '1 day'),
        interval '1 day') AS m;
    DELETE FROM email.provider_rollup_deletions AS x WHERE x.xact_id < horizon;
    UPDATE email.provider_rollup_state AS s
    SET xact_watermark = greatest(s.xact_watermark, horizon),
        rolled_until = greatest(s.rolled_until, target),
        refreshed_at = now();
    RETURN QUERY
    SELECT cardinality(dirty_hours), new_hours, greatest(state.rolled_until, target);
END
$$;
