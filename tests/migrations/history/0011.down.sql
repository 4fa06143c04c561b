SET LOCAL lock_timeout = '5s';

DO $$
        BEGIN
            IF EXISTS (SELECT FROM email.deliveries WHERE status::text = 'suppressed') THEN
                RAISE EXCEPTION 'deliveries are still suppressed: delete them before '
                                'downgrading below revision 0011'
                    USING ERRCODE = '55000';
            END IF;
        END
        $$;

DROP VIEW email.pending_deliveries;

DROP FUNCTION email.delivery_feed(p_after_xact_id bigint, p_after_event_id bigint, p_limit integer);

DROP FUNCTION email.requeue_delivery(p_delivery_id text, p_reason text);

DROP FUNCTION email.reap_stale_deliveries(p_lease interval, p_max_attempts integer, p_limit integer);

DROP FUNCTION email.mark_delivery_dead_letter(p_delivery_id text, p_reference text);

DROP FUNCTION email.mark_delivery_failed(p_delivery_id text, p_attempt integer, p_error_code text, p_error_message text, p_retryable boolean, p_max_attempts integer, p_payload jsonb, p_provider text, p_provider_message_id text, p_reply_code integer, p_duration_ms integer);

DROP FUNCTION email.mark_delivery_sent(p_delivery_id text, p_attempt integer, p_payload jsonb, p_provider text, p_provider_message_id text, p_reply_code integer, p_duration_ms integer);

DROP FUNCTION email.mark_deliveries_failed(p_delivery_ids text[], p_attempts integer[], p_error_codes text[], p_error_messages text[], p_retryables boolean[], p_max_attempts integer[], p_payloads jsonb[], p_providers text[], p_provider_message_ids text[], p_reply_codes integer[], p_durations_ms integer[]);

DROP FUNCTION email.mark_deliveries_sent(p_delivery_ids text[], p_attempts integer[], p_payloads jsonb[], p_providers text[], p_provider_message_ids text[], p_reply_codes integer[], p_durations_ms integer[]);

DROP FUNCTION email.claim_delivery(p_delivery_id text, p_lease interval);

DROP FUNCTION email.claim_deliveries(p_delivery_ids text[], p_lease interval);

DROP FUNCTION email.enqueue_deliveries(p_delivery_ids text[], p_workflows text[], p_recipients text[], p_metadata jsonb[], p_queued_ats timestamp with time zone[]);

DROP FUNCTION email.enqueue_delivery(p_delivery_id text, p_workflow text, p_recipient text, p_metadata jsonb, p_queued_at timestamp with time zone);

DROP FUNCTION email.raw_delivery_rollups(p_from timestamp with time zone, p_until timestamp with time zone, p_workflow text);

DROP FUNCTION email.failure_outcome(p_workflow text, p_attempts integer, p_metadata jsonb, p_retryable boolean, p_max_attempts integer);

DROP FUNCTION email.is_allowed_transition(old_status email.delivery_status, new_status email.delivery_status);

ALTER TYPE email.delivery_status RENAME TO delivery_status_0011;

CREATE TYPE email.delivery_status AS ENUM ('queued', 'in_progress', 'sent', 'retrying', 'failed', 'dead_letter');

ALTER TABLE email.deliveries ALTER COLUMN status DROP DEFAULT;

ALTER TABLE email.deliveries DROP CONSTRAINT ck_deliveries_sent_at_iff_sent;

ALTER TABLE email.deliveries DROP CONSTRAINT ck_deliveries_lease_iff_in_progress;

ALTER TABLE email.deliveries DROP CONSTRAINT ck_deliveries_next_attempt_only_retrying;

DROP INDEX email.ix_deliveries_finished;

ALTER TABLE email.delivery_events ALTER COLUMN status DROP NOT NULL;

ALTER TABLE email.deliveries ALTER COLUMN status TYPE email.delivery_status USING status::text::email.delivery_status;

ALTER TABLE email.delivery_events ALTER COLUMN status TYPE email.delivery_status USING status::text::email.delivery_status;

ALTER TABLE email.delivery_rollups ALTER COLUMN status TYPE email.delivery_status USING status::text::email.delivery_status;

ALTER TABLE email.delivery_events ALTER COLUMN status SET NOT NULL;

ALTER TABLE email.deliveries ALTER COLUMN status SET DEFAULT 'queued'::email.delivery_status;

ALTER TABLE email.deliveries ADD CONSTRAINT ck_deliveries_sent_at_iff_sent CHECK ((status = 'sent') = (sent_at IS NOT NULL));

ALTER TABLE email.deliveries ADD CONSTRAINT ck_deliveries_lease_iff_in_progress CHECK ((status = 'in_progress') = (lease_expires_at IS NOT NULL));

ALTER TABLE email.deliveries ADD CONSTRAINT ck_deliveries_next_attempt_only_retrying CHECK (next_attempt_at IS NULL OR status = 'retrying');

CREATE INDEX ix_deliveries_finished ON email.deliveries (status, queued_at, delivery_id) WHERE status NOT IN ('queued', 'in_progress', 'retrying');

DROP TYPE email.delivery_status_0011;

CREATE OR REPLACE FUNCTION email.is_allowed_transition(old_status email.delivery_status, new_status email.delivery_status)
RETURNS boolean
LANGUAGE sql
IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    -- Rendered from email_delivery.rules.TRANSITIONS: staying is always allowed.
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

REVOKE EXECUTE ON FUNCTION email.is_allowed_transition FROM PUBLIC;

GRANT EXECUTE ON FUNCTION email.is_allowed_transition TO email_writer, email_reader;

CREATE OR REPLACE FUNCTION email.failure_outcome(p_workflow text, p_attempts integer, p_metadata jsonb, p_retryable boolean, p_max_attempts integer DEFAULT NULL::integer)
RETURNS TABLE(status email.delivery_status, next_attempt_at timestamp with time zone)
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    policy email.workflow_policies := email.workflow_policy(p_workflow);
    failures integer := email.attempts_since_requeue(p_attempts, p_metadata);
BEGIN
    -- Where a failed attempt leaves a delivery (mark_delivery_failed and the reaper): failed
    -- when not retryable; dead_letter once the retry budget (p_max_attempts, else the
    -- workflow's policy) is used up; else retrying, not before now() + the policy's backoff.
    IF NOT coalesce(p_retryable, true) THEN
        RETURN QUERY SELECT 'failed'::email.delivery_status, NULL::timestamptz;
    ELSIF failures >= coalesce(p_max_attempts, policy.max_attempts) THEN
        RETURN QUERY SELECT 'dead_letter'::email.delivery_status, NULL::timestamptz;
    ELSE
        RETURN QUERY SELECT 'retrying'::email.delivery_status,
                            now() + email.retry_delay(policy, failures);
    END IF;
END
$$;;

REVOKE EXECUTE ON FUNCTION email.failure_outcome FROM PUBLIC;

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

REVOKE EXECUTE ON FUNCTION email.raw_delivery_rollups FROM PUBLIC;

GRANT EXECUTE ON FUNCTION email.raw_delivery_rollups TO email_reader;

CREATE OR REPLACE FUNCTION email.enqueue_delivery(p_delivery_id text, p_workflow text, p_recipient text, p_metadata jsonb, p_queued_at timestamp with time zone)
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, lease_expires_at timestamp with time zone, next_attempt_at timestamp with time zone, created boolean, conflicts text[])
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
        RETURNING d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at)
    SELECT inserted.*, true, '{}'::text[] FROM inserted;
    IF FOUND THEN
        RETURN;
    END IF;
    -- ON CONFLICT waited for a concurrent inserter, so the row is committed and visible now.
    RETURN QUERY
    SELECT d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at, false,
           array_remove(ARRAY[
               CASE WHEN d.workflow IS DISTINCT FROM p_workflow THEN 'workflow' END,
               CASE WHEN d.recipient IS DISTINCT FROM p_recipient THEN 'recipient' END],
               NULL)
    FROM email.deliveries AS d
    WHERE d.delivery_id = p_delivery_id;
END
$$;;

REVOKE EXECUTE ON FUNCTION email.enqueue_delivery FROM PUBLIC;

GRANT EXECUTE ON FUNCTION email.enqueue_delivery TO email_writer;

CREATE OR REPLACE FUNCTION email.enqueue_deliveries(p_delivery_ids text[], p_workflows text[], p_recipients text[], p_metadata jsonb[], p_queued_ats timestamp with time zone[])
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, lease_expires_at timestamp with time zone, next_attempt_at timestamp with time zone, created boolean, conflicts text[])
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
    SELECT d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at,
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

REVOKE EXECUTE ON FUNCTION email.enqueue_deliveries FROM PUBLIC;

GRANT EXECUTE ON FUNCTION email.enqueue_deliveries TO email_writer;

CREATE OR REPLACE FUNCTION email.claim_deliveries(p_delivery_ids text[], p_lease interval DEFAULT NULL::interval)
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, lease_expires_at timestamp with time zone, next_attempt_at timestamp with time zone, changed boolean, attempt integer, retry_at timestamp with time zone)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    claimed_ids text[];
BEGIN
    -- SECURITY DEFINER: the worker holds no write grant on the tables, only EXECUTE on the
    -- lifecycle functions; the guard trigger checks the row as it checks any client's.
    -- The one definition of a claim: claim_delivery is its one-id case, and the tracker's
    -- group commit sends many. One row per input position, in input order, each what a
    -- claim of that id alone would have returned had the calls run one after another in that
    -- order (a repeated id is claimed by its first position; the later ones see that live
    -- claim). An unknown id returns no row.
    -- Claimable: queued; retrying once its next_attempt_at has come (before that, retry_at
    -- says when); in_progress whose stored lease_expires_at has passed. A claim is judged by
    -- its own stored expiry, never by this caller's lease, so no worker can take over a live
    -- claim. The new claim lives p_lease, or its workflow's policy's lease.
    IF p_lease IS NOT NULL AND (p_lease <= interval '0' OR p_lease > interval '1 day') THEN
        RAISE EXCEPTION 'lease must be a positive interval of at most %, not %',
            '1 day', p_lease
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
        SET status = 'in_progress', attempts = d.attempts + 1, last_attempted_at = now(),
            lease_expires_at = now() + coalesce(p_lease, (email.workflow_policy(d.workflow)).lease)
        FROM input
        WHERE d.delivery_id = input.delivery_id
          AND ((d.status IN ('queued', 'retrying')
                AND coalesce(d.next_attempt_at, '-infinity') <= now())
               OR (d.status = 'in_progress' AND d.lease_expires_at <= now()))
        RETURNING d.delivery_id
    )
    SELECT coalesce(array_agg(claimed.delivery_id), '{}') INTO claimed_ids FROM claimed;

    RETURN QUERY
    WITH input AS (
        SELECT i.delivery_id, i.pos,
               row_number() OVER (PARTITION BY i.delivery_id ORDER BY i.pos) AS nth
        FROM unnest(p_delivery_ids) WITH ORDINALITY AS i(delivery_id, pos)
    )
    SELECT d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at,
           input.nth = 1 AND d.delivery_id = ANY (claimed_ids),
           CASE WHEN input.nth = 1 AND d.delivery_id = ANY (claimed_ids) THEN d.attempts END,
           CASE WHEN NOT (input.nth = 1 AND d.delivery_id = ANY (claimed_ids))
                     AND d.status = 'retrying' AND d.next_attempt_at > now()
                THEN d.next_attempt_at END
    FROM input
    JOIN email.deliveries AS d ON d.delivery_id = input.delivery_id
    ORDER BY input.pos;
END
$$;;

REVOKE EXECUTE ON FUNCTION email.claim_deliveries FROM PUBLIC;

GRANT EXECUTE ON FUNCTION email.claim_deliveries TO email_writer;

CREATE OR REPLACE FUNCTION email.claim_delivery(p_delivery_id text, p_lease interval DEFAULT NULL::interval)
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, lease_expires_at timestamp with time zone, next_attempt_at timestamp with time zone, changed boolean, attempt integer, retry_at timestamp with time zone)
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    -- One claim: the one-id case of email.claim_deliveries, where the rule lives.
    SELECT * FROM email.claim_deliveries(ARRAY[p_delivery_id], p_lease)
$$;;

REVOKE EXECUTE ON FUNCTION email.claim_delivery FROM PUBLIC;

GRANT EXECUTE ON FUNCTION email.claim_delivery TO email_writer;

CREATE OR REPLACE FUNCTION email.mark_deliveries_sent(p_delivery_ids text[], p_attempts integer[], p_payloads jsonb[], p_providers text[] DEFAULT NULL::text[], p_provider_message_ids text[] DEFAULT NULL::text[], p_reply_codes integer[] DEFAULT NULL::integer[], p_durations_ms integer[] DEFAULT NULL::integer[])
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, lease_expires_at timestamp with time zone, next_attempt_at timestamp with time zone, changed boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    n integer := cardinality(p_delivery_ids);
    updated_ids text[];
    facts jsonb[];
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
    -- The provider facts (revision 0010): each array NULL (none given) or one per id.
    IF coalesce(cardinality(p_providers), n) <> n
       OR coalesce(cardinality(p_provider_message_ids), n) <> n
       OR coalesce(cardinality(p_reply_codes), n) <> n
       OR coalesce(cardinality(p_durations_ms), n) <> n THEN
        RAISE EXCEPTION 'providers, provider_message_ids, reply_codes and durations_ms must be '
                        'NULL or have one item per delivery id'
            USING ERRCODE = '22023', COLUMN = 'providers';
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
    -- The attempt's provider facts, per position (NULL when it has none): typed in
    -- email.delivery_attempts, and on the audit event beside the caller's payload.
    facts := email.attempt_facts(n, p_providers, p_provider_message_ids, p_reply_codes,
                                 p_durations_ms);
    PERFORM email.attach_event_payloads(
        (SELECT jsonb_object_agg(f.delivery_id,
                    coalesce(f.payload, '{}'::jsonb) || coalesce(f.facts, '{}'::jsonb)
                    || jsonb_build_object('reported_attempt', f.attempt))
         FROM (SELECT DISTINCT ON (i.delivery_id) i.delivery_id, i.attempt, i.payload, i.facts
               FROM unnest(p_delivery_ids, p_attempts, p_payloads, facts)
                    WITH ORDINALITY AS i(delivery_id, attempt, payload, facts, pos)
               ORDER BY i.delivery_id, i.pos) AS f));
    WITH updated AS (
        UPDATE email.deliveries AS d
        SET status = 'sent', last_error_code = NULL, last_error_message = NULL
        WHERE d.delivery_id = ANY (p_delivery_ids) AND d.status <> 'sent'
        RETURNING d.delivery_id
    )
    SELECT coalesce(array_agg(updated.delivery_id), '{}') INTO updated_ids FROM updated;
    IF facts IS NOT NULL THEN
        -- Every report of a success keeps its facts (a duplicate send's message id must
        -- still find its delivery), the first position of an id only; then the outcome
        -- events that arrived before their message id was known are matched.
        PERFORM email.record_attempt_facts('sent', p_delivery_ids, p_attempts, facts,
            (SELECT array_agg(DISTINCT i.pos::integer) FROM (
                 SELECT DISTINCT ON (u.delivery_id) u.pos
                 FROM unnest(p_delivery_ids) WITH ORDINALITY AS u(delivery_id, pos)
                 ORDER BY u.delivery_id, u.pos) AS i));
        PERFORM email.match_outcome_events(p_delivery_ids);
    END IF;

    RETURN QUERY
    WITH input AS (
        SELECT i.delivery_id, i.pos,
               row_number() OVER (PARTITION BY i.delivery_id ORDER BY i.pos) AS nth
        FROM unnest(p_delivery_ids) WITH ORDINALITY AS i(delivery_id, pos)
    )
    SELECT d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at,
           input.nth = 1 AND d.delivery_id = ANY (updated_ids)
    FROM input
    JOIN email.deliveries AS d ON d.delivery_id = input.delivery_id
    ORDER BY input.pos;
END
$$;;

REVOKE EXECUTE ON FUNCTION email.mark_deliveries_sent FROM PUBLIC;

GRANT EXECUTE ON FUNCTION email.mark_deliveries_sent TO email_writer;

CREATE OR REPLACE FUNCTION email.mark_deliveries_failed(p_delivery_ids text[], p_attempts integer[], p_error_codes text[], p_error_messages text[], p_retryables boolean[], p_max_attempts integer[], p_payloads jsonb[], p_providers text[] DEFAULT NULL::text[], p_provider_message_ids text[] DEFAULT NULL::text[], p_reply_codes integer[] DEFAULT NULL::integer[], p_durations_ms integer[] DEFAULT NULL::integer[])
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, lease_expires_at timestamp with time zone, next_attempt_at timestamp with time zone, changed boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    n integer := cardinality(p_delivery_ids);
    applied integer[];
    outcomes email.delivery_status[];
    retry_ats timestamp with time zone[];
    updated integer[];
    facts jsonb[];
BEGIN
    -- SECURITY DEFINER: the worker holds no write grant on the tables, only EXECUTE on the
    -- lifecycle functions; the guard trigger checks the row as it checks any client's.
    -- The one definition of a failure report (mark_delivery_failed is its one-id case): one
    -- row per input position, in input order, each what the report alone would have
    -- returned had the calls run one after another in that order. Only the live attempt may
    -- report a failure: of a repeated id, the first position naming the live attempt
    -- applies, and the later ones find the delivery no longer in progress. Where it leaves
    -- the delivery is email.failure_outcome's (a NULL max_attempts: the workflow's policy).
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
    -- The provider facts (revision 0010): each array NULL (none given) or one per id.
    IF coalesce(cardinality(p_providers), n) <> n
       OR coalesce(cardinality(p_provider_message_ids), n) <> n
       OR coalesce(cardinality(p_reply_codes), n) <> n
       OR coalesce(cardinality(p_durations_ms), n) <> n THEN
        RAISE EXCEPTION 'providers, provider_message_ids, reply_codes and durations_ms must be '
                        'NULL or have one item per delivery id'
            USING ERRCODE = '22023', COLUMN = 'providers';
    END IF;
    facts := email.attempt_facts(n, p_providers, p_provider_message_ids, p_reply_codes,
                                 p_durations_ms);
    IF EXISTS (SELECT FROM unnest(p_max_attempts) AS m WHERE m < 1) THEN
        RAISE EXCEPTION 'max_attempts must be at least 1, not %',
            (SELECT m FROM unnest(p_max_attempts) AS m WHERE m < 1 LIMIT 1)
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
    -- The positions that apply (per id, the first naming the live attempt) and where each
    -- leaves its delivery; the update re-checks the attempt: changed is what it did.
    SELECT coalesce(array_agg(f.pos), '{}'), coalesce(array_agg(o.status), '{}'),
           coalesce(array_agg(o.next_attempt_at), '{}')
    INTO applied, outcomes, retry_ats
    FROM (SELECT DISTINCT ON (i.delivery_id) i.pos::integer AS pos, d.workflow, d.attempts,
                 d.metadata
          FROM unnest(p_delivery_ids, p_attempts) WITH ORDINALITY AS i(delivery_id, attempt, pos)
          JOIN email.deliveries AS d ON d.delivery_id = i.delivery_id
          WHERE d.status = 'in_progress' AND d.attempts = i.attempt
          ORDER BY i.delivery_id, i.pos) AS f
    CROSS JOIN LATERAL email.failure_outcome(f.workflow, f.attempts, f.metadata,
                                             p_retryables[f.pos], p_max_attempts[f.pos]) AS o;
    PERFORM email.attach_event_payloads(
        (SELECT jsonb_object_agg(p_delivery_ids[pos],
                    coalesce(p_payloads[pos], '{}'::jsonb) || coalesce(facts[pos], '{}'::jsonb))
         FROM unnest(applied) AS pos
         WHERE p_payloads[pos] IS NOT NULL OR facts[pos] IS NOT NULL));
    WITH changed AS (
        UPDATE email.deliveries AS d
        SET status = a.outcome, next_attempt_at = a.retry_at,
            last_error_code = p_error_codes[a.pos],
            last_error_message = p_error_messages[a.pos]
        FROM unnest(applied, outcomes, retry_ats) AS a(pos, outcome, retry_at)
        WHERE d.delivery_id = p_delivery_ids[a.pos]
          AND d.status = 'in_progress' AND d.attempts = p_attempts[a.pos]
        RETURNING a.pos
    )
    SELECT coalesce(array_agg(changed.pos), '{}') INTO updated FROM changed;
    IF facts IS NOT NULL THEN
        -- A failed attempt's facts count only for the live attempt that reported.
        PERFORM email.record_attempt_facts('failed', p_delivery_ids, p_attempts, facts, updated);
    END IF;

    RETURN QUERY
    SELECT d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at,
           i.pos = ANY (updated)
    FROM unnest(p_delivery_ids) WITH ORDINALITY AS i(delivery_id, pos)
    JOIN email.deliveries AS d ON d.delivery_id = i.delivery_id
    ORDER BY i.pos;
END
$$;;

REVOKE EXECUTE ON FUNCTION email.mark_deliveries_failed FROM PUBLIC;

GRANT EXECUTE ON FUNCTION email.mark_deliveries_failed TO email_writer;

CREATE OR REPLACE FUNCTION email.mark_delivery_sent(p_delivery_id text, p_attempt integer, p_payload jsonb DEFAULT NULL::jsonb, p_provider text DEFAULT NULL::text, p_provider_message_id text DEFAULT NULL::text, p_reply_code integer DEFAULT NULL::integer, p_duration_ms integer DEFAULT NULL::integer)
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, lease_expires_at timestamp with time zone, next_attempt_at timestamp with time zone, changed boolean)
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    -- One success report: the one-id case of email.mark_deliveries_sent, where the rule lives.
    SELECT * FROM email.mark_deliveries_sent(ARRAY[p_delivery_id], ARRAY[p_attempt], ARRAY[p_payload],
        ARRAY[p_provider], ARRAY[p_provider_message_id], ARRAY[p_reply_code], ARRAY[p_duration_ms])
$$;;

REVOKE EXECUTE ON FUNCTION email.mark_delivery_sent FROM PUBLIC;

GRANT EXECUTE ON FUNCTION email.mark_delivery_sent TO email_writer;

CREATE OR REPLACE FUNCTION email.mark_delivery_failed(p_delivery_id text, p_attempt integer, p_error_code text, p_error_message text, p_retryable boolean, p_max_attempts integer DEFAULT NULL::integer, p_payload jsonb DEFAULT NULL::jsonb, p_provider text DEFAULT NULL::text, p_provider_message_id text DEFAULT NULL::text, p_reply_code integer DEFAULT NULL::integer, p_duration_ms integer DEFAULT NULL::integer)
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, lease_expires_at timestamp with time zone, next_attempt_at timestamp with time zone, changed boolean)
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    -- One failure report: the one-id case of email.mark_deliveries_failed, where the rule
    -- lives (a NULL max_attempts: the workflow's policy).
    SELECT * FROM email.mark_deliveries_failed(ARRAY[p_delivery_id], ARRAY[p_attempt],
        ARRAY[p_error_code], ARRAY[p_error_message], ARRAY[p_retryable], ARRAY[p_max_attempts],
        ARRAY[p_payload], ARRAY[p_provider], ARRAY[p_provider_message_id], ARRAY[p_reply_code],
        ARRAY[p_duration_ms])
$$;;

REVOKE EXECUTE ON FUNCTION email.mark_delivery_failed FROM PUBLIC;

GRANT EXECUTE ON FUNCTION email.mark_delivery_failed TO email_writer;

CREATE OR REPLACE FUNCTION email.mark_delivery_dead_letter(p_delivery_id text, p_reference text)
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, lease_expires_at timestamp with time zone, next_attempt_at timestamp with time zone, changed boolean)
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
        RETURNING d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at)
    SELECT updated.*, true FROM updated;
    IF NOT FOUND THEN
        RETURN QUERY
        SELECT d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at, false FROM email.deliveries AS d WHERE d.delivery_id = p_delivery_id;
    END IF;
END
$$;;

REVOKE EXECUTE ON FUNCTION email.mark_delivery_dead_letter FROM PUBLIC;

GRANT EXECUTE ON FUNCTION email.mark_delivery_dead_letter TO email_writer;

CREATE OR REPLACE FUNCTION email.reap_stale_deliveries(p_lease interval DEFAULT NULL::interval, p_max_attempts integer DEFAULT NULL::integer, p_limit integer DEFAULT 1000)
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, lease_expires_at timestamp with time zone, next_attempt_at timestamp with time zone, changed boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    -- SECURITY DEFINER: the worker holds no write grant on the tables, only EXECUTE on the
    -- lifecycle functions; the guard trigger checks the row as it checks any client's.
    -- Claims whose stored lease_expires_at has passed go back to retrying (with the policy's
    -- backoff) or, with the retry budget used up (p_max_attempts, else the workflow's
    -- policy), to dead_letter: email.failure_outcome decides, as for a reported failure.
    -- p_lease is not used since revision 0008 (each claim stores its own expiry, so no
    -- reaper can judge a live claim expired); it stays so existing calls keep working.
    IF p_max_attempts IS NOT NULL AND p_max_attempts < 1 THEN
        RAISE EXCEPTION 'max_attempts must be at least 1, not %', p_max_attempts
            USING ERRCODE = '22023', COLUMN = 'max_attempts';
    END IF;
    IF p_limit IS NULL OR p_limit < 1 THEN
        RAISE EXCEPTION 'limit must be at least 1, not %', p_limit
            USING ERRCODE = '22023', COLUMN = 'limit';
    END IF;
    PERFORM email.attach_event_payloads(NULL);
    -- SKIP LOCKED: concurrent reapers (and a claimer taking the row over) split the work;
    -- the lock re-checks the expiry on the newest row version.
    RETURN QUERY
    WITH stale AS (
        SELECT d.delivery_id, d.workflow, d.attempts, d.metadata, d.lease_expires_at
        FROM email.deliveries AS d
        WHERE d.status = 'in_progress' AND d.lease_expires_at <= now()
        ORDER BY d.lease_expires_at
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ),
    decided AS (
        SELECT stale.*, o.status AS outcome, o.next_attempt_at AS retry_at
        FROM stale
        CROSS JOIN LATERAL email.failure_outcome(stale.workflow, stale.attempts, stale.metadata,
                                                 true, p_max_attempts) AS o
    ),
    reaped AS (
        UPDATE email.deliveries AS d
        SET status = decided.outcome, next_attempt_at = decided.retry_at,
            last_error_code = 'LEASE_EXPIRED',
            last_error_message = format(
                'attempt %s claimed at %s got no report before its lease expired at %s',
                d.attempts, d.last_attempted_at, decided.lease_expires_at)
        FROM decided
        WHERE d.delivery_id = decided.delivery_id
        RETURNING d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at)
    SELECT reaped.*, true FROM reaped;
END
$$;;

REVOKE EXECUTE ON FUNCTION email.reap_stale_deliveries FROM PUBLIC;

GRANT EXECUTE ON FUNCTION email.reap_stale_deliveries TO email_writer;

CREATE OR REPLACE FUNCTION email.requeue_delivery(p_delivery_id text, p_reason text)
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, lease_expires_at timestamp with time zone, next_attempt_at timestamp with time zone, changed boolean)
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
        RETURNING d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at)
    SELECT updated.*, true FROM updated;
    IF NOT FOUND THEN
        RETURN QUERY
        SELECT d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at, false FROM email.deliveries AS d WHERE d.delivery_id = p_delivery_id;
    END IF;
END
$$;;

REVOKE EXECUTE ON FUNCTION email.requeue_delivery FROM PUBLIC;

CREATE OR REPLACE FUNCTION email.delivery_feed(p_after_xact_id bigint DEFAULT 0, p_after_event_id bigint DEFAULT 0, p_limit integer DEFAULT 1000)
RETURNS TABLE(xact_id bigint, id bigint, delivery_id text, status email.delivery_status, attempt integer, error_code text, error_message text, payload jsonb, changed_columns text[], created_at timestamp with time zone)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    legacy integer := 0;
BEGIN
    -- The change feed: every audit event exactly once, in transaction order, after the
    -- cursor (p_after_xact_id, p_after_event_id). Identity values are taken at insert, not at
    -- commit, so "id > last seen" skips an event whose transaction commits after a higher id
    -- was read. Here a page holds only events of transactions below the snapshot's xmin:
    -- every one of those has ended (committed or rolled back), and every transaction that
    -- starts later gets a higher id, so nothing can ever appear behind the cursor. The order
    -- (xact_id, id) is the btree ix_delivery_events_xact_id_id. xact_id is the 64-bit
    -- pg_current_xact_id() (epoch and xid): no wraparound. SECURITY INVOKER: the caller's
    -- own SELECT right and policies on delivery_events apply (email_reader, email_writer).
    IF p_limit IS NULL OR p_limit < 1 OR p_limit > 10000 THEN
        RAISE EXCEPTION 'p_limit must be between 1 and 10000, not %', p_limit
            USING ERRCODE = '22023', COLUMN = 'p_limit';
    END IF;
    -- Events written before revision 0006 have no xact_id: all committed long before this
    -- function existed, they come first, as xact_id 0, in id order.
    IF coalesce(p_after_xact_id, 0) = 0 THEN
        RETURN QUERY
        SELECT 0::bigint, e.id, e.delivery_id, e.status, e.attempt, e.error_code,
               e.error_message, e.payload, e.changed_columns, e.created_at
        FROM email.delivery_events AS e
        WHERE e.xact_id IS NULL AND e.id > coalesce(p_after_event_id, 0)
        ORDER BY e.id
        LIMIT p_limit;
        GET DIAGNOSTICS legacy = ROW_COUNT;
        IF legacy >= p_limit THEN
            RETURN;
        END IF;
        p_after_event_id := 0;
    END IF;
    -- One statement: the xmin and the rows come from the same snapshot.
    RETURN QUERY
    SELECT e.xact_id, e.id, e.delivery_id, e.status, e.attempt, e.error_code,
           e.error_message, e.payload, e.changed_columns, e.created_at
    FROM email.delivery_events AS e
    WHERE (e.xact_id, e.id) > (coalesce(p_after_xact_id, 0), coalesce(p_after_event_id, 0))
      AND e.xact_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
    ORDER BY e.xact_id, e.id
    LIMIT p_limit - legacy;
END
$$;;

REVOKE EXECUTE ON FUNCTION email.delivery_feed FROM PUBLIC;

GRANT EXECUTE ON FUNCTION email.delivery_feed TO email_reader, email_writer;

CREATE OR REPLACE VIEW email.pending_deliveries WITH (security_invoker = true) AS
SELECT delivery_id, workflow, recipient, status, attempts, last_error_code,
       queued_at, last_attempted_at, updated_at, now() - updated_at AS idle_for,
       lease_expires_at, next_attempt_at,
       -- A claim past the expiry it stored (revision 0008): the reaper's next catch.
       coalesce(status = 'in_progress' AND lease_expires_at <= now(), false) AS claim_expired
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
