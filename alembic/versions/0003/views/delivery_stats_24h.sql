CREATE OR REPLACE VIEW email.delivery_stats_24h WITH (security_invoker = true) AS
WITH base AS (
    SELECT workflow, NULL::timestamptz AS bucket, status, attempts, last_error_code,
           EXTRACT(EPOCH FROM sent_at - queued_at)::double precision AS latency_s
    FROM email.deliveries
    WHERE queued_at >= now() - interval '24 hours'
), ranked AS (
    SELECT workflow, last_error_code AS code, count(*) AS n,
           row_number() OVER (PARTITION BY workflow ORDER BY count(*) DESC, last_error_code) AS rank
    FROM base
    WHERE last_error_code IS NOT NULL
    GROUP BY workflow, last_error_code
), errors AS (
    SELECT workflow,
           jsonb_agg(jsonb_build_object('code', code, 'count', n) ORDER BY n DESC, code)
               AS top_error_codes
    FROM ranked
    WHERE rank <= 3
    GROUP BY workflow
), s AS (
    SELECT workflow,
           count(*) AS total,
           count(*) FILTER (WHERE status = 'sent') AS sent,
           count(*) FILTER (WHERE status = 'failed') AS failed,
           count(*) FILTER (WHERE status = 'dead_letter') AS dead_letter,
           count(*) FILTER (WHERE status IN ('queued', 'in_progress', 'retrying')) AS in_flight,
           count(*) FILTER (WHERE attempts > 1) AS retried,
           avg(attempts)::double precision AS mean_attempts,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_s) AS latency_p50_s,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_s) AS latency_p95_s,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_s) AS latency_p99_s
    FROM base
    GROUP BY workflow
)
SELECT s.workflow, s.total, s.sent, s.failed, s.dead_letter, s.in_flight,
       s.sent::double precision / nullif(s.sent + s.failed + s.dead_letter, 0) AS success_rate,
       s.retried::double precision / s.total AS retry_rate,
       s.mean_attempts, s.latency_p50_s, s.latency_p95_s, s.latency_p99_s,
       coalesce(e.top_error_codes, '[]'::jsonb) AS top_error_codes
FROM s
LEFT JOIN errors e USING (workflow);
