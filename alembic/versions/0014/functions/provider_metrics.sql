CREATE OR REPLACE FUNCTION email.provider_metrics(p_since timestamp with time zone, p_until timestamp with time zone DEFAULT now())
RETURNS TABLE(provider text, workflow text, attempts bigint, accepted bigint, failed bigint, delivered bigint, deferred bigint, bounced bigint, hard_bounced bigint, complained bigint, rejected bigint, delivery_rate double precision, bounce_rate double precision, complaint_rate double precision, deferral_rate double precision, failure_rate double precision, p50_send_ms double precision, p95_send_ms double precision, p50_sent_to_delivered_s double precision, p95_sent_to_delivered_s double precision)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
#variable_conflict use_column
DECLARE
    rolled_until timestamp with time zone;
    watermark bigint;
    -- [low, high): the whole hours inside the window that the rollups may answer.
    low timestamp with time zone;
    high timestamp with time zone;
    -- [day_low, day_high): the whole days inside [low, high) the daily tier answers.
    day_low timestamp with time zone;
    day_high timestamp with time zone;
BEGIN
    -- Per provider and workflow, the attempts reported with a provider in [since, until)
    -- (email.delivery_attempts, by reported_at): how many it accepted (sent) or failed, what
    -- became of the accepted ones (their current outcome, email.delivery_outcomes), the send
    -- duration's percentiles and the time from sent to delivered. Rates are shares of the
    -- accepted attempts (failure_rate: of all attempts); NULL when there are none. What a
    -- worker orders its providers by (tracker.provider_health) and the dashboards show;
    -- SECURITY INVOKER: the caller's own SELECT on the tables decides.
    -- Whole days come from email.provider_rollups_daily and the other whole hours from
    -- email.provider_rollups, unless a transaction the last refresh did not see changed
    -- them (then that day's hours, and the changed hour from the attempts); the rest (the
    -- window's edges, the open hour) from the attempts, summed the same way
    -- (email.raw_provider_rollups). Counts are exact; percentiles come from the latency
    -- histograms (within rules.LATENCY_RELATIVE_ERROR). No JIT, as for delivery_stats: the
    -- raw edges' plans are costed past jit_above_cost at 10 M and run in milliseconds.
    IF p_since IS NULL THEN
        RAISE EXCEPTION 'since is required' USING ERRCODE = '22023', COLUMN = 'since';
    END IF;
    IF p_until IS NULL THEN
        RAISE EXCEPTION 'until is required' USING ERRCODE = '22023', COLUMN = 'until';
    END IF;
    SELECT s.rolled_until, s.xact_watermark INTO rolled_until, watermark
    FROM email.provider_rollup_state AS s;
    IF isfinite(p_since) AND rolled_until > '-infinity' THEN
        low := date_bin(interval '1 hour', p_since, TIMESTAMPTZ '2000-01-01 00:00:00+00');
        IF low < p_since THEN
            low := low + interval '1 hour';
        END IF;
        high := rolled_until;
        IF isfinite(p_until) THEN
            high := least(high, date_bin(interval '1 hour', p_until, TIMESTAMPTZ '2000-01-01 00:00:00+00'));
        END IF;
    END IF;
    IF low IS NULL OR high <= low THEN
        -- No whole rolled hour in the window: every attempt is read.
        low := p_until;
        high := low;
    END IF;
    day_low := date_bin(interval '1 day', low, TIMESTAMPTZ '2000-01-01 00:00:00+00');
    IF day_low < low THEN
        day_low := day_low + interval '1 day';
    END IF;
    day_high := date_bin(interval '1 day', high, TIMESTAMPTZ '2000-01-01 00:00:00+00');
    IF day_high <= day_low THEN
        -- No whole day in [low, high): its hours are all read hourly.
        day_low := high;
        day_high := high;
    END IF;
    RETURN QUERY
    WITH touched AS MATERIALIZED (
        SELECT date_bin(interval '1 hour', a.reported_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS hour, a.provider, a.workflow
        FROM email.delivery_attempts AS a
        WHERE high > low AND a.xact_id >= watermark
          AND a.reported_at >= low AND a.reported_at < high AND a.provider IS NOT NULL
        UNION
        SELECT date_bin(interval '1 hour', a.reported_at, TIMESTAMPTZ '2000-01-01 00:00:00+00'), a.provider, a.workflow
        FROM email.delivery_outcomes AS o
        JOIN email.delivery_attempts AS a
          ON a.delivery_id = o.delivery_id AND a.result = 'sent'
        WHERE high > low AND o.xact_id >= watermark
          AND a.reported_at >= low AND a.reported_at < high AND a.provider IS NOT NULL
        UNION
        SELECT x.hour, x.provider, x.workflow FROM email.provider_rollup_deletions AS x
        WHERE high > low AND x.hour >= low AND x.hour < high
    ), touched_days AS MATERIALIZED (
        SELECT DISTINCT date_bin(interval '1 day', t.hour, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS day, t.provider, t.workflow
        FROM touched AS t
        WHERE t.hour >= day_low AND t.hour < day_high
    ), units AS (
        SELECT raw.* FROM email.raw_provider_rollups(p_since, low) AS raw
        UNION ALL
        SELECT raw.* FROM email.raw_provider_rollups(high, p_until) AS raw
        WHERE high > low
        UNION ALL
        SELECT raw.* FROM touched AS t
        CROSS JOIN LATERAL email.raw_provider_rollups(
            t.hour, t.hour + interval '1 hour', t.provider, t.workflow) AS raw
        UNION ALL
        -- The whole hours outside the whole days, and the hours of a day that changed.
        SELECT r.* FROM email.provider_rollups AS r
        WHERE ((r.hour >= low AND r.hour < day_low) OR (r.hour >= day_high AND r.hour < high))
          AND NOT EXISTS (SELECT FROM touched AS t
                          WHERE t.hour = r.hour AND t.provider = r.provider
                            AND t.workflow = r.workflow)
        UNION ALL
        SELECT r.* FROM touched_days AS c
        JOIN email.provider_rollups AS r
          ON r.hour >= c.day AND r.hour < c.day + interval '1 day'
         AND r.provider = c.provider AND r.workflow = c.workflow
        WHERE NOT EXISTS (SELECT FROM touched AS t
                          WHERE t.hour = r.hour AND t.provider = r.provider
                            AND t.workflow = r.workflow)
        UNION ALL
        SELECT y.* FROM email.provider_rollups_daily AS y
        WHERE y.day >= day_low AND y.day < day_high
          AND NOT EXISTS (SELECT FROM touched_days AS c
                          WHERE c.day = y.day AND c.provider = y.provider
                            AND c.workflow = y.workflow)
    ), totals AS (
        SELECT m.* FROM email.merge_provider_rollups(
            (SELECT array_agg(ROW(u.*)::email.provider_rollups) FROM units AS u), NULL) AS m
    )
    SELECT t.provider, t.workflow, t.attempts, t.accepted, t.failed, t.delivered, t.deferred,
           t.bounced, t.hard_bounced, t.complained, t.rejected,
           t.delivered::double precision / nullif(t.accepted, 0),
           t.bounced::double precision / nullif(t.accepted, 0),
           t.complained::double precision / nullif(t.accepted, 0),
           t.deferred::double precision / nullif(t.accepted, 0),
           t.failed::double precision / t.attempts,
           1000 * email.latency_percentile(t.send_buckets, t.send_counts, 0.5),
           1000 * email.latency_percentile(t.send_buckets, t.send_counts, 0.95),
           email.latency_percentile(t.delivered_buckets, t.delivered_counts, 0.5),
           email.latency_percentile(t.delivered_buckets, t.delivered_counts, 0.95)
    FROM totals AS t
    ORDER BY t.provider, t.workflow;
END
$$;
