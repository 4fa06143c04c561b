SET LOCAL lock_timeout = '5s';

SET LOCAL statement_timeout = '60s';

CREATE TABLE email.delivery_attempts (
    delivery_id TEXT NOT NULL, 
    attempt INTEGER NOT NULL, 
    result TEXT NOT NULL, 
    workflow TEXT NOT NULL, 
    provider TEXT, 
    provider_message_id TEXT, 
    reply_code INTEGER, 
    duration_ms INTEGER, 
    reported_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    CONSTRAINT pk_delivery_attempts PRIMARY KEY (delivery_id, attempt, result), 
    CONSTRAINT ck_delivery_attempts_provider_format CHECK (provider ~ '^[a-z][a-z0-9-]{0,31}$'), 
    CONSTRAINT ck_delivery_attempts_provider_message_id_format CHECK (provider_message_id IS NULL OR (provider IS NOT NULL AND provider_message_id ~ '^[!-~]{1,150}$')), 
    CONSTRAINT ck_delivery_attempts_result_known CHECK (result IN ('sent', 'failed')), 
    CONSTRAINT ck_delivery_attempts_attempt_non_negative CHECK (attempt >= 0), 
    CONSTRAINT ck_delivery_attempts_duration_ms_non_negative CHECK (duration_ms >= 0), 
    CONSTRAINT ck_delivery_attempts_reply_code_range CHECK (reply_code BETWEEN 100 AND 599), 
    CONSTRAINT fk_delivery_attempts_delivery_id_deliveries FOREIGN KEY(delivery_id) REFERENCES email.deliveries (delivery_id) ON DELETE CASCADE
);

CREATE INDEX ix_delivery_attempts_reported_at ON email.delivery_attempts (reported_at);

CREATE UNIQUE INDEX ix_delivery_attempts_provider_message_id ON email.delivery_attempts (provider, provider_message_id) WHERE provider_message_id IS NOT NULL;

CREATE TABLE email.delivery_outcomes (
    delivery_id TEXT NOT NULL, 
    workflow TEXT NOT NULL, 
    outcome TEXT NOT NULL, 
    permanent BOOLEAN, 
    reason TEXT, 
    provider TEXT NOT NULL, 
    outcome_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    delivered_at TIMESTAMP WITH TIME ZONE, 
    events INTEGER DEFAULT 1 NOT NULL, 
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    CONSTRAINT pk_delivery_outcomes PRIMARY KEY (delivery_id), 
    CONSTRAINT ck_delivery_outcomes_outcome_known CHECK (outcome IN ('deferred', 'delivered', 'opened', 'clicked', 'bounced', 'rejected', 'complained')), 
    CONSTRAINT ck_delivery_outcomes_permanent_only_bounced CHECK (permanent IS NULL OR outcome = 'bounced'), 
    CONSTRAINT ck_delivery_outcomes_events_positive CHECK (events >= 1), 
    CONSTRAINT fk_delivery_outcomes_delivery_id_deliveries FOREIGN KEY(delivery_id) REFERENCES email.deliveries (delivery_id) ON DELETE CASCADE
);

CREATE INDEX ix_delivery_outcomes_outcome_at ON email.delivery_outcomes (outcome_at);

CREATE TABLE email.outcome_events (
    id BIGINT GENERATED ALWAYS AS IDENTITY, 
    provider TEXT NOT NULL, 
    event_id TEXT NOT NULL, 
    kind TEXT NOT NULL, 
    permanent BOOLEAN, 
    occurred_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    provider_message_id TEXT, 
    echoed_delivery_id TEXT, 
    delivery_id TEXT, 
    recipient TEXT, 
    reason TEXT, 
    smtp_code INTEGER, 
    provider_event_type TEXT, 
    received_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    matched_at TIMESTAMP WITH TIME ZONE, 
    CONSTRAINT pk_outcome_events PRIMARY KEY (id), 
    CONSTRAINT ck_outcome_events_echoed_delivery_id_format CHECK (echoed_delivery_id ~ '^[A-Za-z0-9][A-Za-z0-9._:/@+=-]{0,199}$'), 
    CONSTRAINT ck_outcome_events_kind_known CHECK (kind IN ('deferred', 'delivered', 'opened', 'clicked', 'bounced', 'rejected', 'complained')), 
    CONSTRAINT ck_outcome_events_permanent_only_bounced CHECK (permanent IS NULL OR kind = 'bounced'), 
    CONSTRAINT ck_outcome_events_provider_format CHECK (provider ~ '^[a-z][a-z0-9-]{0,31}$'), 
    CONSTRAINT ck_outcome_events_provider_message_id_format CHECK (provider_message_id ~ '^[!-~]{1,150}$'), 
    CONSTRAINT ck_outcome_events_matched_iff_delivery CHECK ((delivery_id IS NULL) = (matched_at IS NULL)), 
    CONSTRAINT ck_outcome_events_event_id_length CHECK (char_length(event_id) BETWEEN 1 AND 256), 
    CONSTRAINT ck_outcome_events_provider_event_type_length CHECK (char_length(provider_event_type) BETWEEN 1 AND 100), 
    CONSTRAINT ck_outcome_events_reason_length CHECK (char_length(reason) BETWEEN 1 AND 500), 
    CONSTRAINT ck_outcome_events_recipient_format CHECK (char_length(recipient) <= 320 AND recipient = lower(recipient)), 
    CONSTRAINT ck_outcome_events_names_a_message CHECK (provider_message_id IS NOT NULL OR echoed_delivery_id IS NOT NULL), 
    CONSTRAINT ck_outcome_events_smtp_code_range CHECK (smtp_code BETWEEN 200 AND 599), 
    CONSTRAINT fk_outcome_events_delivery_id_deliveries FOREIGN KEY(delivery_id) REFERENCES email.deliveries (delivery_id) ON DELETE CASCADE, 
    CONSTRAINT uq_outcome_events_provider_event UNIQUE (provider, event_id)
);

CREATE INDEX ix_outcome_events_delivery_id_occurred_at ON email.outcome_events (delivery_id, occurred_at);

CREATE INDEX ix_outcome_events_unmatched_delivery ON email.outcome_events (echoed_delivery_id) WHERE delivery_id IS NULL;

CREATE INDEX ix_outcome_events_unmatched_message ON email.outcome_events (provider, provider_message_id) WHERE delivery_id IS NULL;

ALTER TABLE email.workflow_policies ADD COLUMN track_engagement BOOLEAN DEFAULT false NOT NULL;

DO $$
BEGIN
    REVOKE ALL ON TABLE email.delivery_attempts FROM PUBLIC;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
        REVOKE ALL ON TABLE email.delivery_attempts FROM "anon";
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        REVOKE ALL ON TABLE email.delivery_attempts FROM "authenticated";
    END IF;
END
$$;

GRANT SELECT ON TABLE email.delivery_attempts TO "email_reader", "email_writer";

ALTER TABLE email.delivery_attempts ENABLE ROW LEVEL SECURITY;

DO $$
BEGIN
    REVOKE ALL ON TABLE email.outcome_events FROM PUBLIC;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
        REVOKE ALL ON TABLE email.outcome_events FROM "anon";
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        REVOKE ALL ON TABLE email.outcome_events FROM "authenticated";
    END IF;
END
$$;

GRANT SELECT ON TABLE email.outcome_events TO "email_reader", "email_writer";

ALTER TABLE email.outcome_events ENABLE ROW LEVEL SECURITY;

DO $$
BEGIN
    REVOKE ALL ON TABLE email.delivery_outcomes FROM PUBLIC;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
        REVOKE ALL ON TABLE email.delivery_outcomes FROM "anon";
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        REVOKE ALL ON TABLE email.delivery_outcomes FROM "authenticated";
    END IF;
END
$$;

GRANT SELECT ON TABLE email.delivery_outcomes TO "email_reader", "email_writer";

ALTER TABLE email.delivery_outcomes ENABLE ROW LEVEL SECURITY;

CREATE OR REPLACE FUNCTION email.attempt_facts(p_count integer, p_providers text[], p_provider_message_ids text[], p_reply_codes integer[], p_durations_ms integer[])
RETURNS jsonb[]
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- The provider facts of each reported attempt as a JSON object (its keys those given),
    -- NULL for a position without any, and NULL altogether when no array was given: a
    -- report without facts pays nothing more.
    SELECT CASE
        WHEN coalesce(p_providers, p_provider_message_ids) IS NULL
             AND coalesce(p_reply_codes, p_durations_ms) IS NULL THEN NULL
        ELSE (SELECT array_agg(nullif(jsonb_strip_nulls(jsonb_build_object(
                         'provider', p_providers[i],
                         'provider_message_id', p_provider_message_ids[i],
                         'reply_code', p_reply_codes[i],
                         'duration_ms', p_durations_ms[i])), '{}'::jsonb) ORDER BY i)
              FROM generate_series(1, p_count) AS i)
    END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.attempt_facts(p_count integer, p_providers text[], p_provider_message_ids text[], p_reply_codes integer[], p_durations_ms integer[]) FROM PUBLIC;
END
$$;

CREATE OR REPLACE FUNCTION email.outcome_rank(p_outcome text, p_permanent boolean)
RETURNS integer
LANGUAGE sql
IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    -- The precedence of outcomes (email_delivery.providers.events.OutcomeKind): a delivery's
    -- outcome is its event of highest rank and never falls. A permanent bounce outranks a
    -- transient (or undetermined) one.
    SELECT CASE p_outcome
        WHEN 'deferred' THEN 10
        WHEN 'delivered' THEN 20
        WHEN 'opened' THEN 30
        WHEN 'clicked' THEN 40
        WHEN 'bounced' THEN CASE WHEN p_permanent THEN 51 ELSE 50 END
        WHEN 'rejected' THEN 60
        WHEN 'complained' THEN 70
    END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.outcome_rank(p_outcome text, p_permanent boolean) FROM PUBLIC;
END
$$;

GRANT EXECUTE ON FUNCTION email.outcome_rank(p_outcome text, p_permanent boolean) TO "email_writer", "email_reader";

CREATE OR REPLACE FUNCTION email.provider_message_lock(p_provider text, p_provider_message_id text)
RETURNS bigint
LANGUAGE sql
IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    -- The advisory lock key of one provider message id (see record_attempt_facts).
    SELECT hashtextextended('email.provider_message:' || p_provider || ':' || p_provider_message_id, 0)
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.provider_message_lock(p_provider text, p_provider_message_id text) FROM PUBLIC;
END
$$;

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
    -- workflow whose policy tracks engagement.
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
END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.apply_outcome_events(p_event_ids bigint[]) FROM PUBLIC;
END
$$;

DROP FUNCTION email.mark_deliveries_failed(p_delivery_ids text[], p_attempts integer[], p_error_codes text[], p_error_messages text[], p_retryables boolean[], p_max_attempts integer[], p_payloads jsonb[]);

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

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.mark_deliveries_failed(p_delivery_ids text[], p_attempts integer[], p_error_codes text[], p_error_messages text[], p_retryables boolean[], p_max_attempts integer[], p_payloads jsonb[], p_providers text[], p_provider_message_ids text[], p_reply_codes integer[], p_durations_ms integer[]) FROM PUBLIC;
END
$$;

GRANT EXECUTE ON FUNCTION email.mark_deliveries_failed(p_delivery_ids text[], p_attempts integer[], p_error_codes text[], p_error_messages text[], p_retryables boolean[], p_max_attempts integer[], p_payloads jsonb[], p_providers text[], p_provider_message_ids text[], p_reply_codes integer[], p_durations_ms integer[]) TO "email_writer";

DROP FUNCTION email.mark_deliveries_sent(p_delivery_ids text[], p_attempts integer[], p_payloads jsonb[]);

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

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.mark_deliveries_sent(p_delivery_ids text[], p_attempts integer[], p_payloads jsonb[], p_providers text[], p_provider_message_ids text[], p_reply_codes integer[], p_durations_ms integer[]) FROM PUBLIC;
END
$$;

GRANT EXECUTE ON FUNCTION email.mark_deliveries_sent(p_delivery_ids text[], p_attempts integer[], p_payloads jsonb[], p_providers text[], p_provider_message_ids text[], p_reply_codes integer[], p_durations_ms integer[]) TO "email_writer";

DROP FUNCTION email.mark_delivery_failed(p_delivery_id text, p_attempt integer, p_error_code text, p_error_message text, p_retryable boolean, p_max_attempts integer, p_payload jsonb);

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

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.mark_delivery_failed(p_delivery_id text, p_attempt integer, p_error_code text, p_error_message text, p_retryable boolean, p_max_attempts integer, p_payload jsonb, p_provider text, p_provider_message_id text, p_reply_code integer, p_duration_ms integer) FROM PUBLIC;
END
$$;

GRANT EXECUTE ON FUNCTION email.mark_delivery_failed(p_delivery_id text, p_attempt integer, p_error_code text, p_error_message text, p_retryable boolean, p_max_attempts integer, p_payload jsonb, p_provider text, p_provider_message_id text, p_reply_code integer, p_duration_ms integer) TO "email_writer";

DROP FUNCTION email.mark_delivery_sent(p_delivery_id text, p_attempt integer, p_payload jsonb);

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

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.mark_delivery_sent(p_delivery_id text, p_attempt integer, p_payload jsonb, p_provider text, p_provider_message_id text, p_reply_code integer, p_duration_ms integer) FROM PUBLIC;
END
$$;

GRANT EXECUTE ON FUNCTION email.mark_delivery_sent(p_delivery_id text, p_attempt integer, p_payload jsonb, p_provider text, p_provider_message_id text, p_reply_code integer, p_duration_ms integer) TO "email_writer";

CREATE OR REPLACE FUNCTION email.match_outcome_events(p_delivery_ids text[] DEFAULT NULL::text[])
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    matched bigint[];
BEGIN
    -- SECURITY DEFINER: run by the worker (or a schedule) and by mark_deliveries_sent.
    -- Outcome events that matched no delivery when they arrived (the provider's event came
    -- before mark_sent stored its message id, or echoed a delivery id not enqueued yet)
    -- are matched now: those of the given deliveries, or every one (NULL). Returns how
    -- many were matched; the rest stay listed by email.unmatched_outcome_events.
    IF NOT EXISTS (SELECT FROM email.outcome_events AS e WHERE e.delivery_id IS NULL) THEN
        RETURN 0;
    END IF;
    WITH found AS (
        SELECT e.id, coalesce(a.delivery_id, d.delivery_id) AS delivery_id
        FROM email.outcome_events AS e
        LEFT JOIN email.delivery_attempts AS a
               ON a.provider = e.provider AND a.provider_message_id = e.provider_message_id
        LEFT JOIN email.deliveries AS d ON d.delivery_id = e.echoed_delivery_id
        WHERE e.delivery_id IS NULL
          AND (a.delivery_id IS NOT NULL OR d.delivery_id IS NOT NULL)
          AND (p_delivery_ids IS NULL
               OR coalesce(a.delivery_id, d.delivery_id) = ANY (p_delivery_ids))
        ORDER BY e.id
        FOR UPDATE OF e SKIP LOCKED
    ), updated AS (
        UPDATE email.outcome_events AS e
        SET delivery_id = found.delivery_id, matched_at = now()
        FROM found
        WHERE e.id = found.id AND e.delivery_id IS NULL
        RETURNING e.id
    )
    SELECT coalesce(array_agg(updated.id), '{}') INTO matched FROM updated;
    IF cardinality(matched) > 0 THEN
        PERFORM email.apply_outcome_events(matched);
    END IF;
    RETURN cardinality(matched);
END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.match_outcome_events(p_delivery_ids text[]) FROM PUBLIC;
END
$$;

GRANT EXECUTE ON FUNCTION email.match_outcome_events(p_delivery_ids text[]) TO "email_writer";

CREATE OR REPLACE FUNCTION email.provider_metrics(p_since timestamp with time zone, p_until timestamp with time zone DEFAULT now())
RETURNS TABLE(provider text, workflow text, attempts bigint, accepted bigint, failed bigint, delivered bigint, deferred bigint, bounced bigint, hard_bounced bigint, complained bigint, rejected bigint, delivery_rate double precision, bounce_rate double precision, complaint_rate double precision, deferral_rate double precision, failure_rate double precision, p50_send_ms double precision, p95_send_ms double precision, p50_sent_to_delivered_s double precision, p95_sent_to_delivered_s double precision)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- Per provider and workflow, the attempts reported with a provider in [since, until)
    -- (email.delivery_attempts, by reported_at): how many it accepted (sent) or failed, what
    -- became of the accepted ones (their current outcome, email.delivery_outcomes), the send
    -- duration's percentiles and the time from sent to delivered. Rates are shares of the
    -- accepted attempts (failure_rate: of all attempts); NULL when there are none. What a
    -- worker orders its providers by (tracker.provider_health); SECURITY INVOKER: the
    -- caller's own SELECT on the tables decides.
    SELECT a.provider, a.workflow,
           count(*) AS attempts,
           count(*) FILTER (WHERE a.result = 'sent') AS accepted,
           count(*) FILTER (WHERE a.result = 'failed') AS failed,
           count(*) FILTER (WHERE o.delivered_at IS NOT NULL) AS delivered,
           count(*) FILTER (WHERE o.outcome = 'deferred') AS deferred,
           count(*) FILTER (WHERE o.outcome = 'bounced') AS bounced,
           count(*) FILTER (WHERE o.outcome = 'bounced' AND o.permanent) AS hard_bounced,
           count(*) FILTER (WHERE o.outcome = 'complained') AS complained,
           count(*) FILTER (WHERE o.outcome = 'rejected') AS rejected,
           (count(*) FILTER (WHERE o.delivered_at IS NOT NULL))::double precision
               / nullif(count(*) FILTER (WHERE a.result = 'sent'), 0),
           (count(*) FILTER (WHERE o.outcome = 'bounced'))::double precision
               / nullif(count(*) FILTER (WHERE a.result = 'sent'), 0),
           (count(*) FILTER (WHERE o.outcome = 'complained'))::double precision
               / nullif(count(*) FILTER (WHERE a.result = 'sent'), 0),
           (count(*) FILTER (WHERE o.outcome = 'deferred'))::double precision
               / nullif(count(*) FILTER (WHERE a.result = 'sent'), 0),
           (count(*) FILTER (WHERE a.result = 'failed'))::double precision / count(*),
           percentile_cont(0.5) WITHIN GROUP (ORDER BY a.duration_ms),
           percentile_cont(0.95) WITHIN GROUP (ORDER BY a.duration_ms),
           percentile_cont(0.5) WITHIN GROUP (
               ORDER BY extract(epoch FROM o.delivered_at - a.reported_at)),
           percentile_cont(0.95) WITHIN GROUP (
               ORDER BY extract(epoch FROM o.delivered_at - a.reported_at))
    FROM email.delivery_attempts AS a
    LEFT JOIN email.delivery_outcomes AS o
           ON a.result = 'sent' AND o.delivery_id = a.delivery_id
    WHERE a.reported_at >= p_since AND a.reported_at < p_until AND a.provider IS NOT NULL
    GROUP BY a.provider, a.workflow
    ORDER BY a.provider, a.workflow
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.provider_metrics(p_since timestamp with time zone, p_until timestamp with time zone) FROM PUBLIC;
END
$$;

GRANT EXECUTE ON FUNCTION email.provider_metrics(p_since timestamp with time zone, p_until timestamp with time zone) TO "email_writer", "email_reader";

CREATE OR REPLACE FUNCTION email.record_attempt_facts(p_result text, p_delivery_ids text[], p_attempts integer[], p_facts jsonb[], p_positions integer[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- The owner's internal step of mark_deliveries_sent / mark_deliveries_failed: the
    -- facts of the given positions into email.delivery_attempts. A report repeated with the
    -- same attempt, or a message id another delivery already holds, adds nothing.
    -- Each message id is first locked (transaction-scoped, in key order, so batches never
    -- deadlock): email.record_delivery_outcome takes the same lock before it looks the id
    -- up, so an outcome arriving during this report is either matched by it or found by
    -- the match that follows it, never missed by both.
    PERFORM pg_advisory_xact_lock(k.key)
    FROM (SELECT DISTINCT email.provider_message_lock(p_facts[pos]->>'provider',
                                                      p_facts[pos]->>'provider_message_id') AS key
          FROM unnest(p_positions) AS pos
          WHERE p_facts[pos] ? 'provider_message_id') AS k
    ORDER BY k.key;
    INSERT INTO email.delivery_attempts AS a (delivery_id, attempt, result, workflow, provider,
        provider_message_id, reply_code, duration_ms)
    SELECT d.delivery_id, p_attempts[pos], p_result, d.workflow, p_facts[pos]->>'provider',
           p_facts[pos]->>'provider_message_id', (p_facts[pos]->>'reply_code')::integer,
           (p_facts[pos]->>'duration_ms')::integer
    FROM unnest(p_positions) AS pos
    JOIN email.deliveries AS d ON d.delivery_id = p_delivery_ids[pos]
    WHERE p_facts[pos] IS NOT NULL
    ORDER BY d.delivery_id
    ON CONFLICT DO NOTHING;
END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.record_attempt_facts(p_result text, p_delivery_ids text[], p_attempts integer[], p_facts jsonb[], p_positions integer[]) FROM PUBLIC;
END
$$;

CREATE OR REPLACE FUNCTION email.record_delivery_outcome(p_provider text, p_event_id text, p_kind text, p_occurred_at timestamp with time zone, p_provider_message_id text DEFAULT NULL::text, p_delivery_id text DEFAULT NULL::text, p_permanent boolean DEFAULT NULL::boolean, p_reason text DEFAULT NULL::text, p_smtp_code integer DEFAULT NULL::integer, p_recipient text DEFAULT NULL::text, p_provider_event_type text DEFAULT NULL::text)
RETURNS TABLE(delivery_id text, recorded boolean, matched boolean, outcome text, permanent boolean, outcome_changed boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    found_id text;
    event_row_id bigint;
    before_rank integer;
    after_rank integer;
BEGIN
    -- SECURITY DEFINER: the worker (email_writer) records provider events only through
    -- this function. One provider event (provider, event_id) is recorded once: a retried
    -- webhook returns recorded = false and changes nothing. The event is matched to its
    -- delivery by the provider's message id (stored by mark_sent), else by the delivery id
    -- the provider echoed back; an event matching neither is kept (matched = false) and
    -- matched when its id arrives (mark_sent, email.match_outcome_events). The delivery's
    -- status is untouched: its outcome is email.delivery_outcomes, whose outcome only rises.
    IF p_provider IS NULL OR p_event_id IS NULL OR p_kind IS NULL OR p_occurred_at IS NULL THEN
        RAISE EXCEPTION 'provider, event_id, kind and occurred_at are required'
            USING ERRCODE = '22023', COLUMN = CASE
                WHEN p_provider IS NULL THEN 'provider' WHEN p_event_id IS NULL THEN 'event_id'
                WHEN p_kind IS NULL THEN 'kind' ELSE 'occurred_at' END;
    END IF;
    IF email.outcome_rank(p_kind, p_permanent) IS NULL THEN
        RAISE EXCEPTION 'unknown outcome kind %', p_kind
            USING ERRCODE = '22023', COLUMN = 'kind',
                  HINT = 'one of deferred, delivered, opened, clicked, bounced, rejected, complained';
    END IF;
    IF p_provider_message_id IS NULL AND p_delivery_id IS NULL THEN
        RAISE EXCEPTION 'an outcome names its provider_message_id or its delivery_id'
            USING ERRCODE = '22023', COLUMN = 'provider_message_id';
    END IF;
    IF p_provider_message_id IS NOT NULL THEN
        -- The lock mark_sent takes while it stores this id: see email.record_attempt_facts.
        PERFORM pg_advisory_xact_lock(email.provider_message_lock(p_provider, p_provider_message_id));
        SELECT a.delivery_id INTO found_id FROM email.delivery_attempts AS a
        WHERE a.provider = p_provider AND a.provider_message_id = p_provider_message_id;
    END IF;
    IF found_id IS NULL AND p_delivery_id IS NOT NULL THEN
        SELECT d.delivery_id INTO found_id FROM email.deliveries AS d
        WHERE d.delivery_id = p_delivery_id;
    END IF;
    IF found_id IS NOT NULL AND p_kind IN ('opened', 'clicked')
       AND NOT (SELECT (email.workflow_policy(d.workflow)).track_engagement
                FROM email.deliveries AS d WHERE d.delivery_id = found_id) THEN
        -- The workflow does not track engagement: nothing is stored about it.
        RETURN QUERY SELECT found_id, false, true, o.outcome, o.permanent, false
            FROM (SELECT) AS one LEFT JOIN email.delivery_outcomes AS o ON o.delivery_id = found_id;
        RETURN;
    END IF;
    SELECT email.outcome_rank(o.outcome, o.permanent) INTO before_rank
    FROM email.delivery_outcomes AS o WHERE o.delivery_id = found_id;
    INSERT INTO email.outcome_events AS e (provider, event_id, kind, permanent, occurred_at,
        provider_message_id, echoed_delivery_id, delivery_id, recipient, reason, smtp_code,
        provider_event_type, matched_at)
    VALUES (p_provider, p_event_id, p_kind, p_permanent, p_occurred_at, p_provider_message_id,
        p_delivery_id, found_id, p_recipient,
        left(email.sanitize_error_message(p_reason), 500),
        p_smtp_code, p_provider_event_type, CASE WHEN found_id IS NOT NULL THEN now() END)
    ON CONFLICT (provider, event_id) DO NOTHING
    RETURNING e.id INTO event_row_id;
    IF event_row_id IS NULL THEN
        -- A duplicate: report what the first recording left.
        RETURN QUERY SELECT coalesce(e.delivery_id, found_id), false, e.delivery_id IS NOT NULL,
                            o.outcome, o.permanent, false
            FROM email.outcome_events AS e
            LEFT JOIN email.delivery_outcomes AS o ON o.delivery_id = e.delivery_id
            WHERE e.provider = p_provider AND e.event_id = p_event_id;
        RETURN;
    END IF;
    IF found_id IS NOT NULL THEN
        PERFORM email.apply_outcome_events(ARRAY[event_row_id]);
    END IF;
    SELECT email.outcome_rank(o.outcome, o.permanent) INTO after_rank
    FROM email.delivery_outcomes AS o WHERE o.delivery_id = found_id;
    RETURN QUERY SELECT found_id, true, found_id IS NOT NULL, o.outcome, o.permanent,
                        after_rank IS DISTINCT FROM before_rank
        FROM (SELECT) AS one LEFT JOIN email.delivery_outcomes AS o ON o.delivery_id = found_id;
END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.record_delivery_outcome(p_provider text, p_event_id text, p_kind text, p_occurred_at timestamp with time zone, p_provider_message_id text, p_delivery_id text, p_permanent boolean, p_reason text, p_smtp_code integer, p_recipient text, p_provider_event_type text) FROM PUBLIC;
END
$$;

GRANT EXECUTE ON FUNCTION email.record_delivery_outcome(p_provider text, p_event_id text, p_kind text, p_occurred_at timestamp with time zone, p_provider_message_id text, p_delivery_id text, p_permanent boolean, p_reason text, p_smtp_code integer, p_recipient text, p_provider_event_type text) TO "email_writer";

CREATE POLICY delivery_attempts_email_reader_select ON email.delivery_attempts
    AS PERMISSIVE FOR SELECT TO email_reader USING (true);;

CREATE POLICY delivery_attempts_email_writer_select ON email.delivery_attempts
    AS PERMISSIVE FOR SELECT TO email_writer USING (true);;

CREATE POLICY delivery_outcomes_email_reader_select ON email.delivery_outcomes
    AS PERMISSIVE FOR SELECT TO email_reader USING (true);;

CREATE POLICY delivery_outcomes_email_writer_select ON email.delivery_outcomes
    AS PERMISSIVE FOR SELECT TO email_writer USING (true);;

CREATE POLICY outcome_events_email_reader_select ON email.outcome_events
    AS PERMISSIVE FOR SELECT TO email_reader USING (true);;

CREATE POLICY outcome_events_email_writer_select ON email.outcome_events
    AS PERMISSIVE FOR SELECT TO email_writer USING (true);;

CREATE OR REPLACE VIEW email.provider_metrics_24h WITH (security_invoker = true) AS
SELECT provider, workflow, attempts, accepted, failed, delivered, deferred, bounced,
       hard_bounced, complained, rejected, delivery_rate, bounce_rate, complaint_rate,
       deferral_rate, failure_rate, p50_send_ms, p95_send_ms, p50_sent_to_delivered_s,
       p95_sent_to_delivered_s
FROM email.provider_metrics(now() - interval '24 hours', now());;

CREATE OR REPLACE VIEW email.unmatched_outcome_events WITH (security_invoker = true) AS
SELECT id, provider, event_id, kind, permanent, provider_message_id, echoed_delivery_id,
       occurred_at, received_at
FROM email.outcome_events
WHERE delivery_id IS NULL;;

DO $$
BEGIN
    REVOKE ALL ON TABLE email.provider_metrics_24h FROM PUBLIC;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
        REVOKE ALL ON TABLE email.provider_metrics_24h FROM "anon";
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        REVOKE ALL ON TABLE email.provider_metrics_24h FROM "authenticated";
    END IF;
END
$$;

GRANT SELECT ON TABLE email.provider_metrics_24h TO "email_reader";

DO $$
BEGIN
    REVOKE ALL ON TABLE email.unmatched_outcome_events FROM PUBLIC;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
        REVOKE ALL ON TABLE email.unmatched_outcome_events FROM "anon";
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        REVOKE ALL ON TABLE email.unmatched_outcome_events FROM "authenticated";
    END IF;
END
$$;

GRANT SELECT ON TABLE email.unmatched_outcome_events TO "email_reader";
