CREATE TYPE email.delivery_status AS ENUM ('queued', 'in_progress', 'sent', 'retrying', 'failed', 'dead_letter');

CREATE TABLE email.deliveries (
    delivery_id TEXT NOT NULL, 
    workflow TEXT NOT NULL, 
    recipient TEXT NOT NULL, 
    status email.delivery_status DEFAULT 'queued' NOT NULL, 
    attempts INTEGER DEFAULT 0 NOT NULL, 
    last_error_code TEXT, 
    last_error_message TEXT, 
    last_attempted_at TIMESTAMP WITH TIME ZONE, 
    queued_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    sent_at TIMESTAMP WITH TIME ZONE, 
    metadata JSONB DEFAULT '{}'::jsonb NOT NULL, 
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    CONSTRAINT pk_deliveries PRIMARY KEY (delivery_id), 
    CONSTRAINT ck_deliveries_sent_at_iff_sent CHECK ((status = 'sent') = (sent_at IS NOT NULL)), 
    CONSTRAINT ck_deliveries_recipient_format CHECK (char_length(recipient) <= 320 AND recipient ~ '^[^@[:space:]]+@[^@[:space:]]+$' AND recipient = lower(recipient)), 
    CONSTRAINT ck_deliveries_delivery_id_format CHECK (delivery_id ~ '^[A-Za-z0-9][A-Za-z0-9._:/@+=-]{0,199}$'), 
    CONSTRAINT ck_deliveries_metadata_object CHECK (jsonb_typeof(metadata) = 'object' AND octet_length(metadata::text) <= 16384), 
    CONSTRAINT ck_deliveries_workflow_format CHECK (workflow ~ '^[a-z][a-z0-9-]{0,62}$'), 
    CONSTRAINT ck_deliveries_attempts_non_negative CHECK (attempts >= 0), 
    CONSTRAINT ck_deliveries_last_error_code_length CHECK (char_length(last_error_code) <= 64), 
    CONSTRAINT ck_deliveries_last_error_message_length CHECK (char_length(last_error_message) <= 2000)
);

CREATE INDEX ix_deliveries_recipient_updated_at ON email.deliveries (recipient, updated_at);

CREATE INDEX ix_deliveries_status_updated_at ON email.deliveries (status, updated_at);

CREATE TABLE email.delivery_events (
    id BIGINT GENERATED ALWAYS AS IDENTITY, 
    delivery_id TEXT NOT NULL, 
    status email.delivery_status NOT NULL, 
    attempt INTEGER NOT NULL, 
    error_code TEXT, 
    error_message TEXT, 
    payload JSONB, 
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    CONSTRAINT pk_delivery_events PRIMARY KEY (id), 
    CONSTRAINT ck_delivery_events_payload_object CHECK (payload IS NULL OR (jsonb_typeof(payload) = 'object' AND octet_length(payload::text) <= 16384)), 
    CONSTRAINT ck_delivery_events_attempt_non_negative CHECK (attempt >= 0), 
    CONSTRAINT ck_delivery_events_error_code_length CHECK (char_length(error_code) <= 64), 
    CONSTRAINT ck_delivery_events_error_message_length CHECK (char_length(error_message) <= 2000), 
    CONSTRAINT fk_delivery_events_delivery_id_deliveries FOREIGN KEY(delivery_id) REFERENCES email.deliveries (delivery_id) ON DELETE CASCADE
);

CREATE INDEX ix_delivery_events_delivery_id_id ON email.delivery_events (delivery_id, id);

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

CREATE OR REPLACE TRIGGER deliveries_guard_transition
    BEFORE INSERT OR UPDATE ON email.deliveries
    FOR EACH ROW
    EXECUTE FUNCTION email.guard_transition();;

CREATE OR REPLACE TRIGGER deliveries_touch_updated_at
    BEFORE UPDATE ON email.deliveries
    FOR EACH ROW
    EXECUTE FUNCTION email.touch_updated_at();;

CREATE OR REPLACE TRIGGER deliveries_audit_insert
    AFTER INSERT ON email.deliveries
    FOR EACH ROW
    EXECUTE FUNCTION email.record_delivery_event();;

CREATE OR REPLACE TRIGGER deliveries_audit_update
    AFTER UPDATE ON email.deliveries
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.attempts IS DISTINCT FROM NEW.attempts)
    EXECUTE FUNCTION email.record_delivery_event();;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.is_allowed_transition(old_status email.delivery_status, new_status email.delivery_status) FROM PUBLIC;
END
$$;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.guard_transition() FROM PUBLIC;
END
$$;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.touch_updated_at() FROM PUBLIC;
END
$$;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.record_delivery_event() FROM PUBLIC;
END
$$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'email_writer') THEN
        CREATE ROLE "email_writer" NOLOGIN;
    END IF;
END
$$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'email_reader') THEN
        CREATE ROLE "email_reader" NOLOGIN;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA email TO "email_writer", "email_reader";

GRANT EXECUTE ON FUNCTION email.is_allowed_transition(old_status email.delivery_status, new_status email.delivery_status) TO "email_writer", "email_reader";

DO $$
BEGIN
    REVOKE ALL ON TABLE email.deliveries FROM PUBLIC;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
        REVOKE ALL ON TABLE email.deliveries FROM "anon";
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        REVOKE ALL ON TABLE email.deliveries FROM "authenticated";
    END IF;
END
$$;

GRANT SELECT ON TABLE email.deliveries TO "email_reader";

GRANT SELECT, INSERT, UPDATE ON TABLE email.deliveries TO "email_writer";

ALTER TABLE email.deliveries ENABLE ROW LEVEL SECURITY;

DO $$
BEGIN
    REVOKE ALL ON TABLE email.delivery_events FROM PUBLIC;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
        REVOKE ALL ON TABLE email.delivery_events FROM "anon";
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        REVOKE ALL ON TABLE email.delivery_events FROM "authenticated";
    END IF;
END
$$;

GRANT SELECT ON TABLE email.delivery_events TO "email_reader";

GRANT SELECT, INSERT ON TABLE email.delivery_events TO "email_writer";

ALTER TABLE email.delivery_events ENABLE ROW LEVEL SECURITY;

CREATE POLICY deliveries_email_reader_select ON email.deliveries
    AS PERMISSIVE FOR SELECT TO email_reader USING (true);;

CREATE POLICY deliveries_email_writer_select ON email.deliveries
    AS PERMISSIVE FOR SELECT TO email_writer USING (true);;

CREATE POLICY deliveries_email_writer_insert ON email.deliveries
    AS PERMISSIVE FOR INSERT TO email_writer WITH CHECK (true);;

CREATE POLICY deliveries_email_writer_update ON email.deliveries
    AS PERMISSIVE FOR UPDATE TO email_writer USING (true) WITH CHECK (true);;

CREATE POLICY delivery_events_email_reader_select ON email.delivery_events
    AS PERMISSIVE FOR SELECT TO email_reader USING (true);;

CREATE POLICY delivery_events_email_writer_select ON email.delivery_events
    AS PERMISSIVE FOR SELECT TO email_writer USING (true);;

CREATE POLICY delivery_events_email_writer_insert ON email.delivery_events
    AS PERMISSIVE FOR INSERT TO email_writer WITH CHECK (true);;
