SET LOCAL lock_timeout = '5s';

SET LOCAL statement_timeout = '6h';

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

DROP TRIGGER deliveries_purge_events ON email.deliveries;

DROP FUNCTION email.purge_delivery_events();

DROP FUNCTION email.event_partitions();

DROP FUNCTION email.drop_expired_event_partitions(p_before timestamp with time zone);

DROP FUNCTION email.create_event_partitions(p_ahead interval, p_interval interval);

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

DROP POLICY delivery_events_email_reader_select ON email.delivery_events;

DROP POLICY delivery_events_email_writer_select ON email.delivery_events;

ALTER TABLE email.delivery_events DETACH PARTITION email.delivery_events_legacy;

ALTER TABLE email.delivery_events_legacy DROP CONSTRAINT delivery_events_legacy_bound;

INSERT INTO email.delivery_events_legacy (id, delivery_id, status, attempt, error_code, error_message, payload, created_at, changed_columns) SELECT id, delivery_id, status, attempt, error_code, error_message, payload, created_at, changed_columns FROM email.delivery_events;

DROP INDEX email.ix_delivery_events_xact_id;

DROP INDEX email.ix_delivery_events_delivery_id_id;

DROP TABLE email.delivery_events;

ALTER TABLE email.delivery_events_legacy RENAME TO delivery_events;

ALTER TABLE email.delivery_events DROP CONSTRAINT delivery_events_legacy_pkey, ADD CONSTRAINT pk_delivery_events PRIMARY KEY (id);

ALTER INDEX email.delivery_events_legacy_delivery_id_id RENAME TO ix_delivery_events_delivery_id_id;

DROP INDEX email.delivery_events_legacy_xact_id;

ALTER TABLE email.delivery_events DROP COLUMN xact_id;

ALTER TABLE email.delivery_events ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY;

SELECT setval(pg_catalog.pg_get_serial_sequence('email.delivery_events', 'id'), (SELECT coalesce(max(id), 0) + 1 FROM email.delivery_events), false);

ALTER TABLE email.delivery_events ADD CONSTRAINT fk_delivery_events_delivery_id_deliveries FOREIGN KEY(delivery_id) REFERENCES email.deliveries (delivery_id) ON DELETE CASCADE;

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

GRANT SELECT ON TABLE email.delivery_events TO "email_writer";

ALTER TABLE email.delivery_events ENABLE ROW LEVEL SECURITY;

CREATE POLICY delivery_events_email_reader_select ON email.delivery_events
    AS PERMISSIVE FOR SELECT TO email_reader USING (true);;

CREATE POLICY delivery_events_email_writer_select ON email.delivery_events
    AS PERMISSIVE FOR SELECT TO email_writer USING (true);;
