COMMIT;

SET lock_timeout = '5s';

SET statement_timeout = '6h';

CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_deliveries_queued_at ON email.deliveries (queued_at);

CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_deliveries_status_queued_at ON email.deliveries (status, queued_at);

RESET statement_timeout;

RESET lock_timeout;

BEGIN;

SET LOCAL lock_timeout = '5s';

DROP POLICY delivery_rollups_email_reader_select ON email.delivery_rollups;

DROP POLICY delivery_rollup_state_email_reader_select ON email.delivery_rollup_state;

DROP POLICY delivery_rollup_deletions_email_reader_select ON email.delivery_rollup_deletions;

DROP FUNCTION email.refresh_delivery_rollups();

DROP FUNCTION email.raw_delivery_rollups(p_from timestamp with time zone, p_until timestamp with time zone, p_workflow text);

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
    RETURN NULL;
END
$$;;

DROP FUNCTION email.mark_deliveries_sent(p_delivery_ids text[], p_attempts integer[], p_payloads jsonb[]);

DROP FUNCTION email.mark_deliveries_failed(p_delivery_ids text[], p_attempts integer[], p_error_codes text[], p_error_messages text[], p_retryables boolean[], p_max_attempts integer[], p_payloads jsonb[]);

DROP FUNCTION email.maintain(p_ahead interval, p_interval interval);

DROP FUNCTION email.latency_percentile(p_buckets smallint[], p_counts bigint[], p_fraction double precision);

CREATE OR REPLACE FUNCTION email.delivery_stats(p_since timestamp with time zone, p_until timestamp with time zone DEFAULT NULL::timestamp with time zone, p_bucket text DEFAULT NULL::text, p_workflow text DEFAULT NULL::text, p_top_errors integer DEFAULT 3)
RETURNS TABLE(workflow text, bucket timestamp with time zone, total bigint, sent bigint, failed bigint, dead_letter bigint, in_flight bigint, success_rate double precision, retry_rate double precision, mean_attempts double precision, latency_p50_s double precision, latency_p95_s double precision, latency_p99_s double precision, top_error_codes jsonb)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    -- The one definition of the per-workflow statistics: the dashboard views and
    -- email_delivery.queries.workflow_stats both read it. Deliveries queued in
    -- [p_since, p_until), counted by their current status, per workflow and, with p_bucket
    -- ('hour' or 'day'), per UTC bucket (NULL otherwise).
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
    RETURN QUERY
    WITH base AS (
        SELECT d.workflow,
               -- date_bin of a NULL interval is NULL: one group per workflow.
               date_bin(('1 ' || p_bucket)::interval, d.queued_at,
                        TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
               d.status, d.attempts, d.last_error_code,
               EXTRACT(EPOCH FROM d.sent_at - d.queued_at)::double precision AS latency_s
        FROM email.deliveries AS d
        WHERE d.queued_at >= p_since AND d.queued_at < coalesce(p_until, 'infinity')
          AND (p_workflow IS NULL OR d.workflow = p_workflow)
    ), ranked AS (
        SELECT base.workflow, base.bucket, base.last_error_code AS code, count(*) AS n,
               row_number() OVER (PARTITION BY base.workflow, base.bucket
                                  ORDER BY count(*) DESC, base.last_error_code) AS rank
        FROM base
        WHERE base.last_error_code IS NOT NULL
        GROUP BY base.workflow, base.bucket, base.last_error_code
    ), errors AS (
        SELECT ranked.workflow, ranked.bucket,
               jsonb_agg(jsonb_build_object('code', ranked.code, 'count', ranked.n)
                         ORDER BY ranked.n DESC, ranked.code) AS top_error_codes
        FROM ranked
        WHERE ranked.rank <= p_top_errors
        GROUP BY ranked.workflow, ranked.bucket
    ), s AS (
        SELECT base.workflow, base.bucket,
               count(*) AS total,
               count(*) FILTER (WHERE base.status = 'sent') AS sent,
               count(*) FILTER (WHERE base.status = 'failed') AS failed,
               count(*) FILTER (WHERE base.status = 'dead_letter') AS dead_letter,
               count(*) FILTER (WHERE base.status IN ('queued', 'in_progress', 'retrying')) AS in_flight,
               count(*) FILTER (WHERE base.attempts > 1) AS retried,
               avg(base.attempts)::double precision AS mean_attempts,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY base.latency_s) AS latency_p50_s,
               percentile_cont(0.95) WITHIN GROUP (ORDER BY base.latency_s) AS latency_p95_s,
               percentile_cont(0.99) WITHIN GROUP (ORDER BY base.latency_s) AS latency_p99_s
        FROM base
        GROUP BY base.workflow, base.bucket
    )
    SELECT s.workflow, s.bucket, s.total, s.sent, s.failed, s.dead_letter, s.in_flight,
           s.sent::double precision / nullif(s.sent + s.failed + s.dead_letter, 0),
           s.retried::double precision / s.total,
           s.mean_attempts, s.latency_p50_s, s.latency_p95_s, s.latency_p99_s,
           coalesce(e.top_error_codes, '[]'::jsonb)
    FROM s
    LEFT JOIN errors AS e
        ON e.workflow = s.workflow AND e.bucket IS NOT DISTINCT FROM s.bucket
    ORDER BY s.workflow, s.bucket;
END
$$;;

DROP FUNCTION email.claim_deliveries(p_delivery_ids text[], p_lease interval);

DROP TABLE email.delivery_rollup_deletions;

DROP TABLE email.delivery_rollup_state;

DROP TABLE email.delivery_rollups;

COMMIT;

SET lock_timeout = '5s';

DROP INDEX CONCURRENTLY IF EXISTS email.ix_deliveries_finished;

RESET lock_timeout;

BEGIN;
