CREATE OR REPLACE FUNCTION email.raw_provider_rollups(p_from timestamp with time zone, p_until timestamp with time zone, p_provider text DEFAULT NULL::text, p_workflow text DEFAULT NULL::text)
RETURNS TABLE(hour timestamp with time zone, provider text, workflow text, attempts bigint, accepted bigint, failed bigint, delivered bigint, deferred bigint, bounced bigint, hard_bounced bigint, complained bigint, rejected bigint, send_buckets smallint[], send_counts bigint[], delivered_buckets smallint[], delivered_counts bigint[])
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- The attempts reported with a provider in [p_from, p_until) (of one provider and
    -- workflow, or all), summed as email.provider_rollups stores them: per UTC hour,
    -- provider and workflow, the counts email.provider_metrics reports (outcomes: the
    -- current one of each accepted attempt's delivery) and two latency histograms, the send
    -- duration and the time from sent to delivered. The one definition of what a provider
    -- rollup row holds: email.refresh_provider_rollups stores it, email.provider_metrics
    -- reads it for the hours the rollups do not cover.
    WITH timed AS MATERIALIZED (
        -- Each level turns one latency (named latency_s, as the bucket rule reads it) into
        -- its bucket: the send duration, then the time from sent to delivered.
        SELECT v.hour, v.provider, v.workflow, v.result, v.outcome, v.permanent,
               v.delivered_at, v.send_bucket, CASE WHEN latency_s IS NULL THEN NULL WHEN latency_s <= power(10::double precision, (-61)::double precision / 20) THEN -61 WHEN latency_s > 1e6 THEN 121 ELSE ceil(20 * log(latency_s)) END::smallint AS delivered_bucket
        FROM (
            SELECT u.hour, u.provider, u.workflow, u.result, u.outcome, u.permanent,
                   u.delivered_at, CASE WHEN latency_s IS NULL THEN NULL WHEN latency_s <= power(10::double precision, (-61)::double precision / 20) THEN -61 WHEN latency_s > 1e6 THEN 121 ELSE ceil(20 * log(latency_s)) END::smallint AS send_bucket,
                   EXTRACT(EPOCH FROM u.delivered_at - u.reported_at)::double precision
                       AS delivered_s
            FROM (
                SELECT date_bin(interval '1 hour', a.reported_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS hour,
                       a.provider, a.workflow, a.result, a.reported_at, o.outcome,
                       o.permanent, o.delivered_at,
                       a.duration_ms::double precision / 1000 AS latency_s
                FROM email.delivery_attempts AS a
                LEFT JOIN email.delivery_outcomes AS o
                       ON a.result = 'sent' AND o.delivery_id = a.delivery_id
                WHERE a.reported_at >= p_from AND a.reported_at < p_until
                  AND a.provider IS NOT NULL
                  AND (p_provider IS NULL OR a.provider = p_provider)
                  AND (p_workflow IS NULL OR a.workflow = p_workflow)
            ) AS u
        ) AS w
        CROSS JOIN LATERAL (SELECT w.hour, w.provider, w.workflow, w.result, w.outcome,
                                   w.permanent, w.delivered_at, w.send_bucket,
                                   w.delivered_s AS latency_s) AS v
    ), counts AS (
        SELECT t.hour, t.provider, t.workflow,
               count(*) AS attempts,
               count(*) FILTER (WHERE t.result = 'sent') AS accepted,
               count(*) FILTER (WHERE t.result = 'failed') AS failed,
               count(*) FILTER (WHERE t.delivered_at IS NOT NULL) AS delivered,
               count(*) FILTER (WHERE t.outcome = 'deferred') AS deferred,
               count(*) FILTER (WHERE t.outcome = 'bounced') AS bounced,
               count(*) FILTER (WHERE t.outcome = 'bounced' AND t.permanent) AS hard_bounced,
               count(*) FILTER (WHERE t.outcome = 'complained') AS complained,
               count(*) FILTER (WHERE t.outcome = 'rejected') AS rejected
        FROM timed AS t
        GROUP BY t.hour, t.provider, t.workflow
    ), histograms AS (
        -- Both latencies of each attempt, by measure: one aggregate builds both histograms.
        SELECT h.hour, h.provider, h.workflow, h.measure,
               array_agg(h.bucket ORDER BY h.bucket) AS buckets,
               array_agg(h.n ORDER BY h.bucket) AS counts
        FROM (SELECT t.hour, t.provider, t.workflow, x.measure, x.bucket, count(*) AS n
              FROM timed AS t
              CROSS JOIN LATERAL (VALUES ('send', t.send_bucket),
                                         ('delivered', t.delivered_bucket)) AS x(measure, bucket)
              WHERE x.bucket IS NOT NULL
              GROUP BY t.hour, t.provider, t.workflow, x.measure, x.bucket) AS h
        GROUP BY h.hour, h.provider, h.workflow, h.measure
    )
    SELECT c.hour, c.provider, c.workflow, c.attempts, c.accepted, c.failed, c.delivered,
           c.deferred, c.bounced, c.hard_bounced, c.complained, c.rejected,
           coalesce(s.buckets, '{}'), coalesce(s.counts, '{}'),
           coalesce(d.buckets, '{}'), coalesce(d.counts, '{}')
    FROM counts AS c
    LEFT JOIN histograms AS s
           ON s.hour = c.hour AND s.provider = c.provider AND s.workflow = c.workflow
          AND s.measure = 'send'
    LEFT JOIN histograms AS d
           ON d.hour = c.hour AND d.provider = c.provider AND d.workflow = c.workflow
          AND d.measure = 'delivered'
$$;
