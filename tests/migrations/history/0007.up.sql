COMMIT;

SET lock_timeout = '5s';

SET statement_timeout = '6h';

CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_deliveries_finished ON email.deliveries (status, queued_at, delivery_id) WHERE status NOT IN ('queued', 'in_progress', 'retrying');

RESET statement_timeout;

RESET lock_timeout;

BEGIN;

SET LOCAL lock_timeout = '5s';

SET LOCAL statement_timeout = '60s';

CREATE TABLE email.delivery_rollups (
    id BIGINT GENERATED ALWAYS AS IDENTITY, 
    hour TIMESTAMP WITH TIME ZONE NOT NULL, 
    workflow TEXT NOT NULL, 
    status email.delivery_status NOT NULL, 
    error_code TEXT, 
    latency_bucket SMALLINT, 
    deliveries BIGINT NOT NULL, 
    attempts BIGINT NOT NULL, 
    retried BIGINT NOT NULL, 
    CONSTRAINT pk_delivery_rollups PRIMARY KEY (id), 
    CONSTRAINT ck_delivery_rollups_counts CHECK (deliveries > 0 AND attempts >= 0 AND retried >= 0), 
    CONSTRAINT uq_delivery_rollups_key UNIQUE NULLS NOT DISTINCT (hour, workflow, status, error_code, latency_bucket)
);

CREATE TABLE email.delivery_rollup_state (
    singleton BOOLEAN DEFAULT true NOT NULL, 
    rolled_until TIMESTAMP WITH TIME ZONE DEFAULT '-infinity' NOT NULL, 
    xact_watermark BIGINT DEFAULT 0 NOT NULL, 
    refreshed_at TIMESTAMP WITH TIME ZONE, 
    CONSTRAINT pk_delivery_rollup_state PRIMARY KEY (singleton), 
    CONSTRAINT ck_delivery_rollup_state_one_row CHECK (singleton)
);

INSERT INTO email.delivery_rollup_state DEFAULT VALUES;

CREATE TABLE email.delivery_rollup_deletions (
    xact_id BIGINT DEFAULT (pg_current_xact_id())::text::bigint NOT NULL, 
    hour TIMESTAMP WITH TIME ZONE NOT NULL, 
    workflow TEXT NOT NULL, 
    CONSTRAINT pk_delivery_rollup_deletions PRIMARY KEY (xact_id, hour, workflow)
);

DO $$
BEGIN
    REVOKE ALL ON TABLE email.delivery_rollups FROM PUBLIC;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
        REVOKE ALL ON TABLE email.delivery_rollups FROM "anon";
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        REVOKE ALL ON TABLE email.delivery_rollups FROM "authenticated";
    END IF;
END
$$;

GRANT SELECT ON TABLE email.delivery_rollups TO "email_reader";

ALTER TABLE email.delivery_rollups ENABLE ROW LEVEL SECURITY;

DO $$
BEGIN
    REVOKE ALL ON TABLE email.delivery_rollup_state FROM PUBLIC;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
        REVOKE ALL ON TABLE email.delivery_rollup_state FROM "anon";
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        REVOKE ALL ON TABLE email.delivery_rollup_state FROM "authenticated";
    END IF;
END
$$;

GRANT SELECT ON TABLE email.delivery_rollup_state TO "email_reader";

ALTER TABLE email.delivery_rollup_state ENABLE ROW LEVEL SECURITY;

DO $$
BEGIN
    REVOKE ALL ON TABLE email.delivery_rollup_deletions FROM PUBLIC;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
        REVOKE ALL ON TABLE email.delivery_rollup_deletions FROM "anon";
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        REVOKE ALL ON TABLE email.delivery_rollup_deletions FROM "authenticated";
    END IF;
END
$$;

GRANT SELECT ON TABLE email.delivery_rollup_deletions TO "email_reader";

ALTER TABLE email.delivery_rollup_deletions ENABLE ROW LEVEL SECURITY;

CREATE OR REPLACE FUNCTION email.claim_deliveries(p_delivery_ids text[], p_lease interval)
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, changed boolean, attempt integer)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    claimed_ids text[];
BEGIN
    -- The batch form of claim_delivery, for the tracker's group commit: one row per input
    -- position, in input order, each exactly what claim_delivery would have returned had the
    -- calls run one after another in that order (a repeated id is claimed by its first
    -- position; the later ones see that live claim). An unknown id returns no row.
    IF p_lease IS NULL OR p_lease <= interval '0' THEN
        RAISE EXCEPTION 'lease must be a positive interval, not %', p_lease
            USING ERRCODE = '22023', COLUMN = 'lease';
    END IF;
    IF p_delivery_ids IS NULL OR array_position(p_delivery_ids, NULL) IS NOT NULL
       OR cardinality(p_delivery_ids) > 10000 THEN
        RAISE EXCEPTION 'delivery_ids must be 0 to % ids, none NULL', 10000
            USING ERRCODE = '22023', COLUMN = 'delivery_ids';
    END IF;
    PERFORM email.attach_event_payloads(NULL);
    IF cardinality(p_delivery_ids) > 1 THEN
        -- Rows are locked in delivery_id order, so overlapping batches never deadlock.
        PERFORM FROM email.deliveries AS d WHERE d.delivery_id = ANY (p_delivery_ids)
        ORDER BY d.delivery_id FOR UPDATE;
    END IF;
    WITH input AS (
        SELECT DISTINCT ON (i.delivery_id) i.delivery_id
        FROM unnest(p_delivery_ids) AS i(delivery_id)
    ),
    claimed AS (
        UPDATE email.deliveries AS d
        SET status = 'in_progress', attempts = d.attempts + 1, last_attempted_at = now()
        FROM input
        WHERE d.delivery_id = input.delivery_id
          AND (d.status IN ('queued', 'retrying')
               OR (d.status = 'in_progress'
                   AND coalesce(d.last_attempted_at, '-infinity') <= now() - p_lease))
        RETURNING d.delivery_id
    )
    SELECT coalesce(array_agg(claimed.delivery_id), '{}') INTO claimed_ids FROM claimed;

    RETURN QUERY
    WITH input AS (
        SELECT i.delivery_id, i.pos,
               row_number() OVER (PARTITION BY i.delivery_id ORDER BY i.pos) AS nth
        FROM unnest(p_delivery_ids) WITH ORDINALITY AS i(delivery_id, pos)
    )
    SELECT d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at,
           input.nth = 1 AND d.delivery_id = ANY (claimed_ids),
           CASE WHEN input.nth = 1 AND d.delivery_id = ANY (claimed_ids) THEN d.attempts END
    FROM input
    JOIN email.deliveries AS d ON d.delivery_id = input.delivery_id
    ORDER BY input.pos;
END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.claim_deliveries(p_delivery_ids text[], p_lease interval) FROM PUBLIC;
END
$$;

GRANT EXECUTE ON FUNCTION email.claim_deliveries(p_delivery_ids text[], p_lease interval) TO "email_writer";

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

CREATE OR REPLACE FUNCTION email.latency_percentile(p_buckets smallint[], p_counts bigint[], p_fraction double precision)
RETURNS double precision
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    total bigint := 0;
    rank double precision;
    low bigint;
    seen bigint := 0;
    at_low double precision;
    at_high double precision;
    bucket smallint;
BEGIN
    -- percentile_cont over a latency histogram (buckets ascending, with their counts): the
    -- values at ranks floor(r) and floor(r) + 1, r = fraction * (n - 1), each read as its
    -- bucket's estimate, interpolated as percentile_cont interpolates. Each estimate is
    -- within rules.LATENCY_RELATIVE_ERROR of its value, so the result is too.
    SELECT coalesce(sum(c), 0) INTO total FROM unnest(p_counts) AS c;
    IF total = 0 THEN
        RETURN NULL;
    END IF;
    rank := p_fraction * (total - 1);
    low := floor(rank)::bigint;
    FOR i IN 1 .. cardinality(p_buckets) LOOP
        bucket := p_buckets[i];
        seen := seen + p_counts[i];
        IF at_low IS NULL AND low < seen THEN
            at_low := CASE WHEN bucket < -60 THEN 0::double precision WHEN bucket > 120 THEN 1e6::double precision ELSE 2 * power(power(10::double precision, 1.0::double precision / 20), bucket) / (power(10::double precision, 1.0::double precision / 20) + 1) END;
        END IF;
        IF low + 1 < seen THEN
            at_high := CASE WHEN bucket < -60 THEN 0::double precision WHEN bucket > 120 THEN 1e6::double precision ELSE 2 * power(power(10::double precision, 1.0::double precision / 20), bucket) / (power(10::double precision, 1.0::double precision / 20) + 1) END;
            EXIT;
        END IF;
    END LOOP;
    RETURN at_low + (rank - low) * (coalesce(at_high, at_low) - at_low);
END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.latency_percentile(p_buckets smallint[], p_counts bigint[], p_fraction double precision) FROM PUBLIC;
END
$$;

GRANT EXECUTE ON FUNCTION email.latency_percentile(p_buckets smallint[], p_counts bigint[], p_fraction double precision) TO "email_reader";

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
    -- then the dashboards' rollups. What it reports is what verify and health warn about:
    -- how far the partitions reach, and events that landed in the default partition.
    SELECT coalesce(array_agg(p), '{}') INTO created
    FROM email.create_event_partitions(p_ahead, p_interval) AS p;
    SELECT * INTO refreshed FROM email.refresh_delivery_rollups();
    RETURN QUERY
    SELECT created, refreshed.hours_recomputed, refreshed.hours_added, refreshed.rolled_until,
           (SELECT max(p.upper_bound) FROM email.event_partitions() AS p),
           (SELECT count(*) FROM email.delivery_events_default);
END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.maintain(p_ahead interval, p_interval interval) FROM PUBLIC;
END
$$;

CREATE OR REPLACE FUNCTION email.mark_deliveries_failed(p_delivery_ids text[], p_attempts integer[], p_error_codes text[], p_error_messages text[], p_retryables boolean[], p_max_attempts integer[], p_payloads jsonb[])
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, changed boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    n integer := cardinality(p_delivery_ids);
    applied integer[];
    updated integer[];
BEGIN
    -- SECURITY DEFINER: the worker holds no write grant on the tables, only EXECUTE on the
    -- lifecycle functions; the guard trigger checks the row as it checks any client's.
    -- One row per input position, in input order, each what mark_delivery_failed would have
    -- returned had the calls run one after another in that order. Only the live attempt may
    -- report a failure: of a repeated id, the first position naming the live attempt applies,
    -- and the later ones find the delivery no longer in progress.
    IF p_delivery_ids IS NULL OR array_position(p_delivery_ids, NULL) IS NOT NULL
       OR n > 10000 THEN
        RAISE EXCEPTION 'delivery_ids must be 0 to % ids, none NULL', 10000
            USING ERRCODE = '22023', COLUMN = 'delivery_ids';
    END IF;
    IF cardinality(p_attempts) IS DISTINCT FROM n OR cardinality(p_error_codes) IS DISTINCT FROM n
       OR cardinality(p_error_messages) IS DISTINCT FROM n
       OR cardinality(p_retryables) IS DISTINCT FROM n
       OR cardinality(p_max_attempts) IS DISTINCT FROM n
       OR cardinality(p_payloads) IS DISTINCT FROM n THEN
        RAISE EXCEPTION 'every argument array must have one item per delivery id'
            USING ERRCODE = '22023', COLUMN = 'attempts';
    END IF;
    IF EXISTS (SELECT FROM unnest(p_max_attempts) AS m WHERE m IS NULL OR m < 1) THEN
        RAISE EXCEPTION 'max_attempts must be at least 1, not %',
            (SELECT m FROM unnest(p_max_attempts) AS m WHERE m IS NULL OR m < 1 LIMIT 1)
            USING ERRCODE = '22023', COLUMN = 'max_attempts';
    END IF;
    IF EXISTS (SELECT FROM unnest(p_payloads) AS p
               WHERE octet_length(p::text) > 15872) THEN
        RAISE EXCEPTION 'payload is larger than % bytes as JSON', 15872
            USING ERRCODE = '22023', COLUMN = 'payload';
    END IF;
    IF n > 1 THEN
        -- Rows are locked in delivery_id order, so overlapping batches never deadlock.
        PERFORM FROM email.deliveries AS d WHERE d.delivery_id = ANY (p_delivery_ids)
        ORDER BY d.delivery_id FOR UPDATE;
    END IF;
    -- The positions that apply: per id, the first naming the live attempt (the update
    -- re-checks it: changed is what the update did).
    SELECT coalesce(array_agg(f.pos::integer), '{}') INTO applied
    FROM (SELECT DISTINCT ON (i.delivery_id) i.pos
          FROM unnest(p_delivery_ids, p_attempts) WITH ORDINALITY AS i(delivery_id, attempt, pos)
          JOIN email.deliveries AS d ON d.delivery_id = i.delivery_id
          WHERE d.status = 'in_progress' AND d.attempts = i.attempt
          ORDER BY i.delivery_id, i.pos) AS f;
    PERFORM email.attach_event_payloads(
        (SELECT jsonb_object_agg(p_delivery_ids[pos], p_payloads[pos])
         FROM unnest(applied) AS pos WHERE p_payloads[pos] IS NOT NULL));
    WITH changed AS (
        UPDATE email.deliveries AS d
        SET status = CASE
                WHEN NOT coalesce(p_retryables[a.pos], true) THEN 'failed'
                WHEN email.attempts_since_requeue(d.attempts, d.metadata) >= p_max_attempts[a.pos] THEN 'dead_letter'
                ELSE 'retrying'
            END::email.delivery_status,
            last_error_code = p_error_codes[a.pos],
            last_error_message = p_error_messages[a.pos]
        FROM unnest(applied) AS a(pos)
        WHERE d.delivery_id = p_delivery_ids[a.pos]
          AND d.status = 'in_progress' AND d.attempts = p_attempts[a.pos]
        RETURNING a.pos
    )
    SELECT coalesce(array_agg(changed.pos), '{}') INTO updated FROM changed;

    RETURN QUERY
    SELECT d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at,
           i.pos = ANY (updated)
    FROM unnest(p_delivery_ids) WITH ORDINALITY AS i(delivery_id, pos)
    JOIN email.deliveries AS d ON d.delivery_id = i.delivery_id
    ORDER BY i.pos;
END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.mark_deliveries_failed(p_delivery_ids text[], p_attempts integer[], p_error_codes text[], p_error_messages text[], p_retryables boolean[], p_max_attempts integer[], p_payloads jsonb[]) FROM PUBLIC;
END
$$;

GRANT EXECUTE ON FUNCTION email.mark_deliveries_failed(p_delivery_ids text[], p_attempts integer[], p_error_codes text[], p_error_messages text[], p_retryables boolean[], p_max_attempts integer[], p_payloads jsonb[]) TO "email_writer";

CREATE OR REPLACE FUNCTION email.mark_deliveries_sent(p_delivery_ids text[], p_attempts integer[], p_payloads jsonb[])
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, changed boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    updated_ids text[];
BEGIN
    -- SECURITY DEFINER: the worker holds no write grant on the tables, only EXECUTE on the
    -- lifecycle functions; the guard trigger checks the row as it checks any client's.
    -- One row per input position, in input order, each what mark_delivery_sent would have
    -- returned had the calls run one after another in that order: a repeated id is sent by
    -- its first position, with that position's attempt and payload. Any attempt's success is
    -- the truth, even a superseded one or after failed/dead_letter.
    IF p_delivery_ids IS NULL OR array_position(p_delivery_ids, NULL) IS NOT NULL
       OR cardinality(p_delivery_ids) > 10000 THEN
        RAISE EXCEPTION 'delivery_ids must be 0 to % ids, none NULL', 10000
            USING ERRCODE = '22023', COLUMN = 'delivery_ids';
    END IF;
    IF cardinality(p_attempts) IS DISTINCT FROM cardinality(p_delivery_ids)
       OR cardinality(p_payloads) IS DISTINCT FROM cardinality(p_delivery_ids) THEN
        RAISE EXCEPTION 'attempts and payloads must have one item per delivery id'
            USING ERRCODE = '22023', COLUMN = 'attempts';
    END IF;
    IF EXISTS (SELECT FROM unnest(p_payloads) AS p
               WHERE octet_length(p::text) > 15872) THEN
        RAISE EXCEPTION 'payload is larger than % bytes as JSON', 15872
            USING ERRCODE = '22023', COLUMN = 'payload';
    END IF;
    IF cardinality(p_delivery_ids) > 1 THEN
        -- Rows are locked in delivery_id order, so overlapping batches never deadlock.
        PERFORM FROM email.deliveries AS d WHERE d.delivery_id = ANY (p_delivery_ids)
        ORDER BY d.delivery_id FOR UPDATE;
    END IF;
    PERFORM email.attach_event_payloads(
        (SELECT jsonb_object_agg(f.delivery_id,
                    coalesce(f.payload, '{}'::jsonb) || jsonb_build_object('reported_attempt', f.attempt))
         FROM (SELECT DISTINCT ON (i.delivery_id) i.delivery_id, i.attempt, i.payload
               FROM unnest(p_delivery_ids, p_attempts, p_payloads)
                    WITH ORDINALITY AS i(delivery_id, attempt, payload, pos)
               ORDER BY i.delivery_id, i.pos) AS f));
    WITH updated AS (
        UPDATE email.deliveries AS d
        SET status = 'sent', last_error_code = NULL, last_error_message = NULL
        WHERE d.delivery_id = ANY (p_delivery_ids) AND d.status <> 'sent'
        RETURNING d.delivery_id
    )
    SELECT coalesce(array_agg(updated.delivery_id), '{}') INTO updated_ids FROM updated;

    RETURN QUERY
    WITH input AS (
        SELECT i.delivery_id, i.pos,
               row_number() OVER (PARTITION BY i.delivery_id ORDER BY i.pos) AS nth
        FROM unnest(p_delivery_ids) WITH ORDINALITY AS i(delivery_id, pos)
    )
    SELECT d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at,
           input.nth = 1 AND d.delivery_id = ANY (updated_ids)
    FROM input
    JOIN email.deliveries AS d ON d.delivery_id = input.delivery_id
    ORDER BY input.pos;
END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.mark_deliveries_sent(p_delivery_ids text[], p_attempts integer[], p_payloads jsonb[]) FROM PUBLIC;
END
$$;

GRANT EXECUTE ON FUNCTION email.mark_deliveries_sent(p_delivery_ids text[], p_attempts integer[], p_payloads jsonb[]) TO "email_writer";

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
    -- A deletion writes no audit event: the hours it changed are recorded for the rollups'
    -- next refresh (and read from the deliveries until then).
    INSERT INTO email.delivery_rollup_deletions (hour, workflow)
    SELECT DISTINCT date_bin(interval '1 hour', p.queued_at, TIMESTAMPTZ '2000-01-01 00:00:00+00'), p.workflow
    FROM purged_rows AS p
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;;

CREATE OR REPLACE FUNCTION email.raw_delivery_rollups(p_from timestamp with time zone, p_until timestamp with time zone, p_workflow text DEFAULT NULL::text)
RETURNS TABLE(hour timestamp with time zone, workflow text, status email.delivery_status, error_code text, latency_bucket smallint, deliveries bigint, attempts bigint, retried bigint)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- The deliveries queued in [p_from, p_until) (of one workflow, or all), summed as
    -- email.delivery_rollups stores them: per UTC hour, workflow and current status, sent
    -- ones by latency bucket, the others by last_error_code. The one definition of what a
    -- rollup row holds: email.refresh_delivery_rollups stores it, email.delivery_stats reads
    -- it for the hours the rollups do not cover.
    -- Finished rows come from ix_deliveries_finished (status IN the finished statuses: one
    -- range per status, and it implies the index's predicate even in a generic plan),
    -- in-flight ones from (status, updated_at).
    SELECT date_bin(interval '1 hour', d.queued_at, TIMESTAMPTZ '2000-01-01 00:00:00+00'),
           d.workflow, d.status,
           CASE WHEN d.status <> 'sent' THEN d.last_error_code END,
           CASE WHEN d.status = 'sent' THEN CASE WHEN latency_s IS NULL THEN NULL WHEN latency_s <= power(10::double precision, (-61)::double precision / 20) THEN -61 WHEN latency_s > 1e6 THEN 121 ELSE ceil(20 * log(latency_s)) END::smallint END,
           count(*), sum(d.attempts)::bigint, count(*) FILTER (WHERE d.attempts > 1)
    FROM (
        SELECT f.queued_at, f.workflow, f.status, f.last_error_code, f.attempts,
               EXTRACT(EPOCH FROM f.sent_at - f.queued_at)::double precision AS latency_s
        FROM email.deliveries AS f
        WHERE f.status IN ('sent', 'failed', 'dead_letter')
          AND f.queued_at >= p_from AND f.queued_at < p_until
          AND (p_workflow IS NULL OR f.workflow = p_workflow)
        UNION ALL
        SELECT a.queued_at, a.workflow, a.status, a.last_error_code, a.attempts, NULL
        FROM email.deliveries AS a
        WHERE a.status IN ('queued', 'in_progress', 'retrying')
          AND a.queued_at >= p_from AND a.queued_at < p_until
          AND (p_workflow IS NULL OR a.workflow = p_workflow)
    ) AS d
    GROUP BY 1, 2, 3, 4, 5
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.raw_delivery_rollups(p_from timestamp with time zone, p_until timestamp with time zone, p_workflow text) FROM PUBLIC;
END
$$;

GRANT EXECUTE ON FUNCTION email.raw_delivery_rollups(p_from timestamp with time zone, p_until timestamp with time zone, p_workflow text) TO "email_reader";

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

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.refresh_delivery_rollups() FROM PUBLIC;
END
$$;

CREATE POLICY delivery_rollup_deletions_email_reader_select ON email.delivery_rollup_deletions
    AS PERMISSIVE FOR SELECT TO email_reader USING (true);;

CREATE POLICY delivery_rollup_state_email_reader_select ON email.delivery_rollup_state
    AS PERMISSIVE FOR SELECT TO email_reader USING (true);;

CREATE POLICY delivery_rollups_email_reader_select ON email.delivery_rollups
    AS PERMISSIVE FOR SELECT TO email_reader USING (true);;

COMMIT;

SET lock_timeout = '5s';

DROP INDEX CONCURRENTLY IF EXISTS email.ix_deliveries_queued_at;

DROP INDEX CONCURRENTLY IF EXISTS email.ix_deliveries_status_queued_at;

RESET lock_timeout;

BEGIN;
