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
    -- A claim's expiry exists only while it is in progress, a retry's earliest time only
    -- while retrying: leaving the status clears them (revision 0008), and entering
    -- in_progress without an expiry (an owner's edit) gets the workflow's lease.
    IF NEW.status <> 'in_progress' THEN
        NEW.lease_expires_at := NULL;
    ELSIF NEW.lease_expires_at IS NULL THEN
        NEW.lease_expires_at := now() + (email.workflow_policy(NEW.workflow)).lease;
    END IF;
    IF NEW.status <> 'retrying' THEN
        NEW.next_attempt_at := NULL;
    END IF;
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
            -- A claim or a heartbeat sets the expiry, no further than the longest lease
            -- (leaving in_progress clears it, above).
            WHEN NEW.lease_expires_at IS DISTINCT FROM OLD.lease_expires_at
                 AND NEW.lease_expires_at IS NOT NULL
                 AND NOT (NEW.lease_expires_at > now()
                          AND NEW.lease_expires_at <= now() + interval '1 day')
                THEN 'lease_expires_at'
            -- A failed attempt sets the next one's time, no further than the longest backoff.
            WHEN NEW.next_attempt_at IS DISTINCT FROM OLD.next_attempt_at
                 AND NEW.next_attempt_at IS NOT NULL
                 AND NOT (OLD.status = 'in_progress' AND NEW.next_attempt_at >= now()
                          AND NEW.next_attempt_at <= now() + interval '7 days')
                THEN 'next_attempt_at'
            WHEN NEW.metadata->'requeued_at_attempt' IS DISTINCT FROM OLD.metadata->'requeued_at_attempt'
                 AND NOT (OLD.status IN ('failed', 'dead_letter') AND NEW.status = 'queued')
                THEN 'metadata'
            -- A reference, once recorded, changes only when the delivery is dead-lettered
            -- again (after a requeue: a new message on the dead-letter topic).
            WHEN OLD.metadata ? 'dead_letter_reference'
                 AND NEW.metadata->'dead_letter_reference' IS DISTINCT FROM OLD.metadata->'dead_letter_reference'
                 AND NOT (OLD.status IN ('queued', 'in_progress', 'retrying') AND NEW.status = 'dead_letter')
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
$$;
