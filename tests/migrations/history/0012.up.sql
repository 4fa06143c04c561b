SET LOCAL lock_timeout = '5s';

SET LOCAL statement_timeout = '60s';

CREATE TABLE email.suppressions (
    address TEXT NOT NULL, 
    reason TEXT NOT NULL, 
    source_delivery_id TEXT, 
    provider TEXT, 
    detail TEXT, 
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    expires_at TIMESTAMP WITH TIME ZONE, 
    created_by TEXT DEFAULT SESSION_USER NOT NULL, 
    CONSTRAINT pk_suppressions PRIMARY KEY (address), 
    CONSTRAINT ck_suppressions_address_format CHECK (char_length(address) <= 320 AND address ~ '^[^@[:space:]]+@[^@[:space:]]+$' AND address = lower(address)), 
    CONSTRAINT ck_suppressions_reason_known CHECK (reason IN ('hard_bounce', 'complaint', 'manual')), 
    CONSTRAINT ck_suppressions_detail_length CHECK (char_length(detail) BETWEEN 1 AND 500), 
    CONSTRAINT ck_suppressions_expires_after_created CHECK (expires_at > created_at)
);

DO $$
BEGIN
    REVOKE ALL ON TABLE email.suppressions FROM PUBLIC;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
        REVOKE ALL ON TABLE email.suppressions FROM "anon";
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        REVOKE ALL ON TABLE email.suppressions FROM "authenticated";
    END IF;
END
$$;

GRANT SELECT ON TABLE email.suppressions TO "email_reader", "email_writer";

ALTER TABLE email.suppressions ENABLE ROW LEVEL SECURITY;

ALTER TABLE email.workflow_policies ADD COLUMN send_despite_suppression TEXT[] DEFAULT '{}'::text[] NOT NULL;

ALTER TABLE email.workflow_policies ADD COLUMN suppress_for INTERVAL;

ALTER TABLE email.workflow_policies ADD CONSTRAINT ck_workflow_policies_send_despite_suppression_known CHECK (send_despite_suppression <@ ARRAY['hard_bounce', 'complaint', 'manual']::text[]);

ALTER TABLE email.workflow_policies ADD CONSTRAINT ck_workflow_policies_suppress_for_range CHECK (suppress_for IS NULL OR suppress_for >= interval '1 hour');

CREATE OR REPLACE FUNCTION email.apply_outcome_events(p_event_ids bigint[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- The owner's internal step: fold matched outcome events into their deliveries'
    -- email.delivery_outcomes row. The outcome only rises (email.outcome_rank): an event
    -- of lower or equal rank than the stored outcome changes only the counters, so any
    -- order of arrival ends in the same outcome. opened / clicked count only for a
    -- workflow whose policy tracks engagement. Then the suppression list follows.
    WITH ev AS (
        SELECT e.delivery_id, d.workflow, e.kind, e.permanent, e.reason, e.provider,
               e.occurred_at, email.outcome_rank(e.kind, e.permanent) AS rank
        FROM email.outcome_events AS e
        JOIN email.deliveries AS d ON d.delivery_id = e.delivery_id
        WHERE e.id = ANY (p_event_ids)
          AND (e.kind NOT IN ('opened', 'clicked')
               OR (email.workflow_policy(d.workflow)).track_engagement)
    ), best AS (
        SELECT DISTINCT ON (ev.delivery_id) ev.*
        FROM ev ORDER BY ev.delivery_id, ev.rank DESC, ev.occurred_at
    ), counts AS (
        SELECT ev.delivery_id, count(*)::integer AS events,
               min(ev.occurred_at) FILTER (WHERE ev.kind IN ('delivered', 'opened', 'clicked'))
                   AS delivered_at
        FROM ev GROUP BY ev.delivery_id
    )
    INSERT INTO email.delivery_outcomes AS o (delivery_id, workflow, outcome, permanent, reason,
        provider, outcome_at, delivered_at, events)
    SELECT b.delivery_id, b.workflow, b.kind, b.permanent, b.reason, b.provider, b.occurred_at,
           c.delivered_at, c.events
    FROM best AS b JOIN counts AS c ON c.delivery_id = b.delivery_id
    ORDER BY b.delivery_id
    ON CONFLICT (delivery_id) DO UPDATE SET
        outcome = CASE WHEN email.outcome_rank(EXCLUDED.outcome, EXCLUDED.permanent)
                            > email.outcome_rank(o.outcome, o.permanent)
                       THEN EXCLUDED.outcome ELSE o.outcome END,
        permanent = CASE WHEN email.outcome_rank(EXCLUDED.outcome, EXCLUDED.permanent)
                              > email.outcome_rank(o.outcome, o.permanent)
                         THEN EXCLUDED.permanent ELSE o.permanent END,
        reason = CASE WHEN email.outcome_rank(EXCLUDED.outcome, EXCLUDED.permanent)
                           > email.outcome_rank(o.outcome, o.permanent)
                      THEN EXCLUDED.reason ELSE o.reason END,
        provider = CASE WHEN email.outcome_rank(EXCLUDED.outcome, EXCLUDED.permanent)
                             > email.outcome_rank(o.outcome, o.permanent)
                        THEN EXCLUDED.provider ELSE o.provider END,
        outcome_at = CASE WHEN email.outcome_rank(EXCLUDED.outcome, EXCLUDED.permanent)
                               > email.outcome_rank(o.outcome, o.permanent)
                          THEN EXCLUDED.outcome_at ELSE o.outcome_at END,
        delivered_at = least(o.delivered_at, EXCLUDED.delivered_at),
        events = o.events + EXCLUDED.events,
        updated_at = now();
    -- Suppression (revision 0012): a hard bounce or a complaint puts the recipient on the
    -- list (for its workflow's policy's suppress_for, NULL: until removed); an entry that
    -- exists keeps the stronger reason (manual > complaint > hard_bounce) and the later
    -- expiry, and an expired one starts afresh.
    INSERT INTO email.suppressions AS s (address, reason, source_delivery_id, provider, detail,
        expires_at)
    SELECT DISTINCT ON (d.recipient) d.recipient,
           CASE WHEN e.kind = 'complained' THEN 'complaint' ELSE 'hard_bounce' END,
           e.delivery_id, e.provider, e.reason,
           now() + (email.workflow_policy(d.workflow)).suppress_for
    FROM email.outcome_events AS e
    JOIN email.deliveries AS d ON d.delivery_id = e.delivery_id
    WHERE e.id = ANY (p_event_ids)
      AND (e.kind = 'complained' OR (e.kind = 'bounced' AND e.permanent))
    ORDER BY d.recipient, e.kind = 'complained' DESC, e.occurred_at
    ON CONFLICT (address) DO UPDATE SET
        reason = CASE WHEN s.expires_at <= now()
                           OR array_position(ARRAY['hard_bounce', 'complaint', 'manual'], EXCLUDED.reason)
                              > array_position(ARRAY['hard_bounce', 'complaint', 'manual'], s.reason)
                      THEN EXCLUDED.reason ELSE s.reason END,
        source_delivery_id = EXCLUDED.source_delivery_id,
        provider = EXCLUDED.provider,
        detail = EXCLUDED.detail,
        created_at = CASE WHEN s.expires_at <= now() THEN now() ELSE s.created_at END,
        expires_at = CASE WHEN s.expires_at <= now() THEN EXCLUDED.expires_at
                          WHEN s.expires_at IS NULL OR EXCLUDED.expires_at IS NULL THEN NULL
                          ELSE greatest(s.expires_at, EXCLUDED.expires_at) END;
    -- A delivery enqueued after a hard-bounce entry and delivered clears the entry (Postal's
    -- behaviour): the mailbox works again. Complaints and manual entries stay until removed.
    DELETE FROM email.suppressions AS s
    USING email.outcome_events AS e
    JOIN email.deliveries AS d ON d.delivery_id = e.delivery_id
    WHERE e.id = ANY (p_event_ids) AND e.kind IN ('delivered', 'opened', 'clicked')
      AND s.address = d.recipient AND s.reason = 'hard_bounce' AND d.queued_at >= s.created_at;
END
$$;;

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
    -- A recipient on the suppression list: the new delivery ends at once in 'suppressed'.
    IF cardinality(created_ids) > 0 THEN
        PERFORM email.suppress_new_deliveries(created_ids);
    END IF;

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

CREATE OR REPLACE FUNCTION email.enqueue_delivery(p_delivery_id text, p_workflow text, p_recipient text, p_metadata jsonb, p_queued_at timestamp with time zone)
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, lease_expires_at timestamp with time zone, next_attempt_at timestamp with time zone, created boolean, conflicts text[])
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    created_id text;
BEGIN
    -- SECURITY DEFINER: the worker holds no write grant on the tables, only EXECUTE on the
    -- lifecycle functions; the guard trigger checks the row as it checks any client's.
    IF octet_length(p_metadata::text) > 15872 THEN
        RAISE EXCEPTION 'metadata is larger than % bytes as JSON', 15872
            USING ERRCODE = '22023', COLUMN = 'metadata';
    END IF;
    PERFORM email.attach_event_payloads(NULL);
    IF EXISTS (SELECT FROM email.suppressions AS s WHERE s.address = p_recipient) THEN
        -- The recipient is on the suppression list (revision 0012): a new delivery ends at
        -- once in 'suppressed' (email.suppress_new_deliveries decides, by expiry and the
        -- workflow's policy). Then the row as the other path returns it.
        INSERT INTO email.deliveries AS d (delivery_id, workflow, recipient, metadata, queued_at)
        VALUES (p_delivery_id, p_workflow, p_recipient, coalesce(p_metadata, '{}'::jsonb),
                coalesce(p_queued_at, now()))
        ON CONFLICT (delivery_id) DO NOTHING
        RETURNING d.delivery_id INTO created_id;
        IF created_id IS NOT NULL THEN
            PERFORM email.suppress_new_deliveries(ARRAY[created_id]);
        END IF;
    ELSE
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
    END IF;
    -- ON CONFLICT waited for a concurrent inserter, so the row is committed and visible now.
    RETURN QUERY
    SELECT d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at, created_id IS NOT NULL,
           array_remove(ARRAY[
               CASE WHEN d.workflow IS DISTINCT FROM p_workflow THEN 'workflow' END,
               CASE WHEN d.recipient IS DISTINCT FROM p_recipient THEN 'recipient' END],
               NULL)
    FROM email.deliveries AS d
    WHERE d.delivery_id = p_delivery_id;
END
$$;;

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
            ('queued', 'dead_letter'), ('queued', 'suppressed'),
            ('in_progress', 'sent'), ('in_progress', 'retrying'), ('in_progress', 'failed'),
            ('in_progress', 'dead_letter'),
            ('retrying', 'in_progress'), ('retrying', 'sent'), ('retrying', 'failed'),
            ('retrying', 'dead_letter'),
            ('failed', 'queued'), ('failed', 'sent'),
            ('dead_letter', 'queued'), ('dead_letter', 'sent'))
$$;;

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
        -- Rows are locked in delivery_id order, so overlapping batches never deadlock;
        -- FOR NO KEY UPDATE (what the UPDATE takes anyway), so an outcome recorded meanwhile
        -- (its foreign key takes KEY SHARE while it holds the message id's advisory lock,
        -- which this report waits for) is not blocked into a deadlock.
        PERFORM FROM email.deliveries AS d WHERE d.delivery_id = ANY (p_delivery_ids)
        ORDER BY d.delivery_id FOR NO KEY UPDATE;
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
        -- Rows are locked in delivery_id order, so overlapping batches never deadlock;
        -- FOR NO KEY UPDATE (what the UPDATE takes anyway), so an outcome recorded meanwhile
        -- (its foreign key takes KEY SHARE while it holds the message id's advisory lock,
        -- which this report waits for) is not blocked into a deadlock.
        PERFORM FROM email.deliveries AS d WHERE d.delivery_id = ANY (p_delivery_ids)
        ORDER BY d.delivery_id FOR NO KEY UPDATE;
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
        -- A suppressed delivery was never claimed: no report can be its truth.
        WHERE d.delivery_id = ANY (p_delivery_ids) AND d.status NOT IN ('sent', 'suppressed')
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
        WHERE f.status IN ('sent', 'failed', 'dead_letter', 'suppressed')
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

CREATE OR REPLACE FUNCTION email.suppress_new_deliveries(p_delivery_ids text[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    hits jsonb;
BEGIN
    -- The owner's internal step of the enqueue functions (revision 0012), for the deliveries
    -- they just created: one whose recipient is on the suppression list (an entry not
    -- expired) ends at once in 'suppressed', unless its workflow's policy sends despite
    -- the entry's reason (send_despite_suppression: a password reset may still go to an
    -- address suppressed for a hard bounce, or the user is locked out). The caller learns
    -- why from last_error_code (SUPPRESSED_HARD_BOUNCE, SUPPRESSED_COMPLAINT,
    -- SUPPRESSED_MANUAL); the audit event carries the entry.
    SELECT jsonb_object_agg(d.delivery_id, jsonb_build_object('suppression', jsonb_build_object(
               'reason', s.reason, 'since', s.created_at, 'expires_at', s.expires_at,
               'source_delivery_id', s.source_delivery_id)))
    INTO hits
    FROM email.deliveries AS d
    JOIN email.suppressions AS s ON s.address = d.recipient
    WHERE d.delivery_id = ANY (p_delivery_ids) AND d.status = 'queued' AND d.attempts = 0
      AND (s.expires_at IS NULL OR s.expires_at > now())
      AND NOT s.reason = ANY ((email.workflow_policy(d.workflow)).send_despite_suppression);
    IF hits IS NULL THEN
        RETURN;
    END IF;
    PERFORM email.attach_event_payloads(hits);
    UPDATE email.deliveries AS d
    SET status = 'suppressed',
        last_error_code = 'SUPPRESSED_' || upper(hits->d.delivery_id->'suppression'->>'reason'),
        last_error_message = format('the recipient is on the suppression list (%s) since %s',
            hits->d.delivery_id->'suppression'->>'reason',
            hits->d.delivery_id->'suppression'->>'since')
    WHERE d.delivery_id IN (SELECT jsonb_object_keys(hits));
END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.suppress_new_deliveries(p_delivery_ids text[]) FROM PUBLIC;
END
$$;

CREATE POLICY suppressions_email_reader_select ON email.suppressions
    AS PERMISSIVE FOR SELECT TO email_reader USING (true);;

CREATE POLICY suppressions_email_writer_select ON email.suppressions
    AS PERMISSIVE FOR SELECT TO email_writer USING (true);;
