SET LOCAL lock_timeout = '5s';

SET LOCAL statement_timeout = '60s';

CREATE OR REPLACE FUNCTION email.record_delivery_event()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    attached text := current_setting('email.event_payload', true);
BEGIN
    IF attached <> '' THEN
        -- A payload belongs to one event: consume it so the next change does not reuse it.
        PERFORM set_config('email.event_payload', '', true);
    END IF;
    INSERT INTO email.delivery_events
        (delivery_id, status, attempt, error_code, error_message, payload)
    VALUES
        (NEW.delivery_id, NEW.status, NEW.attempts, NEW.last_error_code,
         NEW.last_error_message, nullif(attached, '')::jsonb);
    RETURN NULL;
END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.record_delivery_event() FROM PUBLIC;
END
$$;

CREATE OR REPLACE FUNCTION email.touch_updated_at()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = ''
AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.touch_updated_at() FROM PUBLIC;
END
$$;

CREATE OR REPLACE FUNCTION email.guard_transition()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = ''
AS $$
BEGIN
    IF NEW.status = 'sent' AND NEW.sent_at IS NULL THEN
        NEW.sent_at := now();
    END IF;
    IF TG_OP = 'UPDATE' THEN
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
    END IF;
    RETURN NEW;
END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.guard_transition() FROM PUBLIC;
END
$$;

CREATE OR REPLACE TRIGGER deliveries_touch_updated_at
    BEFORE UPDATE ON email.deliveries
    FOR EACH ROW
    EXECUTE FUNCTION email.touch_updated_at();;

CREATE OR REPLACE TRIGGER deliveries_guard_transition
    BEFORE INSERT OR UPDATE ON email.deliveries
    FOR EACH ROW
    EXECUTE FUNCTION email.guard_transition();;

CREATE POLICY delivery_events_email_writer_insert ON email.delivery_events
    AS PERMISSIVE FOR INSERT TO email_writer WITH CHECK (true);;

CREATE POLICY deliveries_email_writer_update ON email.deliveries
    AS PERMISSIVE FOR UPDATE TO email_writer USING (true) WITH CHECK (true);;

CREATE POLICY deliveries_email_writer_insert ON email.deliveries
    AS PERMISSIVE FOR INSERT TO email_writer WITH CHECK (true);;

DROP TRIGGER deliveries_guard ON email.deliveries;

CREATE OR REPLACE TRIGGER deliveries_audit_update
    AFTER UPDATE ON email.deliveries
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.attempts IS DISTINCT FROM NEW.attempts)
    EXECUTE FUNCTION email.record_delivery_event();;

CREATE OR REPLACE TRIGGER deliveries_audit_insert
    AFTER INSERT ON email.deliveries
    FOR EACH ROW
    EXECUTE FUNCTION email.record_delivery_event();;

CREATE OR REPLACE FUNCTION email.sanitize_error_message(message text)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE PARALLEL SAFE
SET search_path = ''
AS $$
BEGIN
    -- The database's copy of email_delivery.validation.sanitize_error_message, applied to
    -- every stored message so a client in any language cannot store an address or a token.
    -- PL/pgSQL, not SQL: a SQL function with a SET clause is planned anew on every call.
    RETURN left(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(message,
            '[[:cntrl:]]', ' ', 'g'),
            '(https?://[^[:space:]?#]*)\?[^[:space:]#]*', '\1?[redacted]', 'gi'),
            '[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}', '[email]', 'g'),
            '(bearer|basic)[[:space:]]+[^[:space:]]+', '\1 [redacted]', 'gi'),
            '(password|passwd|pwd|secret|token|api[_-]?key|apikey|authorization|code|otp)([[:space:]]*[:=][[:space:]]*)[^[:space:],;]+',
            '\1\2[redacted]', 'gi'),
            '(^|[^A-Za-z0-9_+/=-])(?=[A-Za-z0-9_+/=-]*[0-9])(?=[A-Za-z0-9_+/=-]*[A-Za-z])[A-Za-z0-9_+/=-]{24,}',
            '\1[token]', 'g'),
        2000);
END
$$;;

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
        RAISE EXCEPTION 'a requeue needs a reason' USING ERRCODE = '22023', COLUMN = 'reason';
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
            USING ERRCODE = '22023', COLUMN = 'lease';
    END IF;
    IF p_max_attempts IS NULL OR p_max_attempts < 1 THEN
        RAISE EXCEPTION 'max_attempts must be at least 1, not %', p_max_attempts
            USING ERRCODE = '22023', COLUMN = 'max_attempts';
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

DROP FUNCTION email.percent_decoded(value text);

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
            secret USING ERRCODE = 'ED003', COLUMN = 'payload';
    END IF;
    IF octet_length(p_payload::text) > 15872 THEN
        RAISE EXCEPTION 'payload is larger than % bytes as JSON', 15872
            USING ERRCODE = '22023', COLUMN = 'payload';
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
            USING ERRCODE = '22023', COLUMN = 'max_attempts';
    END IF;
    secret := email.find_secret(p_payload);
    IF secret IS NOT NULL THEN
        RAISE EXCEPTION 'payload holds a secret (%); store a hash under a key ending in _sha256',
            secret USING ERRCODE = 'ED003', COLUMN = 'payload';
    END IF;
    IF octet_length(p_payload::text) > 15872 THEN
        RAISE EXCEPTION 'payload is larger than % bytes as JSON', 15872
            USING ERRCODE = '22023', COLUMN = 'payload';
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
       OR char_length(p_reference) NOT BETWEEN 1 AND 200
       OR p_reference ~ '[[:space:][:cntrl:]]' THEN
        RAISE EXCEPTION 'reference must be 1-% printable characters without spaces',
            200 USING ERRCODE = '22023', COLUMN = 'reference';
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

DROP FUNCTION email.is_owner_session();

CREATE OR REPLACE FUNCTION email.is_allowed_transition(old_status email.delivery_status, new_status email.delivery_status)
RETURNS boolean
LANGUAGE sql
IMMUTABLE PARALLEL SAFE
SET search_path = ''
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

DROP FUNCTION email.guard_delivery();

CREATE OR REPLACE FUNCTION email.find_secret(value jsonb)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE PARALLEL SAFE
SET search_path = ''
AS $$
BEGIN
    -- The database's copy of email_delivery.validation.find_secret (the key rules and the
    -- link-with-a-token rule): the first key holding a secret, or NULL.
    -- Most objects mention none of the words the rules look for (even across separators,
    -- as in "pass-word"): skip the walk.
    IF value IS NULL
       OR regexp_replace(value::text, '[^A-Za-z0-9]+', '', 'g') !~* 'apikey|authorization|bearer|code|cookie|credential|credentials|digest|hash|hmac|http|key|magiclink|otp|passcode|passwd|password|pin|pwd|secret|sha256|sha512|token' THEN
        RETURN NULL;
    END IF;
    -- Each key as _word_word_ (camelCase split, lower-cased), tested with regular
    -- expressions equivalent to the word rules.
    RETURN (
    SELECT k.key FROM (
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
        ELSE replace(k.n, '_', '') IN ('apikey', 'authorization', 'bearer', 'cookie', 'credential', 'credentials', 'magiclink', 'otp', 'passcode', 'passwd', 'password', 'pin', 'pwd', 'secret', 'token')
            OR k.n ~ '_(apikey|authorization|bearer|cookie|credential|credentials|magiclink|otp|passcode|passwd|password|pin|pwd|secret|token)_'
            OR k.n ~ '^_code_'
            OR k.n ~ '_(?!(area|bounce|campaign|color|country|currency|discount|error|http|lang|language|locale|plan|postal|product|promo|reason|region|reply|response|smtp|status|template|workflow|zip)_)[a-z0-9]+_code_'
            OR k.n ~ '_(access|api|encryption|private|secret|signing)_key_'
    END
    UNION ALL
    SELECT 'a link with a token'
    FROM jsonb_path_query(value, 'strict $.** ? (@.type() == "string")') AS s
    WHERE s #>> '{}' ~* 'https?://[^\s]*[?&#;]([a-z0-9_]*_)?(token|code|otp|key|secret|password|sig|signature|auth|jwt)[a-z0-9_]*='
       OR s #>> '{}' ~* 'https?://[^\s?]*(?=[A-Za-z0-9_-]*[0-9])(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z0-9_-]{24,}'
    LIMIT 1);
END
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
            secret USING ERRCODE = 'ED003', COLUMN = 'metadata';
    END IF;
    IF octet_length(p_metadata::text) > 15872 THEN
        RAISE EXCEPTION 'metadata is larger than % bytes as JSON', 15872
            USING ERRCODE = '22023', COLUMN = 'metadata';
    END IF;
    IF p_metadata ?| ARRAY['dead_letter_reference', 'requeued_at_attempt'] THEN
        RAISE EXCEPTION 'metadata may not set the lifecycle''s keys %', ARRAY['dead_letter_reference', 'requeued_at_attempt']
            USING ERRCODE = '22023', COLUMN = 'metadata';
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
            secret USING ERRCODE = 'ED003', COLUMN = 'metadata';
    END IF;
    IF EXISTS (SELECT FROM unnest(p_metadata) AS m WHERE octet_length(m::text) > 15872) THEN
        RAISE EXCEPTION 'metadata is larger than % bytes as JSON', 15872
            USING ERRCODE = '22023', COLUMN = 'metadata';
    END IF;
    IF EXISTS (SELECT FROM unnest(p_metadata) AS m WHERE m ?| ARRAY['dead_letter_reference', 'requeued_at_attempt']) THEN
        RAISE EXCEPTION 'metadata may not set the lifecycle''s keys %', ARRAY['dead_letter_reference', 'requeued_at_attempt']
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

CREATE OR REPLACE FUNCTION email.delivery_stats(p_since timestamp with time zone, p_until timestamp with time zone DEFAULT NULL::timestamp with time zone, p_bucket text DEFAULT NULL::text, p_workflow text DEFAULT NULL::text, p_top_errors integer DEFAULT 3)
RETURNS TABLE(workflow text, bucket timestamp with time zone, total bigint, sent bigint, failed bigint, dead_letter bigint, in_flight bigint, success_rate double precision, retry_rate double precision, mean_attempts double precision, latency_p50_s double precision, latency_p95_s double precision, latency_p99_s double precision, top_error_codes jsonb)
LANGUAGE plpgsql
STABLE
SET search_path = ''
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

CREATE OR REPLACE FUNCTION email.claim_delivery(p_delivery_id text, p_lease interval)
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, changed boolean, attempt integer)
LANGUAGE plpgsql
SET search_path = ''
AS $$
#variable_conflict use_column
BEGIN
    IF p_lease IS NULL OR p_lease <= interval '0' THEN
        RAISE EXCEPTION 'lease must be a positive interval, not %', p_lease
            USING ERRCODE = '22023', COLUMN = 'lease';
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

DROP FUNCTION email.audit_updated_deliveries();

DROP FUNCTION email.audit_inserted_deliveries();

DROP FUNCTION email.attempts_since_requeue(attempts integer, metadata jsonb);

DROP FUNCTION email.attached_payloads();

DROP FUNCTION email.attach_event_payloads(payloads jsonb);

GRANT INSERT, UPDATE ON TABLE email.deliveries TO "email_writer";

GRANT INSERT ON TABLE email.delivery_events TO "email_writer";

ALTER TABLE email.delivery_events DROP COLUMN changed_columns;
