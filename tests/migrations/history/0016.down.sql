SET LOCAL lock_timeout = '5s';

SET LOCAL statement_timeout = '60s';

DROP POLICY delivery_rollups_daily_email_reader_select ON email.delivery_rollups_daily;

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
BEGIN
    -- The owner's maintenance (retention.maintain, or pg_cron): recompute every rolled hour
    -- that a transaction touched since the last run, and roll up the hours that closed.
    -- Several runs at once wait for each other on the state row.
    SELECT s.rolled_until, s.xact_watermark INTO state
    FROM email.delivery_rollup_state AS s FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO email.delivery_rollup_state DEFAULT VALUES ON CONFLICT DO NOTHING;
        SELECT s.rolled_until, s.xact_watermark INTO state
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
    DELETE FROM email.delivery_rollup_deletions AS x WHERE x.xact_id < horizon;
    UPDATE email.delivery_rollup_state AS s
    SET xact_watermark = greatest(s.xact_watermark, horizon),
        rolled_until = greatest(s.rolled_until, target),
        refreshed_at = now();
    RETURN QUERY
    SELECT cardinality(dirty_hours), new_hours, greatest(state.rolled_until, target);
END
$$;;

CREATE OR REPLACE FUNCTION email.delivery_stats(p_since timestamp with time zone, p_until timestamp with time zone DEFAULT NULL::timestamp with time zone, p_bucket text DEFAULT NULL::text, p_workflow text DEFAULT NULL::text, p_top_errors integer DEFAULT 3)
RETURNS TABLE(workflow text, bucket timestamp with time zone, total bigint, sent bigint, failed bigint, dead_letter bigint, in_flight bigint, success_rate double precision, retry_rate double precision, mean_attempts double precision, latency_p50_s double precision, latency_p95_s double precision, latency_p99_s double precision, top_error_codes jsonb)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    rolled_until timestamp with time zone;
    watermark bigint;
    -- [low, high): the whole hours inside the window that the rollups may answer.
    low timestamp with time zone;
    high timestamp with time zone;
BEGIN
    -- The one definition of the per-workflow statistics: the dashboard views and
    -- email_delivery.queries.workflow_stats both read it. Deliveries queued in
    -- [p_since, p_until), counted by their current status, per workflow and, with p_bucket
    -- ('hour' or 'day'), per UTC bucket (NULL otherwise).
    -- Whole hours come from email.delivery_rollups unless a transaction the last refresh
    -- did not see touched them; the rest (the window's edges, the open hour, touched hours)
    -- from the deliveries, summed the same way (email.raw_delivery_rollups). Counts are
    -- exactly what the rows say; latency percentiles come from the buckets' histogram.
    IF p_since IS NULL THEN
        RAISE EXCEPTION 'since is required' USING ERRCODE = '22023', COLUMN = 'since';
    END IF;
    IF p_until <= p_since THEN
        RAISE EXCEPTION 'until must be later than since' USING ERRCODE = '22023', COLUMN = 'until';
    END IF;
    IF p_bucket NOT IN ('hour', 'day') THEN
        RAISE EXCEPTION 'bucket must be hour or day, not %', p_bucket
            USING ERRCODE = '22023', COLUMN = 'bucket';
    END IF;
    IF p_top_errors IS NULL OR p_top_errors NOT BETWEEN 0 AND 20 THEN
        RAISE EXCEPTION 'top_errors must be between 0 and 20, not %', p_top_errors
            USING ERRCODE = '22023', COLUMN = 'top_errors';
    END IF;
    SELECT s.rolled_until, s.xact_watermark INTO rolled_until, watermark
    FROM email.delivery_rollup_state AS s;
    IF isfinite(p_since) AND rolled_until > '-infinity' THEN
        low := date_bin(interval '1 hour', p_since, TIMESTAMPTZ '2000-01-01 00:00:00+00');
        IF low < p_since THEN
            low := low + interval '1 hour';
        END IF;
        high := rolled_until;
        IF p_until IS NOT NULL AND isfinite(p_until) THEN
            high := least(high, date_bin(interval '1 hour', p_until, TIMESTAMPTZ '2000-01-01 00:00:00+00'));
        END IF;
    END IF;
    IF low IS NULL OR high <= low THEN
        -- No whole rolled hour in the window: every row is read.
        low := coalesce(p_until, 'infinity');
        high := low;
    END IF;
    RETURN QUERY
    WITH touched AS MATERIALIZED (
        SELECT d.workflow,
               date_bin(interval '1 hour', d.queued_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS hour
        FROM email.delivery_events AS e
        JOIN email.deliveries AS d ON d.delivery_id = e.delivery_id
        WHERE high > low AND e.xact_id >= watermark
          AND d.queued_at >= low AND d.queued_at < high
          AND (p_workflow IS NULL OR d.workflow = p_workflow)
        UNION
        SELECT x.workflow, x.hour FROM email.delivery_rollup_deletions AS x
        WHERE high > low AND x.hour >= low AND x.hour < high
          AND (p_workflow IS NULL OR x.workflow = p_workflow)
    ), units AS (
        SELECT raw.* FROM email.raw_delivery_rollups(p_since, low, p_workflow) AS raw
        UNION ALL
        SELECT raw.* FROM email.raw_delivery_rollups(high, coalesce(p_until, 'infinity'), p_workflow) AS raw
        WHERE high > low
        UNION ALL
        SELECT raw.* FROM touched AS t
        CROSS JOIN LATERAL email.raw_delivery_rollups(
            t.hour, t.hour + interval '1 hour', t.workflow) AS raw
        UNION ALL
        SELECT r.hour, r.workflow, r.status, r.error_code, r.latency_bucket, r.deliveries,
               r.attempts, r.retried
        FROM email.delivery_rollups AS r
        WHERE r.hour >= low AND r.hour < high
          AND (p_workflow IS NULL OR r.workflow = p_workflow)
          AND NOT EXISTS (SELECT FROM touched AS t WHERE t.hour = r.hour AND t.workflow = r.workflow)
    ), bucketed AS (
        -- date_bin of a NULL interval is NULL: one group per workflow.
        SELECT u.workflow,
               date_bin(('1 ' || p_bucket)::interval, u.hour,
                        TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
               u.status, u.error_code, u.latency_bucket, u.deliveries, u.attempts, u.retried
        FROM units AS u
    ), ranked AS (
        SELECT b.workflow, b.bucket, b.error_code AS code, sum(b.deliveries)::bigint AS n,
               row_number() OVER (PARTITION BY b.workflow, b.bucket
                                  ORDER BY sum(b.deliveries) DESC, b.error_code) AS rank
        FROM bucketed AS b
        WHERE b.error_code IS NOT NULL
        GROUP BY b.workflow, b.bucket, b.error_code
    ), errors AS (
        SELECT ranked.workflow, ranked.bucket,
               jsonb_agg(jsonb_build_object('code', ranked.code, 'count', ranked.n)
                         ORDER BY ranked.n DESC, ranked.code) AS top_error_codes
        FROM ranked
        WHERE ranked.rank <= p_top_errors
        GROUP BY ranked.workflow, ranked.bucket
    ), latency AS (
        SELECT h.workflow, h.bucket,
               array_agg(h.latency_bucket ORDER BY h.latency_bucket) AS buckets,
               array_agg(h.n ORDER BY h.latency_bucket) AS counts
        FROM (SELECT b.workflow, b.bucket, b.latency_bucket, sum(b.deliveries)::bigint AS n
              FROM bucketed AS b
              WHERE b.latency_bucket IS NOT NULL
              GROUP BY b.workflow, b.bucket, b.latency_bucket) AS h
        GROUP BY h.workflow, h.bucket
    ), s AS (
        SELECT b.workflow, b.bucket,
               sum(b.deliveries)::bigint AS total,
               coalesce(sum(b.deliveries) FILTER (WHERE b.status = 'sent'), 0)::bigint AS sent,
               coalesce(sum(b.deliveries) FILTER (WHERE b.status = 'failed'), 0)::bigint AS failed,
               coalesce(sum(b.deliveries) FILTER (WHERE b.status = 'dead_letter'), 0)::bigint AS dead_letter,
               coalesce(sum(b.deliveries) FILTER (WHERE b.status IN ('queued', 'in_progress', 'retrying')), 0)::bigint AS in_flight,
               sum(b.retried) AS retried,
               sum(b.attempts) AS attempts
        FROM bucketed AS b
        GROUP BY b.workflow, b.bucket
    )
    SELECT s.workflow, s.bucket, s.total, s.sent, s.failed, s.dead_letter, s.in_flight,
           s.sent::double precision / nullif(s.sent + s.failed + s.dead_letter, 0),
           s.retried::double precision / s.total,
           (s.attempts / s.total)::double precision,
           email.latency_percentile(l.buckets, l.counts, 0.5),
           email.latency_percentile(l.buckets, l.counts, 0.95),
           email.latency_percentile(l.buckets, l.counts, 0.99),
           coalesce(e.top_error_codes, '[]'::jsonb)
    FROM s
    LEFT JOIN errors AS e
        ON e.workflow = s.workflow AND e.bucket IS NOT DISTINCT FROM s.bucket
    LEFT JOIN latency AS l
        ON l.workflow = s.workflow AND l.bucket IS NOT DISTINCT FROM s.bucket
    ORDER BY s.workflow, s.bucket;
END
$$;;

ALTER TABLE email.delivery_rollup_state DROP COLUMN days_until;

DROP TABLE email.delivery_rollups_daily;
