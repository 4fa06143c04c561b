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
$$;
