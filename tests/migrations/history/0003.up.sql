CREATE INDEX ix_deliveries_queued_at ON email.deliveries (queued_at);

CREATE INDEX ix_deliveries_recipient_queued_at_delivery_id ON email.deliveries (recipient, queued_at, delivery_id);

CREATE INDEX ix_deliveries_status_queued_at ON email.deliveries (status, queued_at);

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
LEFT JOIN errors e USING (workflow);;

DO $$
BEGIN
    REVOKE ALL ON TABLE email.delivery_stats_24h FROM PUBLIC;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
        REVOKE ALL ON TABLE email.delivery_stats_24h FROM "anon";
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        REVOKE ALL ON TABLE email.delivery_stats_24h FROM "authenticated";
    END IF;
END
$$;

GRANT SELECT ON TABLE email.delivery_stats_24h TO "email_reader";

CREATE OR REPLACE VIEW email.delivery_stats_hourly WITH (security_invoker = true) AS
WITH base AS (
    SELECT workflow, date_bin(interval '1 hour', queued_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket, status, attempts, last_error_code,
           EXTRACT(EPOCH FROM sent_at - queued_at)::double precision AS latency_s
    FROM email.deliveries
    WHERE queued_at >= now() - interval '7 days'
), ranked AS (
    SELECT workflow, bucket, last_error_code AS code, count(*) AS n,
           row_number() OVER (PARTITION BY workflow, bucket ORDER BY count(*) DESC, last_error_code) AS rank
    FROM base
    WHERE last_error_code IS NOT NULL
    GROUP BY workflow, bucket, last_error_code
), errors AS (
    SELECT workflow, bucket,
           jsonb_agg(jsonb_build_object('code', code, 'count', n) ORDER BY n DESC, code)
               AS top_error_codes
    FROM ranked
    WHERE rank <= 3
    GROUP BY workflow, bucket
), s AS (
    SELECT workflow, bucket,
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
    GROUP BY workflow, bucket
)
SELECT s.workflow, s.bucket, s.total, s.sent, s.failed, s.dead_letter, s.in_flight,
       s.sent::double precision / nullif(s.sent + s.failed + s.dead_letter, 0) AS success_rate,
       s.retried::double precision / s.total AS retry_rate,
       s.mean_attempts, s.latency_p50_s, s.latency_p95_s, s.latency_p99_s,
       coalesce(e.top_error_codes, '[]'::jsonb) AS top_error_codes
FROM s
LEFT JOIN errors e USING (workflow, bucket);;

DO $$
BEGIN
    REVOKE ALL ON TABLE email.delivery_stats_hourly FROM PUBLIC;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
        REVOKE ALL ON TABLE email.delivery_stats_hourly FROM "anon";
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        REVOKE ALL ON TABLE email.delivery_stats_hourly FROM "authenticated";
    END IF;
END
$$;

GRANT SELECT ON TABLE email.delivery_stats_hourly TO "email_reader";

CREATE OR REPLACE VIEW email.delivery_stats_daily WITH (security_invoker = true) AS
WITH base AS (
    SELECT workflow, date_bin(interval '1 day', queued_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket, status, attempts, last_error_code,
           EXTRACT(EPOCH FROM sent_at - queued_at)::double precision AS latency_s
    FROM email.deliveries
    WHERE queued_at >= now() - interval '90 days'
), ranked AS (
    SELECT workflow, bucket, last_error_code AS code, count(*) AS n,
           row_number() OVER (PARTITION BY workflow, bucket ORDER BY count(*) DESC, last_error_code) AS rank
    FROM base
    WHERE last_error_code IS NOT NULL
    GROUP BY workflow, bucket, last_error_code
), errors AS (
    SELECT workflow, bucket,
           jsonb_agg(jsonb_build_object('code', code, 'count', n) ORDER BY n DESC, code)
               AS top_error_codes
    FROM ranked
    WHERE rank <= 3
    GROUP BY workflow, bucket
), s AS (
    SELECT workflow, bucket,
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
    GROUP BY workflow, bucket
)
SELECT s.workflow, s.bucket, s.total, s.sent, s.failed, s.dead_letter, s.in_flight,
       s.sent::double precision / nullif(s.sent + s.failed + s.dead_letter, 0) AS success_rate,
       s.retried::double precision / s.total AS retry_rate,
       s.mean_attempts, s.latency_p50_s, s.latency_p95_s, s.latency_p99_s,
       coalesce(e.top_error_codes, '[]'::jsonb) AS top_error_codes
FROM s
LEFT JOIN errors e USING (workflow, bucket);;

DO $$
BEGIN
    REVOKE ALL ON TABLE email.delivery_stats_daily FROM PUBLIC;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
        REVOKE ALL ON TABLE email.delivery_stats_daily FROM "anon";
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        REVOKE ALL ON TABLE email.delivery_stats_daily FROM "authenticated";
    END IF;
END
$$;

GRANT SELECT ON TABLE email.delivery_stats_daily TO "email_reader";

CREATE OR REPLACE VIEW email.pending_deliveries WITH (security_invoker = true) AS
SELECT delivery_id, workflow, recipient, status, attempts, last_error_code,
       queued_at, last_attempted_at, updated_at, now() - updated_at AS idle_for
FROM email.deliveries
WHERE status IN ('queued', 'in_progress', 'retrying');;

DO $$
BEGIN
    REVOKE ALL ON TABLE email.pending_deliveries FROM PUBLIC;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
        REVOKE ALL ON TABLE email.pending_deliveries FROM "anon";
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        REVOKE ALL ON TABLE email.pending_deliveries FROM "authenticated";
    END IF;
END
$$;

GRANT SELECT ON TABLE email.pending_deliveries TO "email_reader";
