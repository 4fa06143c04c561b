CREATE OR REPLACE FUNCTION email.refresh_delivery_rollups()
RETURNS TABLE(hours_recomputed integer, hours_added integer, rolled_until timestamp with time zone)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    state record;
    -- Every transaction below the snapshot's xmin has ended: its events (and deletions) are
    -- all visible now, so the next run starts there and misses none that commit late.
    horizon bigint := pg_snapshot_xmin(pg_current_snapshot())::text::bigint;
    target timestamp with time zone := date_bin(interval '1 hour', now(), TIMESTAMPTZ '2000-01-01 00:00:00+00');
    dirty_workflows text[] := '{}';
    dirty_hours timestamp with time zone[] := '{}';
    new_hours integer;
    -- The daily tier: [days_from, days_to) is summed again whole (the days that closed
    -- since the last run, or every day when the tier is new or the hours were reset);
    -- before days_from, only the (workflow, day) of a recomputed hour.
    days_from timestamp with time zone;
    days_to timestamp with time zone;
BEGIN
    -- The owner's maintenance (retention.maintain, or pg_cron): recompute every rolled hour
    -- that a transaction touched since the last run, and roll up the hours that closed.
    -- Several runs at once wait for each other on the state row.
    SELECT s.rolled_until, s.xact_watermark, s.days_until INTO state
    FROM email.delivery_rollup_state AS s FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO email.delivery_rollup_state DEFAULT VALUES ON CONFLICT DO NOTHING;
        SELECT s.rolled_until, s.xact_watermark, s.days_until INTO state
        FROM email.delivery_rollup_state AS s FOR UPDATE;
    END IF;
    IF state.rolled_until > '-infinity' THEN
        WITH touched AS (
            SELECT d.workflow,
                   date_bin(interval '1 hour', d.queued_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS hour
            FROM email.delivery_events AS e
            JOIN email.deliveries AS d ON d.delivery_id = e.delivery_id
            WHERE e.xact_id >= state.xact_watermark AND e.xact_id < horizon
            UNION
            SELECT x.workflow, x.hour FROM email.delivery_rollup_deletions AS x
            WHERE x.xact_id < horizon
        )
        SELECT coalesce(array_agg(t.workflow), '{}'), coalesce(array_agg(t.hour), '{}')
        INTO dirty_workflows, dirty_hours
        FROM touched AS t WHERE t.hour < state.rolled_until;
        DELETE FROM email.delivery_rollups AS r
        USING unnest(dirty_workflows, dirty_hours) AS t(workflow, hour)
        WHERE r.hour = t.hour AND r.workflow = t.workflow;
    END IF;
    IF state.rolled_until < target THEN
        DELETE FROM email.delivery_rollups AS r
        WHERE r.hour >= state.rolled_until AND r.hour < target;
    END IF;
    WITH written AS (
        INSERT INTO email.delivery_rollups
            (hour, workflow, status, error_code, latency_bucket, deliveries, attempts, retried)
        SELECT raw.* FROM unnest(dirty_workflows, dirty_hours) AS t(workflow, hour)
        CROSS JOIN LATERAL email.raw_delivery_rollups(
            t.hour, t.hour + interval '1 hour', t.workflow) AS raw
        UNION ALL
        SELECT raw.* FROM email.raw_delivery_rollups(state.rolled_until, target) AS raw
        WHERE state.rolled_until < target
        RETURNING email.delivery_rollups.hour
    )
    SELECT count(DISTINCT w.hour) FILTER (WHERE w.hour >= state.rolled_until) INTO new_hours
    FROM written AS w;
    -- The daily tier, from the hourly rows just written: a day is in it once every hour of
    -- it is rolled (days_until, a midnight, never passes rolled_until), and a (workflow,
    -- day) is summed again whenever one of its hours was recomputed above, so a day's rows
    -- are always the sum of its hourly rows as of the watermark.
    days_to := date_bin(interval '1 day', greatest(state.rolled_until, target), TIMESTAMPTZ '2000-01-01 00:00:00+00');
    days_from := CASE WHEN isfinite(state.rolled_until)
                      THEN least(state.days_until, date_bin(interval '1 day', state.rolled_until, TIMESTAMPTZ '2000-01-01 00:00:00+00'))
                      ELSE '-infinity' END;
    days_from := least(days_from, days_to);
    DELETE FROM email.delivery_rollups_daily AS r
    WHERE r.day >= days_from AND r.day < days_to;
    DELETE FROM email.delivery_rollups_daily AS r
    USING unnest(dirty_workflows, dirty_hours) AS t(workflow, hour)
    WHERE r.day = date_bin(interval '1 day', t.hour, TIMESTAMPTZ '2000-01-01 00:00:00+00') AND r.workflow = t.workflow
      AND r.day < days_from;
    INSERT INTO email.delivery_rollups_daily
        (day, workflow, status, error_code, latency_bucket, deliveries, attempts, retried)
    SELECT date_bin(interval '1 day', r.hour, TIMESTAMPTZ '2000-01-01 00:00:00+00'), r.workflow, r.status, r.error_code, r.latency_bucket,
           sum(r.deliveries)::bigint, sum(r.attempts)::bigint, sum(r.retried)::bigint
    FROM email.delivery_rollups AS r
    WHERE r.hour >= days_from AND r.hour < days_to
    GROUP BY 1, 2, 3, 4, 5
    UNION ALL
    SELECT t.day, r.workflow, r.status, r.error_code, r.latency_bucket,
           sum(r.deliveries)::bigint, sum(r.attempts)::bigint, sum(r.retried)::bigint
    FROM (SELECT DISTINCT u.workflow, date_bin(interval '1 day', u.hour, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS day
          FROM unnest(dirty_workflows, dirty_hours) AS u(workflow, hour)) AS t
    JOIN email.delivery_rollups AS r
        ON r.workflow = t.workflow AND r.hour >= t.day AND r.hour < t.day + interval '1 day'
    WHERE t.day < days_from
    GROUP BY 1, 2, 3, 4, 5;
    DELETE FROM email.delivery_rollup_deletions AS x WHERE x.xact_id < horizon;
    UPDATE email.delivery_rollup_state AS s
    SET xact_watermark = greatest(s.xact_watermark, horizon),
        rolled_until = greatest(s.rolled_until, target),
        days_until = days_to,
        refreshed_at = now();
    RETURN QUERY
    SELECT cardinality(dirty_hours), new_hours, greatest(state.rolled_until, target);
END
$$;
