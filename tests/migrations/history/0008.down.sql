SET LOCAL lock_timeout = '5s';

ALTER TABLE email.deliveries DROP CONSTRAINT ck_deliveries_lease_iff_in_progress;

ALTER TABLE email.deliveries DROP CONSTRAINT ck_deliveries_next_attempt_only_retrying;

DROP VIEW email.pending_deliveries;

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

DROP VIEW email.delivery_health;

DROP POLICY workflow_policy_changes_email_reader_select ON email.workflow_policy_changes;

DROP POLICY workflow_policies_email_writer_select ON email.workflow_policies;

DROP POLICY workflow_policies_email_reader_select ON email.workflow_policies;

DROP TRIGGER workflow_policies_no_truncate ON email.workflow_policies;

DROP TRIGGER workflow_policies_guard ON email.workflow_policies;

DROP TRIGGER workflow_policies_audit ON email.workflow_policies;

DROP FUNCTION email.workflow_policy(p_workflow text);

DROP FUNCTION email.retry_delay(p_policy email.workflow_policies, p_failures integer);

DROP FUNCTION email.requeue_delivery(p_delivery_id text, p_reason text);

CREATE OR REPLACE FUNCTION email.requeue_delivery(p_delivery_id text, p_reason text)
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, changed boolean)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    IF p_reason IS NULL OR btrim(p_reason) = '' THEN
        RAISE EXCEPTION 'a requeue needs a reason' USING ERRCODE = '22023', COLUMN = 'reason';
    END IF;
    -- The owner's function (no group role may execute it); the guard trigger refuses a
    -- requeue by any other login, by any path.
    PERFORM email.attach_event_payloads(jsonb_build_object(p_delivery_id,
        jsonb_build_object('reason', email.sanitize_error_message(p_reason),
                           'requeued_by', session_user::text)));
    RETURN QUERY
    WITH updated AS (
        UPDATE email.deliveries AS d
        SET status = 'queued',
            metadata = d.metadata || jsonb_build_object('requeued_at_attempt', d.attempts)
        WHERE d.delivery_id = p_delivery_id AND d.status IN ('failed', 'dead_letter')
        RETURNING d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at)
    SELECT updated.*, true FROM updated;
    IF NOT FOUND THEN
        RETURN QUERY
        SELECT d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, false FROM email.deliveries AS d WHERE d.delivery_id = p_delivery_id;
    END IF;
END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.requeue_delivery(p_delivery_id text, p_reason text) FROM PUBLIC;
END
$$;

DROP FUNCTION email.reap_stale_deliveries(p_lease interval, p_max_attempts integer, p_limit integer);

CREATE OR REPLACE FUNCTION email.reap_stale_deliveries(p_lease interval, p_max_attempts integer, p_limit integer)
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, changed boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    -- SECURITY DEFINER: the worker holds no write grant on the tables, only EXECUTE on the
    -- lifecycle functions; the guard trigger checks the row as it checks any client's.
    IF p_lease IS NULL OR p_lease <= interval '0' THEN
        RAISE EXCEPTION 'lease must be a positive interval, not %', p_lease
            USING ERRCODE = '22023', COLUMN = 'lease';
    END IF;
    IF p_max_attempts IS NULL OR p_max_attempts < 1 THEN
        RAISE EXCEPTION 'max_attempts must be at least 1, not %', p_max_attempts
            USING ERRCODE = '22023', COLUMN = 'max_attempts';
    END IF;
    PERFORM email.attach_event_payloads(NULL);
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
        SET status = CASE WHEN email.attempts_since_requeue(d.attempts, d.metadata) >= p_max_attempts THEN 'dead_letter'
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

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.reap_stale_deliveries(p_lease interval, p_max_attempts integer, p_limit integer) FROM PUBLIC;
END
$$;

GRANT EXECUTE ON FUNCTION email.reap_stale_deliveries(p_lease interval, p_max_attempts integer, p_limit integer) TO "email_writer";

DROP FUNCTION email.mark_delivery_sent(p_delivery_id text, p_attempt integer, p_payload jsonb);

CREATE OR REPLACE FUNCTION email.mark_delivery_sent(p_delivery_id text, p_attempt integer, p_payload jsonb)
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, changed boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    -- SECURITY DEFINER: the worker holds no write grant on the tables, only EXECUTE on the
    -- lifecycle functions; the guard trigger checks the row as it checks any client's.
    IF octet_length(p_payload::text) > 15872 THEN
        RAISE EXCEPTION 'payload is larger than % bytes as JSON', 15872
            USING ERRCODE = '22023', COLUMN = 'payload';
    END IF;
    -- Any attempt's success is the truth, even a superseded one or after failed/dead_letter.
    PERFORM email.attach_event_payloads(jsonb_build_object(p_delivery_id,
        coalesce(p_payload, '{}'::jsonb) || jsonb_build_object('reported_attempt', p_attempt)));
    RETURN QUERY
    WITH updated AS (
        UPDATE email.deliveries AS d
        SET status = 'sent', last_error_code = NULL, last_error_message = NULL
        WHERE d.delivery_id = p_delivery_id AND d.status <> 'sent'
        RETURNING d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at)
    SELECT updated.*, true FROM updated;
    IF NOT FOUND THEN
        RETURN QUERY
        SELECT d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, false FROM email.deliveries AS d WHERE d.delivery_id = p_delivery_id;
    END IF;
END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.mark_delivery_sent(p_delivery_id text, p_attempt integer, p_payload jsonb) FROM PUBLIC;
END
$$;

GRANT EXECUTE ON FUNCTION email.mark_delivery_sent(p_delivery_id text, p_attempt integer, p_payload jsonb) TO "email_writer";

DROP FUNCTION email.mark_delivery_failed(p_delivery_id text, p_attempt integer, p_error_code text, p_error_message text, p_retryable boolean, p_max_attempts integer, p_payload jsonb);

CREATE OR REPLACE FUNCTION email.mark_delivery_failed(p_delivery_id text, p_attempt integer, p_error_code text, p_error_message text, p_retryable boolean, p_max_attempts integer, p_payload jsonb)
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, changed boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    -- SECURITY DEFINER: the worker holds no write grant on the tables, only EXECUTE on the
    -- lifecycle functions; the guard trigger checks the row as it checks any client's.
    IF p_max_attempts IS NULL OR p_max_attempts < 1 THEN
        RAISE EXCEPTION 'max_attempts must be at least 1, not %', p_max_attempts
            USING ERRCODE = '22023', COLUMN = 'max_attempts';
    END IF;
    IF octet_length(p_payload::text) > 15872 THEN
        RAISE EXCEPTION 'payload is larger than % bytes as JSON', 15872
            USING ERRCODE = '22023', COLUMN = 'payload';
    END IF;
    PERFORM email.attach_event_payloads(
        CASE WHEN p_payload IS NOT NULL THEN jsonb_build_object(p_delivery_id, p_payload) END);
    -- Only the live attempt may report a failure: a superseded attempt changes nothing.
    RETURN QUERY
    WITH updated AS (
        UPDATE email.deliveries AS d
        SET status = CASE
                WHEN NOT coalesce(p_retryable, true) THEN 'failed'
                WHEN email.attempts_since_requeue(d.attempts, d.metadata) >= p_max_attempts THEN 'dead_letter'
                ELSE 'retrying'
            END::email.delivery_status,
            last_error_code = p_error_code,
            last_error_message = p_error_message
        WHERE d.delivery_id = p_delivery_id
          AND d.status = 'in_progress' AND d.attempts = p_attempt
        RETURNING d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at)
    SELECT updated.*, true FROM updated;
    IF NOT FOUND THEN
        RETURN QUERY
        SELECT d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, false FROM email.deliveries AS d WHERE d.delivery_id = p_delivery_id;
    END IF;
END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.mark_delivery_failed(p_delivery_id text, p_attempt integer, p_error_code text, p_error_message text, p_retryable boolean, p_max_attempts integer, p_payload jsonb) FROM PUBLIC;
END
$$;

GRANT EXECUTE ON FUNCTION email.mark_delivery_failed(p_delivery_id text, p_attempt integer, p_error_code text, p_error_message text, p_retryable boolean, p_max_attempts integer, p_payload jsonb) TO "email_writer";

DROP FUNCTION email.mark_delivery_dead_letter(p_delivery_id text, p_reference text);

CREATE OR REPLACE FUNCTION email.mark_delivery_dead_letter(p_delivery_id text, p_reference text)
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, changed boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    -- SECURITY DEFINER: the worker holds no write grant on the tables, only EXECUTE on the
    -- lifecycle functions; the guard trigger checks the row as it checks any client's.
    -- queued/in_progress/retrying move to dead_letter with the reference in metadata (and on
    -- the event). failed and dead_letter keep their status (failed -> dead_letter is not a
    -- transition) and only record a reference they lack. sent never changes.
    IF p_reference IS NULL
       OR char_length(p_reference) NOT BETWEEN 1 AND 200
       OR p_reference ~ '[[:space:][:cntrl:]]' THEN
        RAISE EXCEPTION 'reference must be 1-% printable characters without spaces',
            200 USING ERRCODE = '22023', COLUMN = 'reference';
    END IF;
    PERFORM email.attach_event_payloads(jsonb_build_object(p_delivery_id,
        jsonb_build_object('dead_letter_reference', p_reference)));
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
    IF NOT FOUND THEN
        RETURN QUERY
        SELECT d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, false FROM email.deliveries AS d WHERE d.delivery_id = p_delivery_id;
    END IF;
END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.mark_delivery_dead_letter(p_delivery_id text, p_reference text) FROM PUBLIC;
END
$$;

GRANT EXECUTE ON FUNCTION email.mark_delivery_dead_letter(p_delivery_id text, p_reference text) TO "email_writer";

DROP FUNCTION email.mark_deliveries_sent(p_delivery_ids text[], p_attempts integer[], p_payloads jsonb[]);

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

DROP FUNCTION email.mark_deliveries_failed(p_delivery_ids text[], p_attempts integer[], p_error_codes text[], p_error_messages text[], p_retryables boolean[], p_max_attempts integer[], p_payloads jsonb[]);

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

DROP FUNCTION email.guard_workflow_policy();

CREATE OR REPLACE FUNCTION email.guard_delivery()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    secret text;
    protected text;
BEGIN
    -- Every rule of a delivery row, for every client: the lifecycle functions, a hand-typed
    -- statement, a migration. What only the schema owner may do is decided by the login
    -- (email.is_owner_session()), asked only when a change needs it.
    IF TG_OP = 'UPDATE' THEN
        IF NEW IS NOT DISTINCT FROM OLD THEN
            -- Nothing changes: no new row version, no event, updated_at stays.
            RETURN NULL;
        END IF;
        IF NEW.delivery_id IS DISTINCT FROM OLD.delivery_id THEN
            RAISE EXCEPTION 'delivery_id is a delivery''s identity and never changes'
                USING ERRCODE = 'ED004', COLUMN = 'delivery_id';
        END IF;
        -- Its events lie between created_at and updated_at (the purge searches that span).
        IF NEW.created_at IS DISTINCT FROM OLD.created_at THEN
            RAISE EXCEPTION 'created_at is when a delivery was recorded and never changes'
                USING ERRCODE = 'ED004', COLUMN = 'created_at';
        END IF;
        IF NOT email.is_allowed_transition(OLD.status, NEW.status) THEN
            RAISE EXCEPTION 'illegal delivery status transition from % to %', OLD.status, NEW.status
                USING ERRCODE = 'ED001',
                      DETAIL = format('delivery_id=%s', OLD.delivery_id),
                      HINT = 'sent is final; failed and dead_letter move only to queued or sent';
        END IF;
        IF NEW.attempts < OLD.attempts THEN
            RAISE EXCEPTION 'delivery attempts may not decrease (from % to %)',
                OLD.attempts, NEW.attempts
                USING ERRCODE = 'ED002',
                      DETAIL = format('delivery_id=%s', OLD.delivery_id);
        END IF;
        IF OLD.status IN ('failed', 'dead_letter') AND NEW.status = 'queued'
           AND NOT email.is_owner_session() THEN
            RAISE EXCEPTION 'only the schema owner may requeue a % delivery', OLD.status
                USING ERRCODE = 'ED005', COLUMN = 'status',
                      DETAIL = format('delivery_id=%s', OLD.delivery_id);
        END IF;
        -- What the lifecycle does, and nothing else, unless the owner does it by hand.
        protected := CASE
            WHEN NEW.workflow IS DISTINCT FROM OLD.workflow THEN 'workflow'
            WHEN NEW.recipient IS DISTINCT FROM OLD.recipient THEN 'recipient'
            WHEN NEW.queued_at IS DISTINCT FROM OLD.queued_at THEN 'queued_at'
            WHEN OLD.status = 'sent' THEN 'status'
            WHEN NEW.attempts <> OLD.attempts
                 AND NOT (NEW.attempts = OLD.attempts + 1 AND NEW.status = 'in_progress') THEN 'attempts'
            WHEN NEW.last_attempted_at IS DISTINCT FROM OLD.last_attempted_at
                 AND (NEW.attempts = OLD.attempts OR NEW.last_attempted_at IS DISTINCT FROM now())
                THEN 'last_attempted_at'
            WHEN NEW.attempts <> OLD.attempts AND NEW.last_attempted_at IS DISTINCT FROM now()
                THEN 'last_attempted_at'
            WHEN NEW.status = 'sent' AND NEW.sent_at IS NOT NULL AND NEW.sent_at <> now()
                THEN 'sent_at'
            WHEN NEW.metadata->'requeued_at_attempt' IS DISTINCT FROM OLD.metadata->'requeued_at_attempt'
                 AND NOT (OLD.status IN ('failed', 'dead_letter') AND NEW.status = 'queued')
                THEN 'metadata'
            WHEN OLD.metadata ? 'dead_letter_reference'
                 AND NEW.metadata->'dead_letter_reference' IS DISTINCT FROM OLD.metadata->'dead_letter_reference'
                THEN 'metadata'
        END;
    ELSE
        IF NEW.created_at > now() THEN
            RAISE EXCEPTION 'created_at may not be in the future'
                USING ERRCODE = 'ED004', COLUMN = 'created_at';
        END IF;
        IF NEW.metadata ?| ARRAY['dead_letter_reference', 'requeued_at_attempt']
           AND NOT email.is_owner_session() THEN
            RAISE EXCEPTION 'metadata may not set the lifecycle''s keys %',
                ARRAY['dead_letter_reference', 'requeued_at_attempt']
                USING ERRCODE = '22023', COLUMN = 'metadata';
        END IF;
        protected := CASE
            WHEN NEW.status <> 'queued' OR NEW.attempts <> 0 THEN 'status'
            WHEN NEW.last_attempted_at IS NOT NULL OR NEW.sent_at IS NOT NULL THEN 'last_attempted_at'
            WHEN NEW.last_error_code IS NOT NULL OR NEW.last_error_message IS NOT NULL
                THEN 'last_error_code'
            WHEN NEW.created_at <> now() OR NEW.updated_at <> now() THEN 'created_at'
        END;
    END IF;
    IF protected IS NOT NULL AND NOT email.is_owner_session() THEN
        IF TG_OP = 'INSERT' THEN
            RAISE EXCEPTION 'only the schema owner may insert a delivery other than a new queued one (%)',
                protected
                USING ERRCODE = 'ED005', COLUMN = protected;
        END IF;
        RAISE EXCEPTION '% of a delivery changes only through the lifecycle functions', protected
            USING ERRCODE = 'ED004', COLUMN = protected,
                  DETAIL = format('delivery_id=%s', OLD.delivery_id);
    END IF;

    -- For everyone, the owner too: what is stored is sanitised and holds no secret.
    IF NEW.last_error_message IS NOT NULL
       AND (TG_OP = 'INSERT' OR NEW.last_error_message IS DISTINCT FROM OLD.last_error_message) THEN
        NEW.last_error_message := email.sanitize_error_message(NEW.last_error_message);
    END IF;
    IF NEW.last_error_code IS NOT NULL
       AND (TG_OP = 'INSERT' OR NEW.last_error_code IS DISTINCT FROM OLD.last_error_code)
       AND NEW.last_error_code !~ '^[A-Za-z0-9][A-Za-z0-9_.:-]*$' THEN
        RAISE EXCEPTION 'last_error_code must be letters, digits and _ . : -, not %', NEW.last_error_code
            USING ERRCODE = '22023', COLUMN = 'last_error_code';
    END IF;
    -- The metadata scan runs only when metadata changes (never on a claim or a report).
    IF TG_OP = 'INSERT' OR NEW.metadata IS DISTINCT FROM OLD.metadata THEN
        secret := email.find_secret(NEW.metadata);
        IF secret IS NOT NULL THEN
            RAISE EXCEPTION 'metadata holds a secret (%); store a hash under a key ending in _sha256',
                secret USING ERRCODE = 'ED003', COLUMN = 'metadata';
        END IF;
        IF NEW.metadata ? 'requeued_at_attempt'
           AND NOT (jsonb_typeof(NEW.metadata->'requeued_at_attempt') = 'number'
                    AND NEW.metadata->>'requeued_at_attempt' ~ '^[0-9]{1,9}$'
                    AND (NEW.metadata->>'requeued_at_attempt')::integer <= NEW.attempts) THEN
            RAISE EXCEPTION 'metadata.requeued_at_attempt must be a whole number of attempts'
                USING ERRCODE = '22023', COLUMN = 'metadata';
        END IF;
        IF NEW.metadata ? 'dead_letter_reference'
           AND NOT (jsonb_typeof(NEW.metadata->'dead_letter_reference') = 'string'
                    AND char_length(NEW.metadata->>'dead_letter_reference')
                        BETWEEN 1 AND 200
                    AND NEW.metadata->>'dead_letter_reference' !~ '[[:space:][:cntrl:]]') THEN
            RAISE EXCEPTION 'metadata.dead_letter_reference must be 1-% printable characters',
                200 USING ERRCODE = '22023', COLUMN = 'metadata';
        END IF;
    END IF;
    IF NEW.status = 'sent' AND NEW.sent_at IS NULL THEN
        NEW.sent_at := now();
    END IF;
    IF TG_OP = 'UPDATE' THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END
$$;;

DROP FUNCTION email.failure_outcome(p_workflow text, p_attempts integer, p_metadata jsonb, p_retryable boolean, p_max_attempts integer);

DROP FUNCTION email.extend_claim(p_delivery_id text, p_attempt integer, p_lease interval);

DROP FUNCTION email.enqueue_delivery(p_delivery_id text, p_workflow text, p_recipient text, p_metadata jsonb, p_queued_at timestamp with time zone);

CREATE OR REPLACE FUNCTION email.enqueue_delivery(p_delivery_id text, p_workflow text, p_recipient text, p_metadata jsonb, p_queued_at timestamp with time zone)
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, created boolean, conflicts text[])
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    -- SECURITY DEFINER: the worker holds no write grant on the tables, only EXECUTE on the
    -- lifecycle functions; the guard trigger checks the row as it checks any client's.
    IF octet_length(p_metadata::text) > 15872 THEN
        RAISE EXCEPTION 'metadata is larger than % bytes as JSON', 15872
            USING ERRCODE = '22023', COLUMN = 'metadata';
    END IF;
    PERFORM email.attach_event_payloads(NULL);
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

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.enqueue_delivery(p_delivery_id text, p_workflow text, p_recipient text, p_metadata jsonb, p_queued_at timestamp with time zone) FROM PUBLIC;
END
$$;

GRANT EXECUTE ON FUNCTION email.enqueue_delivery(p_delivery_id text, p_workflow text, p_recipient text, p_metadata jsonb, p_queued_at timestamp with time zone) TO "email_writer";

DROP FUNCTION email.enqueue_deliveries(p_delivery_ids text[], p_workflows text[], p_recipients text[], p_metadata jsonb[], p_queued_ats timestamp with time zone[]);

CREATE OR REPLACE FUNCTION email.enqueue_deliveries(p_delivery_ids text[], p_workflows text[], p_recipients text[], p_metadata jsonb[], p_queued_ats timestamp with time zone[])
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, created boolean, conflicts text[])
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    created_ids text[];
BEGIN
    -- SECURITY DEFINER: the worker holds no write grant on the tables, only EXECUTE on the
    -- lifecycle functions; the guard trigger checks the row as it checks any client's.
    IF EXISTS (SELECT FROM unnest(p_metadata) AS m WHERE octet_length(m::text) > 15872) THEN
        RAISE EXCEPTION 'metadata is larger than % bytes as JSON', 15872
            USING ERRCODE = '22023', COLUMN = 'metadata';
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

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.enqueue_deliveries(p_delivery_ids text[], p_workflows text[], p_recipients text[], p_metadata jsonb[], p_queued_ats timestamp with time zone[]) FROM PUBLIC;
END
$$;

GRANT EXECUTE ON FUNCTION email.enqueue_deliveries(p_delivery_ids text[], p_workflows text[], p_recipients text[], p_metadata jsonb[], p_queued_ats timestamp with time zone[]) TO "email_writer";

DROP FUNCTION email.delivery_health(p_queued_age interval, p_retrying_age interval, p_expired_claim_age interval, p_dead_letters_per_hour integer, p_failure_rate double precision);

DROP FUNCTION email.claim_delivery(p_delivery_id text, p_lease interval);

CREATE OR REPLACE FUNCTION email.claim_delivery(p_delivery_id text, p_lease interval)
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, changed boolean, attempt integer)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    -- SECURITY DEFINER: the worker holds no write grant on the tables, only EXECUTE on the
    -- lifecycle functions; the guard trigger checks the row as it checks any client's.
    IF p_lease IS NULL OR p_lease <= interval '0' THEN
        RAISE EXCEPTION 'lease must be a positive interval, not %', p_lease
            USING ERRCODE = '22023', COLUMN = 'lease';
    END IF;
    PERFORM email.attach_event_payloads(NULL);
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

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.claim_delivery(p_delivery_id text, p_lease interval) FROM PUBLIC;
END
$$;

GRANT EXECUTE ON FUNCTION email.claim_delivery(p_delivery_id text, p_lease interval) TO "email_writer";

DROP FUNCTION email.claim_deliveries(p_delivery_ids text[], p_lease interval);

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

DROP FUNCTION email.audit_workflow_policy();

CREATE OR REPLACE FUNCTION email.audit_updated_deliveries()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    payloads jsonb := email.attached_payloads();
BEGIN
    -- One event per changed row, naming the columns that changed (never their values).
    -- Stamped with the change's own time: the row's updated_at, which the guard sets.
    INSERT INTO email.delivery_events
        (delivery_id, status, attempt, error_code, error_message, payload, changed_columns,
         created_at)
    SELECT n.delivery_id, n.status, n.attempts, n.last_error_code, n.last_error_message,
           payloads -> n.delivery_id, c.changed, n.updated_at
    FROM new_rows AS n
    JOIN old_rows AS o ON o.delivery_id = n.delivery_id
    CROSS JOIN LATERAL (SELECT array_remove(ARRAY[
            CASE WHEN n.workflow IS DISTINCT FROM o.workflow THEN 'workflow' END,
            CASE WHEN n.recipient IS DISTINCT FROM o.recipient THEN 'recipient' END,
            CASE WHEN n.status IS DISTINCT FROM o.status THEN 'status' END,
            CASE WHEN n.attempts IS DISTINCT FROM o.attempts THEN 'attempts' END,
            CASE WHEN n.last_error_code IS DISTINCT FROM o.last_error_code THEN 'last_error_code' END,
            CASE WHEN n.last_error_message IS DISTINCT FROM o.last_error_message THEN 'last_error_message' END,
            CASE WHEN n.last_attempted_at IS DISTINCT FROM o.last_attempted_at THEN 'last_attempted_at' END,
            CASE WHEN n.queued_at IS DISTINCT FROM o.queued_at THEN 'queued_at' END,
            CASE WHEN n.sent_at IS DISTINCT FROM o.sent_at THEN 'sent_at' END,
            CASE WHEN n.metadata IS DISTINCT FROM o.metadata THEN 'metadata' END,
            CASE WHEN n.created_at IS DISTINCT FROM o.created_at THEN 'created_at' END], NULL) AS changed) AS c
    WHERE c.changed <> '{}';
    RETURN NULL;
END
$$;;

DROP TABLE email.workflow_policy_changes;

DROP TABLE email.workflow_policies;

ALTER TABLE email.deliveries DROP COLUMN next_attempt_at;

ALTER TABLE email.deliveries DROP COLUMN lease_expires_at;
