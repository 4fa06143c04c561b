SET LOCAL lock_timeout = '5s';

SET LOCAL statement_timeout = '60s';

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

CREATE OR REPLACE FUNCTION email.requeue_delivery(p_delivery_id text, p_reason text)
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, changed boolean)
LANGUAGE plpgsql
SET search_path = ''
AS $$
#variable_conflict use_column
DECLARE
    hit boolean;
    
BEGIN
    IF p_reason IS NULL OR btrim(p_reason) = '' THEN
        RAISE EXCEPTION 'a requeue needs a reason' USING ERRCODE = '22023';
    END IF;
    PERFORM set_config('email.event_payload',
        jsonb_build_object('reason', email.sanitize_error_message(p_reason),
                           'requeued_by', session_user::text)::text,
        true);
    RETURN QUERY
    WITH updated AS (
        UPDATE email.deliveries AS d
        SET status = 'queued',
            metadata = d.metadata || jsonb_build_object('requeued_at_attempt', d.attempts)
        WHERE d.delivery_id = p_delivery_id AND d.status IN ('failed', 'dead_letter')
        RETURNING d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at)
    SELECT updated.*, true FROM updated;
    hit := FOUND;
    PERFORM set_config('email.event_payload', '', true);
    IF NOT hit THEN
        RETURN QUERY
        SELECT d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, false FROM email.deliveries AS d WHERE d.delivery_id = p_delivery_id;
    END IF;
END
$$;;

CREATE OR REPLACE FUNCTION email.reap_stale_deliveries(p_lease interval, p_max_attempts integer, p_limit integer)
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, changed boolean)
LANGUAGE plpgsql
SET search_path = ''
AS $$
#variable_conflict use_column
BEGIN
    IF p_lease IS NULL OR p_lease <= interval '0' THEN
        RAISE EXCEPTION 'lease must be a positive interval, not %', p_lease
            USING ERRCODE = '22023';
    END IF;
    IF p_max_attempts IS NULL OR p_max_attempts < 1 THEN
        RAISE EXCEPTION 'max_attempts must be at least 1, not %', p_max_attempts
            USING ERRCODE = '22023';
    END IF;
    -- SKIP LOCKED: concurrent reapers (and a claimer taking the row over) split the work;
    -- the lock re-checks the expiry on the newest row version.
    RETURN QUERY
    WITH stale AS (
        SELECT d.delivery_id FROM email.deliveries AS d
        WHERE d.status = 'in_progress'
          AND coalesce(d.last_attempted_at, '-infinity') <= now() - p_lease
        ORDER BY d.last_attempted_at
        LIMIT greatest(p_limit, 0)
        FOR UPDATE SKIP LOCKED
    ),
    reaped AS (
        UPDATE email.deliveries AS d
        SET status = CASE WHEN d.attempts - coalesce((d.metadata->>'requeued_at_attempt')::integer, 0) >= p_max_attempts THEN 'dead_letter'
                          ELSE 'retrying' END::email.delivery_status,
            last_error_code = 'LEASE_EXPIRED',
            last_error_message = format(
                'attempt %s claimed at %s got no report within the lease of %s',
                d.attempts, d.last_attempted_at, p_lease)
        FROM stale
        WHERE d.delivery_id = stale.delivery_id
        RETURNING d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at)
    SELECT reaped.*, true FROM reaped;
END
$$;;

CREATE OR REPLACE FUNCTION email.mark_delivery_sent(p_delivery_id text, p_attempt integer, p_payload jsonb)
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, changed boolean)
LANGUAGE plpgsql
SET search_path = ''
AS $$
#variable_conflict use_column
DECLARE
    hit boolean;
    secret text;
BEGIN
    secret := email.find_secret(p_payload);
    IF secret IS NOT NULL THEN
        RAISE EXCEPTION 'payload holds a secret (%); store a hash under a key ending in _sha256',
            secret USING ERRCODE = 'ED003';
    END IF;
    IF octet_length(p_payload::text) > 15872 THEN
        RAISE EXCEPTION 'payload is larger than 15872 bytes as JSON'
            USING ERRCODE = '22023';
    END IF;
    -- Any attempt's success is the truth, even a superseded one or after failed/dead_letter.
    PERFORM set_config('email.event_payload',
        (coalesce(p_payload, '{}'::jsonb)
         || jsonb_build_object('reported_attempt', p_attempt))::text,
        true);
    RETURN QUERY
    WITH updated AS (
        UPDATE email.deliveries AS d
        SET status = 'sent', last_error_code = NULL, last_error_message = NULL
        WHERE d.delivery_id = p_delivery_id AND d.status <> 'sent'
        RETURNING d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at)
    SELECT updated.*, true FROM updated;
    hit := FOUND;
    PERFORM set_config('email.event_payload', '', true);
    IF NOT hit THEN
        RETURN QUERY
        SELECT d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, false FROM email.deliveries AS d WHERE d.delivery_id = p_delivery_id;
    END IF;
END
$$;;

CREATE OR REPLACE FUNCTION email.mark_delivery_failed(p_delivery_id text, p_attempt integer, p_error_code text, p_error_message text, p_retryable boolean, p_max_attempts integer, p_payload jsonb)
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, changed boolean)
LANGUAGE plpgsql
SET search_path = ''
AS $$
#variable_conflict use_column
DECLARE
    hit boolean;
    secret text;
BEGIN
    IF p_max_attempts IS NULL OR p_max_attempts < 1 THEN
        RAISE EXCEPTION 'max_attempts must be at least 1, not %', p_max_attempts
            USING ERRCODE = '22023';
    END IF;
    secret := email.find_secret(p_payload);
    IF secret IS NOT NULL THEN
        RAISE EXCEPTION 'payload holds a secret (%); store a hash under a key ending in _sha256',
            secret USING ERRCODE = 'ED003';
    END IF;
    IF octet_length(p_payload::text) > 15872 THEN
        RAISE EXCEPTION 'payload is larger than 15872 bytes as JSON'
            USING ERRCODE = '22023';
    END IF;
    PERFORM set_config('email.event_payload', coalesce(p_payload::text, ''), true);
    -- Only the live attempt may report a failure: a superseded attempt changes nothing.
    RETURN QUERY
    WITH updated AS (
        UPDATE email.deliveries AS d
        SET status = CASE
                WHEN NOT coalesce(p_retryable, true) THEN 'failed'
                WHEN d.attempts - coalesce((d.metadata->>'requeued_at_attempt')::integer, 0) >= p_max_attempts THEN 'dead_letter'
                ELSE 'retrying'
            END::email.delivery_status,
            last_error_code = p_error_code,
            last_error_message = email.sanitize_error_message(p_error_message)
        WHERE d.delivery_id = p_delivery_id
          AND d.status = 'in_progress' AND d.attempts = p_attempt
        RETURNING d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at)
    SELECT updated.*, true FROM updated;
    hit := FOUND;
    PERFORM set_config('email.event_payload', '', true);
    IF NOT hit THEN
        RETURN QUERY
        SELECT d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, false FROM email.deliveries AS d WHERE d.delivery_id = p_delivery_id;
    END IF;
END
$$;;

CREATE OR REPLACE FUNCTION email.mark_delivery_dead_letter(p_delivery_id text, p_reference text)
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, changed boolean)
LANGUAGE plpgsql
SET search_path = ''
AS $$
#variable_conflict use_column
DECLARE
    hit boolean;
    
BEGIN
    -- queued/in_progress/retrying move to dead_letter with the reference in metadata (and on
    -- the event). failed and dead_letter keep their status (failed -> dead_letter is not a
    -- transition) and only record a reference they lack. sent never changes.
    IF p_reference IS NULL
       OR p_reference !~ '^[^[:space:][:cntrl:]]{1,200}$' THEN
        RAISE EXCEPTION 'reference must be 1-% printable characters without spaces',
            200 USING ERRCODE = '22023';
    END IF;
    PERFORM set_config('email.event_payload',
        jsonb_build_object('dead_letter_reference', p_reference)::text, true);
    RETURN QUERY
    WITH updated AS (
        UPDATE email.deliveries AS d
        SET status = CASE WHEN d.status IN ('queued', 'in_progress', 'retrying') THEN 'dead_letter' ELSE d.status END
                ::email.delivery_status,
            metadata = d.metadata || jsonb_build_object('dead_letter_reference', p_reference)
        WHERE d.delivery_id = p_delivery_id
          AND (d.status IN ('queued', 'in_progress', 'retrying')
               OR (d.status IN ('failed', 'dead_letter')
                   AND d.metadata->'dead_letter_reference' IS NULL))
        RETURNING d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at)
    SELECT updated.*, true FROM updated;
    hit := FOUND;
    PERFORM set_config('email.event_payload', '', true);
    IF NOT hit THEN
        RETURN QUERY
        SELECT d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, false FROM email.deliveries AS d WHERE d.delivery_id = p_delivery_id;
    END IF;
END
$$;;

CREATE OR REPLACE FUNCTION email.is_allowed_transition(old_status email.delivery_status, new_status email.delivery_status)
RETURNS boolean
LANGUAGE sql
IMMUTABLE PARALLEL SAFE
SET search_path = ''
AS $$
    -- The SQL copy of email_delivery.transitions.TRANSITIONS.
    SELECT old_status = new_status
        OR (old_status::text, new_status::text) IN (VALUES
            ('queued', 'in_progress'), ('queued', 'sent'), ('queued', 'failed'),
            ('queued', 'dead_letter'),
            ('in_progress', 'sent'), ('in_progress', 'retrying'), ('in_progress', 'failed'),
            ('in_progress', 'dead_letter'),
            ('retrying', 'in_progress'), ('retrying', 'sent'), ('retrying', 'failed'),
            ('retrying', 'dead_letter'),
            ('failed', 'queued'), ('failed', 'sent'),
            ('dead_letter', 'queued'), ('dead_letter', 'sent'))
$$;;

CREATE OR REPLACE FUNCTION email.enqueue_delivery(p_delivery_id text, p_workflow text, p_recipient text, p_metadata jsonb, p_queued_at timestamp with time zone)
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, created boolean, conflicts text[])
LANGUAGE plpgsql
SET search_path = ''
AS $$
#variable_conflict use_column
DECLARE
    secret text;
BEGIN
    secret := email.find_secret(p_metadata);
    IF secret IS NOT NULL THEN
        RAISE EXCEPTION 'metadata holds a secret (%); store a hash under a key ending in _sha256',
            secret USING ERRCODE = 'ED003';
    END IF;
    IF octet_length(p_metadata::text) > 15872 THEN
        RAISE EXCEPTION 'metadata is larger than 15872 bytes as JSON'
            USING ERRCODE = '22023';
    END IF;
    IF p_metadata ?| ARRAY['dead_letter_reference', 'requeued_at_attempt'] THEN
        RAISE EXCEPTION 'metadata may not set the lifecycle''s keys %', ARRAY['dead_letter_reference', 'requeued_at_attempt']
            USING ERRCODE = '22023';
    END IF;
    -- Insert or nothing: a redelivered event never changes the row nor writes an event.
    RETURN QUERY
    WITH inserted AS (
        INSERT INTO email.deliveries AS d (delivery_id, workflow, recipient, metadata, queued_at)
        VALUES (p_delivery_id, p_workflow, p_recipient, coalesce(p_metadata, '{}'::jsonb),
                coalesce(p_queued_at, now()))
        ON CONFLICT (delivery_id) DO NOTHING
        RETURNING d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at)
    SELECT inserted.*, true, '{}'::text[] FROM inserted;
    IF FOUND THEN
        RETURN;
    END IF;
    -- ON CONFLICT waited for a concurrent inserter, so the row is committed and visible now.
    RETURN QUERY
    SELECT d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, false,
           array_remove(ARRAY[
               CASE WHEN d.workflow IS DISTINCT FROM p_workflow THEN 'workflow' END,
               CASE WHEN d.recipient IS DISTINCT FROM p_recipient THEN 'recipient' END],
               NULL)
    FROM email.deliveries AS d
    WHERE d.delivery_id = p_delivery_id;
END
$$;;

CREATE OR REPLACE FUNCTION email.enqueue_deliveries(p_delivery_ids text[], p_workflows text[], p_recipients text[], p_metadata jsonb[], p_queued_ats timestamp with time zone[])
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, created boolean, conflicts text[])
LANGUAGE plpgsql
SET search_path = ''
AS $$
#variable_conflict use_column
DECLARE
    created_ids text[];
    secret text;
BEGIN
    secret := email.find_secret((SELECT jsonb_agg(m) FROM unnest(p_metadata) AS m));
    IF secret IS NOT NULL THEN
        RAISE EXCEPTION 'metadata holds a secret (%); store a hash under a key ending in _sha256',
            secret USING ERRCODE = 'ED003';
    END IF;
    IF EXISTS (SELECT FROM unnest(p_metadata) AS m WHERE octet_length(m::text) > 15872) THEN
        RAISE EXCEPTION 'metadata is larger than 15872 bytes as JSON'
            USING ERRCODE = '22023';
    END IF;
    IF EXISTS (SELECT FROM unnest(p_metadata) AS m WHERE m ?| ARRAY['dead_letter_reference', 'requeued_at_attempt']) THEN
        RAISE EXCEPTION 'metadata may not set the lifecycle''s keys %', ARRAY['dead_letter_reference', 'requeued_at_attempt']
            USING ERRCODE = '22023';
    END IF;
    -- One row per input position, in input order; a repeated id is created at most once.
    -- Inserting in key order keeps concurrent overlapping batches from deadlocking.
    WITH input AS (
        SELECT i.*
        FROM unnest(p_delivery_ids, p_workflows, p_recipients, p_metadata, p_queued_ats)
             WITH ORDINALITY AS i(delivery_id, workflow, recipient, metadata, queued_at, pos)
    ),
    inserted AS (
        INSERT INTO email.deliveries AS d (delivery_id, workflow, recipient, metadata, queued_at)
        SELECT DISTINCT ON (input.delivery_id)
               input.delivery_id, input.workflow, input.recipient,
               coalesce(input.metadata, '{}'::jsonb), coalesce(input.queued_at, now())
        FROM input
        ORDER BY input.delivery_id, input.pos
        ON CONFLICT (delivery_id) DO NOTHING
        RETURNING d.delivery_id
    )
    SELECT coalesce(array_agg(inserted.delivery_id), '{}') INTO created_ids FROM inserted;

    RETURN QUERY
    WITH input AS (
        SELECT i.*,
               row_number() OVER (PARTITION BY i.delivery_id ORDER BY i.pos) AS nth
        FROM unnest(p_delivery_ids, p_workflows, p_recipients)
             WITH ORDINALITY AS i(delivery_id, workflow, recipient, pos)
    )
    SELECT d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at,
           input.nth = 1 AND d.delivery_id = ANY (created_ids),
           array_remove(ARRAY[
               CASE WHEN d.workflow IS DISTINCT FROM input.workflow THEN 'workflow' END,
               CASE WHEN d.recipient IS DISTINCT FROM input.recipient THEN 'recipient' END],
               NULL)
    FROM input
    JOIN email.deliveries AS d ON d.delivery_id = input.delivery_id
    ORDER BY input.pos;
END
$$;;

DROP FUNCTION email.delivery_stats(p_since timestamp with time zone, p_until timestamp with time zone, p_bucket text, p_workflow text, p_top_errors integer);

CREATE OR REPLACE FUNCTION email.claim_delivery(p_delivery_id text, p_lease interval)
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, changed boolean, attempt integer)
LANGUAGE plpgsql
SET search_path = ''
AS $$
#variable_conflict use_column
BEGIN
    IF p_lease IS NULL OR p_lease <= interval '0' THEN
        RAISE EXCEPTION 'lease must be a positive interval, not %', p_lease
            USING ERRCODE = '22023';
    END IF;
    -- A claim's lease ends at last_attempted_at + lease: every worker must use the same lease.
    -- A second claimer blocks on the row lock, then re-checks this WHERE on the new row
    -- version (in_progress, fresh stamp) and updates nothing.
    RETURN QUERY
    WITH claimed AS (
        UPDATE email.deliveries AS d
        SET status = 'in_progress', attempts = d.attempts + 1, last_attempted_at = now()
        WHERE d.delivery_id = p_delivery_id
          AND (d.status IN ('queued', 'retrying')
               OR (d.status = 'in_progress'
                   AND coalesce(d.last_attempted_at, '-infinity') <= now() - p_lease))
        RETURNING d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at)
    SELECT claimed.*, true, claimed.attempts FROM claimed;
    IF NOT FOUND THEN
        RETURN QUERY
        SELECT d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, false, NULL::integer FROM email.deliveries AS d
        WHERE d.delivery_id = p_delivery_id;
    END IF;
END
$$;;
