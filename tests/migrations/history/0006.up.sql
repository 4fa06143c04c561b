COMMIT;

SET lock_timeout = '5s';

SET statement_timeout = '6h';

ALTER TABLE email.delivery_events ADD COLUMN IF NOT EXISTS xact_id bigint;

CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS delivery_events_legacy_id_created_at ON email.delivery_events (id, created_at);

CREATE INDEX CONCURRENTLY IF NOT EXISTS delivery_events_legacy_xact_id ON email.delivery_events USING brin (xact_id);

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_constraint
                   WHERE conname = 'delivery_events_legacy_bound'
                     AND conrelid = 'email.delivery_events'::regclass) THEN
        EXECUTE format('ALTER TABLE email.delivery_events ADD CONSTRAINT '
                       'delivery_events_legacy_bound CHECK (created_at < %L) NOT VALID',
                       date_trunc('month', now(), 'UTC') + interval '1 month');
    END IF;
END
$$;

ALTER TABLE email.delivery_events VALIDATE CONSTRAINT delivery_events_legacy_bound;

RESET statement_timeout;

RESET lock_timeout;

BEGIN;

SET LOCAL lock_timeout = '5s';

SET LOCAL statement_timeout = '60s';

ALTER TABLE email.delivery_events DROP CONSTRAINT fk_delivery_events_delivery_id_deliveries;

DROP POLICY delivery_events_email_reader_select ON email.delivery_events;

DROP POLICY delivery_events_email_writer_select ON email.delivery_events;

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'email_reader') THEN
        REVOKE ALL ON TABLE email.delivery_events FROM "email_reader";
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'email_writer') THEN
        REVOKE ALL ON TABLE email.delivery_events FROM "email_writer";
    END IF;
END
$$;

ALTER TABLE email.delivery_events RENAME TO delivery_events_legacy;

ALTER INDEX email.ix_delivery_events_delivery_id_id RENAME TO delivery_events_legacy_delivery_id_id;

ALTER TABLE email.delivery_events_legacy DROP CONSTRAINT pk_delivery_events, ADD CONSTRAINT delivery_events_legacy_pkey PRIMARY KEY USING INDEX delivery_events_legacy_id_created_at;

ALTER TABLE email.delivery_events_legacy ALTER COLUMN id DROP IDENTITY;

CREATE TABLE email.delivery_events (
    id BIGINT GENERATED ALWAYS AS IDENTITY, 
    delivery_id TEXT NOT NULL, 
    status email.delivery_status NOT NULL, 
    attempt INTEGER NOT NULL, 
    error_code TEXT, 
    error_message TEXT, 
    payload JSONB, 
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    changed_columns TEXT[], 
    xact_id BIGINT DEFAULT (pg_current_xact_id())::text::bigint, 
    CONSTRAINT pk_delivery_events PRIMARY KEY (id, created_at), 
    CONSTRAINT ck_delivery_events_payload_object CHECK (payload IS NULL OR (jsonb_typeof(payload) = 'object' AND octet_length(payload::text) <= 16384)), 
    CONSTRAINT ck_delivery_events_attempt_non_negative CHECK (attempt >= 0), 
    CONSTRAINT ck_delivery_events_error_code_length CHECK (char_length(error_code) <= 64), 
    CONSTRAINT ck_delivery_events_error_message_length CHECK (char_length(error_message) <= 2000)
)
 PARTITION BY RANGE (created_at);

CREATE INDEX ix_delivery_events_delivery_id_id ON email.delivery_events (delivery_id, id);

CREATE INDEX ix_delivery_events_xact_id ON email.delivery_events USING brin (xact_id);

DO $$
DECLARE
    bound timestamptz := (
        SELECT (regexp_match(pg_catalog.pg_get_constraintdef(c.oid), $re$'([^']+)'$re$))[1]
        FROM pg_catalog.pg_constraint AS c
        WHERE c.conname = 'delivery_events_legacy_bound'
          AND c.conrelid = 'email.delivery_events_legacy'::regclass)::timestamptz;
BEGIN
    EXECUTE format('ALTER TABLE email.delivery_events ATTACH PARTITION '
                   'email.delivery_events_legacy FOR VALUES FROM (MINVALUE) TO (%L)', bound);
END
$$;

CREATE TABLE email.delivery_events_default PARTITION OF email.delivery_events DEFAULT;

SELECT setval(pg_catalog.pg_get_serial_sequence('email.delivery_events', 'id'), (SELECT coalesce(max(id), 0) + 1 FROM email.delivery_events_legacy), false);

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
    -- An event is stamped with the change's own time (the row's created_at), so a
    -- delivery's events lie within its created_at..updated_at (purge relies on it).
    INSERT INTO email.delivery_events
        (delivery_id, status, attempt, error_code, error_message, payload, created_at)
    SELECT n.delivery_id, n.status, n.attempts, n.last_error_code, n.last_error_message,
           payloads -> n.delivery_id, n.created_at
    FROM inserted_rows AS n;
    RETURN NULL;
END
$$;;

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

CREATE OR REPLACE FUNCTION email.create_event_partitions(p_ahead interval DEFAULT '3 mons'::interval, p_interval interval DEFAULT '1 mon'::interval)
RETURNS SETOF text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    lower_bound timestamptz;
    upper_bound timestamptz;
    partition text;
BEGIN
    -- Partitions of email.delivery_events from where the last one ends until now() +
    -- p_ahead, p_interval each (the schema owner runs it: `email-delivery maintain`, or
    -- email.maintain() from pg_cron). An event whose partition is missing lands in the
    -- default partition and is moved into its partition here, so none is ever lost.
    IF p_interval IS NULL OR p_interval < interval '1 day' THEN
        RAISE EXCEPTION 'a partition spans at least a day, not %', p_interval
            USING ERRCODE = '22023', COLUMN = 'interval';
    END IF;
    IF p_ahead IS NULL OR p_ahead < interval '0' THEN
        RAISE EXCEPTION 'ahead must not be negative, not %', p_ahead
            USING ERRCODE = '22023', COLUMN = 'ahead';
    END IF;
    SELECT max(p.upper_bound) INTO upper_bound FROM email.event_partitions() AS p;
    upper_bound := coalesce(upper_bound, date_trunc('month', now(), 'UTC'));
    WHILE upper_bound < now() + p_ahead LOOP
        lower_bound := upper_bound;
        upper_bound := lower_bound + p_interval;
        partition := 'delivery_events_p' || to_char(lower_bound AT TIME ZONE 'UTC', 'YYYYMMDD');
        EXECUTE format('CREATE TABLE email.%I (LIKE email.delivery_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                       partition);
        -- Events that arrived before their partition existed wait in the default one.
        EXECUTE format(
            'WITH moved AS (DELETE FROM email.delivery_events_default
                            WHERE created_at >= %L AND created_at < %L RETURNING *)
             INSERT INTO email.%I SELECT * FROM moved',
            lower_bound, upper_bound, partition);
        EXECUTE format(
            'ALTER TABLE email.delivery_events ATTACH PARTITION email.%I FOR VALUES FROM (%L) TO (%L)',
            partition, lower_bound, upper_bound);
        RETURN NEXT partition;
    END LOOP;
END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.create_event_partitions(p_ahead interval, p_interval interval) FROM PUBLIC;
END
$$;

CREATE OR REPLACE FUNCTION email.drop_expired_event_partitions(p_before timestamp with time zone)
RETURNS TABLE(name text, rows_estimate bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    expired record;
BEGIN
    -- Retention of the audit log by whole partitions: a partition whose range ends before
    -- p_before (the sent-retention cutoff) is detached and dropped, unless a delivery
    -- still in flight began in its range (its history stays). What remains of the other
    -- deliveries of that range is kept only as their row, until retention deletes it.
    FOR expired IN
        SELECT p.name, p.upper_bound, p.rows_estimate FROM email.event_partitions() AS p
        WHERE NOT p.is_default AND p.upper_bound <= p_before
        ORDER BY p.upper_bound
    LOOP
        EXIT WHEN EXISTS (
            SELECT FROM email.deliveries AS d
            WHERE d.status IN ('queued', 'in_progress', 'retrying')
              AND d.created_at < expired.upper_bound);
        EXECUTE format('ALTER TABLE email.delivery_events DETACH PARTITION email.%I', expired.name);
        EXECUTE format('DROP TABLE email.%I', expired.name);
        name := expired.name;
        rows_estimate := expired.rows_estimate;
        RETURN NEXT;
    END LOOP;
END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.drop_expired_event_partitions(p_before timestamp with time zone) FROM PUBLIC;
END
$$;

CREATE OR REPLACE FUNCTION email.event_partitions()
RETURNS TABLE(name text, lower_bound timestamp with time zone, upper_bound timestamp with time zone, is_default boolean, rows_estimate bigint)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- The partitions of email.delivery_events with their range (lower NULL: from the
    -- beginning; both NULL: the default partition), oldest first.
    SELECT c.relname::text,
           (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \(''([^'']+)''\)'))[1]::timestamptz,
           (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz,
           pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT',
           greatest(c.reltuples, 0)::bigint
    FROM pg_inherits AS i
    JOIN pg_class AS c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'email.delivery_events'::regclass
    ORDER BY 4, 3 NULLS FIRST
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.event_partitions() FROM PUBLIC;
END
$$;

CREATE OR REPLACE FUNCTION email.purge_delivery_events()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    purged bigint;
BEGIN
    -- A purged delivery's events go with it (the seed's ON DELETE CASCADE), set-based, once
    -- per statement. Each event is stamped with its delivery's created_at (insert) or
    -- updated_at (change), so only the partitions of the purged deliveries' span are
    -- searched: retention's old deliveries touch old partitions only.
    DELETE FROM email.delivery_events AS e
    USING purged_rows AS d
    WHERE e.delivery_id = d.delivery_id
      AND e.created_at >= (SELECT min(p.created_at) FROM purged_rows AS p)
      AND e.created_at <= (SELECT max(greatest(p.created_at, p.updated_at)) FROM purged_rows AS p);
    -- How many, for retention's report: summed over the transaction's statements.
    GET DIAGNOSTICS purged = ROW_COUNT;
    PERFORM set_config('email.purged_events',
        (coalesce(nullif(current_setting('email.purged_events', true), ''), '0')::bigint
         + purged)::text, true);
    RETURN NULL;
END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.purge_delivery_events() FROM PUBLIC;
END
$$;

CREATE OR REPLACE TRIGGER deliveries_purge_events
    AFTER DELETE ON email.deliveries
    REFERENCING OLD TABLE AS purged_rows
    FOR EACH STATEMENT
    EXECUTE FUNCTION email.purge_delivery_events();;

SELECT email.create_event_partitions();
