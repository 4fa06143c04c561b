SET LOCAL lock_timeout = '5s';

SET LOCAL statement_timeout = '60s';

ALTER TABLE email.delivery_events ADD COLUMN changed_columns TEXT[];

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'email_writer') THEN
        REVOKE INSERT, UPDATE ON TABLE email.deliveries FROM "email_writer";
    END IF;
END
$$;

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'email_writer') THEN
        REVOKE INSERT ON TABLE email.delivery_events FROM "email_writer";
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION email.attach_event_payloads(payloads jsonb)
RETURNS void
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    -- Hand the audit trigger payloads for the events of the next statement on
    -- email.deliveries in this transaction: a JSON object of payloads by delivery_id (NULL
    -- clears). Stamped with the transaction id, so a value can never reach another
    -- transaction's events: not a later statement of a pooled connection, not a session-level
    -- SET of email.event_payload.
    SELECT set_config('email.event_payload',
        CASE WHEN payloads IS NULL THEN '' ELSE pg_current_xact_id()::text || ':' || payloads::text END,
        true)
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.attach_event_payloads(payloads jsonb) FROM PUBLIC;
END
$$;

CREATE OR REPLACE FUNCTION email.attached_payloads()
RETURNS jsonb
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    attached text := current_setting('email.event_payload', true);
    stamp text;
    payloads jsonb;
    secret text;
BEGIN
    -- The payloads email.attach_event_payloads left for this statement's events, consumed.
    -- A value stamped by another transaction (or not stamped at all) is ignored.
    IF attached IS NULL OR attached = '' THEN
        RETURN NULL;
    END IF;
    stamp := pg_current_xact_id()::text || ':';
    IF left(attached, length(stamp)) <> stamp THEN
        RETURN NULL;
    END IF;
    PERFORM set_config('email.event_payload', '', true);
    payloads := substr(attached, length(stamp) + 1)::jsonb;
    IF jsonb_typeof(payloads) <> 'object'
       OR EXISTS (SELECT FROM jsonb_each(payloads) AS p WHERE jsonb_typeof(p.value) <> 'object') THEN
        RAISE EXCEPTION 'an event payload must be a JSON object' USING ERRCODE = '22023', COLUMN = 'payload';
    END IF;
    SELECT found.secret INTO secret
    FROM jsonb_each(payloads) AS p
    CROSS JOIN LATERAL email.find_secret(p.value) AS found(secret)
    WHERE found.secret IS NOT NULL
    LIMIT 1;
    IF secret IS NOT NULL THEN
        RAISE EXCEPTION 'payload holds a secret (%); store a hash under a key ending in _sha256',
            secret USING ERRCODE = 'ED003', COLUMN = 'payload';
    END IF;
    RETURN payloads;
END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.attached_payloads() FROM PUBLIC;
END
$$;

CREATE OR REPLACE FUNCTION email.attempts_since_requeue(attempts integer, metadata jsonb)
RETURNS integer
LANGUAGE sql
IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    -- The attempts that count against the retry budget: attempts never decrease, so a
    -- requeue records where the new budget starts. A malformed record (possible only in rows
    -- written before revision 0005's guard) counts from zero instead of failing the caller:
    -- one bad row must never stall the reaper.
    SELECT attempts - CASE
        WHEN jsonb_typeof(metadata->'requeued_at_attempt') = 'number'
             AND metadata->>'requeued_at_attempt' ~ '^[0-9]{1,9}$'
            THEN least((metadata->>'requeued_at_attempt')::integer, attempts)
        ELSE 0
    END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.attempts_since_requeue(attempts integer, metadata jsonb) FROM PUBLIC;
END
$$;

CREATE OR REPLACE FUNCTION email.audit_inserted_deliveries()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    payloads jsonb := email.attached_payloads();
BEGIN
    -- The audit trail is written here and nowhere else: as the schema owner (no client role
    -- may insert events), once per statement for all its rows.
    INSERT INTO email.delivery_events
        (delivery_id, status, attempt, error_code, error_message, payload)
    SELECT n.delivery_id, n.status, n.attempts, n.last_error_code, n.last_error_message,
           payloads -> n.delivery_id
    FROM inserted_rows AS n;
    RETURN NULL;
END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.audit_inserted_deliveries() FROM PUBLIC;
END
$$;

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
    INSERT INTO email.delivery_events
        (delivery_id, status, attempt, error_code, error_message, payload, changed_columns)
    SELECT n.delivery_id, n.status, n.attempts, n.last_error_code, n.last_error_message,
           payloads -> n.delivery_id, c.changed
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

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.audit_updated_deliveries() FROM PUBLIC;
END
$$;

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

CREATE OR REPLACE FUNCTION email.find_secret(value jsonb)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- The rules of email_delivery.rules, as Python's validation.find_secret applies them: the
    -- first key holding a secret, or 'a link with a secret', or NULL.
    -- Most objects hold neither a word the key rules look for (even across separators, as
    -- in "pass-word") nor a link ("//", or an escaped one): skip the walk.
    IF value IS NULL
       OR (value::text !~* '//|%2f|%25'
           AND regexp_replace(value::text, '[^A-Za-z0-9]+', '', 'g')
               !~* 'apikey|authorization|bearer|code|cookie|credential|credentials|digest|hash|hmac|http|jwt|key|magiclink|otp|passcode|passphrase|passwd|password|pin|pwd|secret|sha256|sha512|token') THEN
        RETURN NULL;
    END IF;
    RETURN (
    SELECT k.key FROM (
        -- Each key as _word_word_ (camelCase split, lower-cased).
        SELECT kv->>'key' AS key, kv->'value' AS val,
               '_' || btrim(regexp_replace(
                   lower(regexp_replace(kv->>'key', '([a-z0-9])([A-Z])', '\1_\2', 'g')),
                   '[^a-z0-9]+', '_', 'g'), '_') || '_' AS n
        FROM jsonb_path_query(value, 'strict $.** ? (@.type() == "object").keyvalue()') AS kv
    ) AS k
    WHERE CASE
        WHEN lower(k.key) ~ '(_sha256|_sha512|_hash|_hmac|_digest)$' THEN
            NOT (jsonb_typeof(k.val) = 'string'
                 AND k.val #>> '{}' ~ '^((sha256|sha512|sha1|hmac-sha256):)?[0-9a-fA-F]{32,128}$')
        WHEN k.n = '__' OR k.n ~ '_(at|count|expiration|expires|expiry|id|length|sent|ttl|type)_$' THEN false
        ELSE replace(k.n, '_', '') IN ('apikey', 'authorization', 'bearer', 'cookie', 'credential', 'credentials', 'jwt', 'magiclink', 'otp', 'passcode', 'passphrase', 'passwd', 'password', 'pin', 'pwd', 'secret', 'token')
            OR regexp_replace(replace(k.n, '_', ''), 's$', '') IN ('apikey', 'authorization', 'bearer', 'cookie', 'credential', 'credentials', 'jwt', 'magiclink', 'otp', 'passcode', 'passphrase', 'passwd', 'password', 'pin', 'pwd', 'secret', 'token')
            OR k.n ~ '_(pins?|[a-z0-9]*(apikey|authorization|bearer|cookie|credential|credentials|jwt|magiclink|otp|passcode|passphrase|passwd|password|pwd|secret|token)s?)_'
            OR k.n ~ '^_codes?_'
            OR k.n ~ '_(?!(?:area|bar|bounce|campaign|color|country|currency|de|discount|en|error|geo|hash|http|lang|language|locale|op|plan|post|postal|product|promo|qr|reason|region|reply|response|short|smtp|source|status|template|uni|workflow|zip)_)[a-z0-9]+_codes?_'
            OR k.n ~ '_(?!(?:area|bar|bounce|campaign|color|country|currency|de|discount|en|error|geo|hash|http|lang|language|locale|op|plan|post|postal|product|promo|qr|reason|region|reply|response|short|smtp|source|status|template|uni|workflow|zip)codes?_)[a-z0-9]+codes?_'
            OR k.n ~ '_(?:access|api|encryption|private|secret|signing)_?keys?_'
    END
    UNION ALL
    -- A link whose query (or fragment) has a parameter off the allow-list, or whose path
    -- holds a long token, percent-encoded or not.
    SELECT 'a link with a secret'
    FROM jsonb_path_query(value, 'strict $.** ? (@.type() == "string")') AS s
    CROSS JOIN LATERAL email.percent_decoded(s #>> '{}') AS t(text)
    WHERE t.text ~* '(?:https?:)?//[^[:space:]?#]*(?=[A-Za-z0-9_-]*[0-9])(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z0-9_-]{24,}'
       OR EXISTS (
           SELECT FROM regexp_matches(t.text, '(?:https?:)?//[^[:space:]/?#]+[^[:space:]?#]*(?:\?([^[:space:]#]*))?(?:#([^[:space:]]*))?', 'gi') AS m
           CROSS JOIN LATERAL regexp_split_to_table(
               coalesce(m[1], '') || CASE WHEN m[2] LIKE '%=%' THEN '&' || m[2] ELSE '' END,
               '[&;]') AS p(part)
           WHERE p.part <> ''
             AND lower(split_part(p.part, '=', 1)) NOT IN ('hl', 'lang', 'list', 'locale', 'utm_campaign', 'utm_content', 'utm_id', 'utm_medium', 'utm_source', 'utm_term'))
    LIMIT 1);
END
$$;;

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
            WHEN NEW.created_at IS DISTINCT FROM OLD.created_at THEN 'created_at'
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

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.guard_delivery() FROM PUBLIC;
END
$$;

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

CREATE OR REPLACE FUNCTION email.is_owner_session()
RETURNS boolean
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- Whether the login (session_user: not the definer a lifecycle function runs as, nor a
    -- role SET ROLE switched to) is the schema owner or a member of it, as Supabase's
    -- postgres owns what its migrations create. What only the owner may do is checked here.
    SELECT pg_has_role(session_user, c.relowner, 'MEMBER')
    FROM pg_class AS c
    WHERE c.oid = 'email.deliveries'::regclass
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.is_owner_session() FROM PUBLIC;
END
$$;

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

CREATE OR REPLACE FUNCTION email.percent_decoded(value text)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- The escapes that hide a link's structure (email_delivery.rules.PERCENT_DECODING), undone
    -- twice for double encoding, before links are looked at; most text has no '%' at all.
    IF strpos(value, '%') = 0 THEN
        RETURN value;
    END IF;
    RETURN regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(value,
            '%3a', ':', 'gi'),
            '%2f', '/', 'gi'),
            '%3f', '?', 'gi'),
            '%3d', '=', 'gi'),
            '%26', '&', 'gi'),
            '%23', '#', 'gi'),
            '%3b', ';', 'gi'),
            '%25', '%', 'gi'),
            '%3a', ':', 'gi'),
            '%2f', '/', 'gi'),
            '%3f', '?', 'gi'),
            '%3d', '=', 'gi'),
            '%26', '&', 'gi'),
            '%23', '#', 'gi'),
            '%3b', ';', 'gi'),
            '%25', '%', 'gi');
END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.percent_decoded(value text) FROM PUBLIC;
END
$$;

GRANT EXECUTE ON FUNCTION email.percent_decoded(value text) TO "email_writer", "email_reader";

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

CREATE OR REPLACE FUNCTION email.sanitize_error_message(message text)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- The redactions of email_delivery.rules.SANITIZE_RULES, in order, after the link
    -- escapes are undone: Python's validation.sanitize_error_message runs the same. The
    -- guard trigger applies it to every stored message, whoever writes it.
    -- PL/pgSQL, not SQL: a SQL function with a SET clause is planned anew on every call.
    message := email.percent_decoded(message);
    RETURN left(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(message,
            '[[:cntrl:]]', ' ', 'g'),
            '([a-z][a-z0-9+.-]*://)[^/[:space:]:@]+:[^/[:space:]@]+@', '\1[redacted]@', 'gi'),
            '((?:https?:)?//[^[:space:]?#]*)\?[^[:space:]#]*', '\1?[redacted]', 'gi'),
            '((?:https?:)?//[^[:space:]#]*)#[^[:space:]]*=[^[:space:]]*', '\1#[redacted]', 'gi'),
            '("[^"]*"|[^][[:space:]@<>(),;:"'']+)@(\[[0-9A-Fa-f.:]+\]|[^][[:space:]@<>(),;:"''/.]+(\.[^][[:space:]@<>(),;:"''/.]+)+)',
            '[email]', 'g'),
            '((set-)?cookie[[:space:]]*:[[:space:]]*)[^[:space:];,]+', '\1[redacted]', 'gi'),
            '(bearer|basic)[[:space:]]+[^[:space:]]+', '\1 [redacted]', 'gi'),
            '(^|[^A-Za-z0-9_-])(?!(?:area|bar|bounce|campaign|color|country|currency|de|discount|en|error|geo|hash|http|lang|language|locale|op|plan|post|postal|product|promo|qr|reason|region|reply|response|short|smtp|source|status|template|uni|workflow|zip)[_ -]?codes?[^A-Za-z0-9_-])([A-Za-z0-9_-]*(?:password|passwd|passphrase|pwd|secret|token|api[_-]?key|authorization|otp|pin|passcode|cookie|jwt|codes?))(["'']?[[:space:]]*[:=][[:space:]]*["'']?)[^"''[:space:],;}]+',
            '\1\2\3[redacted]', 'gi'),
            '(^|[^A-Za-z0-9_-])((?:pin|otp|passcode|code)[[:space:]]+)[0-9]{4,12}',
            '\1\2[redacted]', 'gi'),
            '(^|[^A-Za-z0-9_+/=-])(?=[A-Za-z0-9_+/=-]*[0-9])(?=[A-Za-z0-9_+/=-]*[A-Za-z])[A-Za-z0-9_+/=-]{24,}',
            '\1[token]', 'g'),
        2000);
END
$$;;

CREATE OR REPLACE TRIGGER deliveries_audit_insert
    AFTER INSERT ON email.deliveries
    REFERENCING NEW TABLE AS inserted_rows
    FOR EACH STATEMENT
    EXECUTE FUNCTION email.audit_inserted_deliveries();;

CREATE OR REPLACE TRIGGER deliveries_audit_update
    AFTER UPDATE ON email.deliveries
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT
    EXECUTE FUNCTION email.audit_updated_deliveries();;

CREATE OR REPLACE TRIGGER deliveries_guard
    BEFORE INSERT OR UPDATE ON email.deliveries
    FOR EACH ROW
    EXECUTE FUNCTION email.guard_delivery();;

DROP POLICY deliveries_email_writer_insert ON email.deliveries;

DROP POLICY deliveries_email_writer_update ON email.deliveries;

DROP POLICY delivery_events_email_writer_insert ON email.delivery_events;

DROP TRIGGER deliveries_guard_transition ON email.deliveries;

DROP TRIGGER deliveries_touch_updated_at ON email.deliveries;

DROP FUNCTION email.guard_transition();

DROP FUNCTION email.touch_updated_at();

DROP FUNCTION email.record_delivery_event();
