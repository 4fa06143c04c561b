CREATE OR REPLACE FUNCTION email.merge_provider_rollups(p_units email.provider_rollups[], p_span interval)
RETURNS SETOF email.provider_rollups
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- Provider rollup rows summed per provider, workflow and p_span (each unit's hour binned
    -- to it; a NULL span: one row per provider and workflow, its hour NULL): the counts
    -- added, each latency histogram merged bucket by bucket. How the refresh sums hours into
    -- days and email.provider_metrics sums a window.
    WITH units AS (
        SELECT date_bin(p_span, u.hour, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS span, u.*
        FROM unnest(p_units) AS u
    ), counts AS (
        SELECT u.span, u.provider, u.workflow,
               sum(u.attempts)::bigint AS attempts, sum(u.accepted)::bigint AS accepted,
               sum(u.failed)::bigint AS failed, sum(u.delivered)::bigint AS delivered,
               sum(u.deferred)::bigint AS deferred, sum(u.bounced)::bigint AS bounced,
               sum(u.hard_bounced)::bigint AS hard_bounced,
               sum(u.complained)::bigint AS complained, sum(u.rejected)::bigint AS rejected
        FROM units AS u
        GROUP BY u.span, u.provider, u.workflow
    ), histograms AS (
        SELECT h.span, h.provider, h.workflow, h.measure,
               array_agg(h.bucket ORDER BY h.bucket) AS buckets,
               array_agg(h.n ORDER BY h.bucket) AS counts
        FROM (SELECT u.span, u.provider, u.workflow, x.measure, x.bucket, sum(x.n)::bigint AS n
              FROM units AS u
              CROSS JOIN LATERAL (
                  SELECT 'send', b.bucket, b.n
                  FROM unnest(u.send_buckets, u.send_counts) AS b(bucket, n)
                  UNION ALL
                  SELECT 'delivered', b.bucket, b.n
                  FROM unnest(u.delivered_buckets, u.delivered_counts) AS b(bucket, n)
              ) AS x(measure, bucket, n)
              GROUP BY u.span, u.provider, u.workflow, x.measure, x.bucket) AS h
        GROUP BY h.span, h.provider, h.workflow, h.measure
    )
    SELECT c.span, c.provider, c.workflow, c.attempts, c.accepted, c.failed, c.delivered,
           c.deferred, c.bounced, c.hard_bounced, c.complained, c.rejected,
           coalesce(s.buckets, '{}'), coalesce(s.counts, '{}'),
           coalesce(d.buckets, '{}'), coalesce(d.counts, '{}')
    FROM counts AS c
    LEFT JOIN histograms AS s
           ON s.span IS NOT DISTINCT FROM c.span AND s.provider = c.provider
          AND s.workflow = c.workflow AND s.measure = 'send'
    LEFT JOIN histograms AS d
           ON d.span IS NOT DISTINCT FROM c.span AND d.provider = c.provider
          AND d.workflow = c.workflow AND d.measure = 'delivered'
$$;
