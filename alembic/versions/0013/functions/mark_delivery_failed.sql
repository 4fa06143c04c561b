CREATE OR REPLACE FUNCTION email.mark_delivery_failed(p_delivery_id text, p_attempt integer, p_error_code text, p_error_message text, p_retryable boolean, p_max_attempts integer DEFAULT NULL::integer, p_payload jsonb DEFAULT NULL::jsonb, p_provider text DEFAULT NULL::text, p_provider_message_id text DEFAULT NULL::text, p_reply_code integer DEFAULT NULL::integer, p_duration_ms integer DEFAULT NULL::integer)
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, lease_expires_at timestamp with time zone, next_attempt_at timestamp with time zone, changed boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    facts jsonb[];
    live email.deliveries;
    outcome record;
BEGIN
    -- One failure report: the one-id case of email.mark_deliveries_failed, with the same
    -- result, written out because the array form's unnest, sort and second join cost a
    -- per-call worker about twice the server CPU of the update. Only the live attempt may
    -- report a failure; where it leaves the delivery is email.failure_outcome's (a NULL
    -- max_attempts: the workflow's policy).
    IF p_delivery_id IS NULL THEN
        RAISE EXCEPTION 'delivery_ids must be 0 to % ids, none NULL', 10000
            USING ERRCODE = '22023', COLUMN = 'delivery_ids';
    END IF;
    IF p_max_attempts < 1 THEN
        RAISE EXCEPTION 'max_attempts must be at least 1, not %', p_max_attempts
            USING ERRCODE = '22023', COLUMN = 'max_attempts';
    END IF;
    IF octet_length(p_payload::text) > 15872 THEN
        RAISE EXCEPTION 'payload is larger than % bytes as JSON', 15872
            USING ERRCODE = '22023', COLUMN = 'payload';
    END IF;
    IF num_nonnulls(p_provider, p_provider_message_id, p_reply_code, p_duration_ms) > 0 THEN
        facts := email.attempt_facts(1, ARRAY[p_provider], ARRAY[p_provider_message_id],
                                     ARRAY[p_reply_code], ARRAY[p_duration_ms]);
    END IF;
    SELECT d.* INTO live FROM email.deliveries AS d
    WHERE d.delivery_id = p_delivery_id AND d.status = 'in_progress' AND d.attempts = p_attempt;
    IF FOUND THEN
        SELECT o.status, o.next_attempt_at INTO outcome
        FROM email.failure_outcome(live.workflow, live.attempts, live.metadata, p_retryable,
                                   p_max_attempts) AS o;
        PERFORM email.attach_event_payloads(
            CASE WHEN p_payload IS NOT NULL OR facts IS NOT NULL
                 THEN jsonb_build_object(p_delivery_id,
                          coalesce(p_payload, '{}'::jsonb) || coalesce(facts[1], '{}'::jsonb))
            END);
        -- The update re-checks the attempt: changed is what it did.
        RETURN QUERY
        UPDATE email.deliveries AS d
        SET status = outcome.status, next_attempt_at = outcome.next_attempt_at,
            last_error_code = p_error_code, last_error_message = p_error_message
        WHERE d.delivery_id = p_delivery_id AND d.status = 'in_progress' AND d.attempts = p_attempt
        RETURNING d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at, true;
        IF FOUND THEN
            IF facts IS NOT NULL THEN
                PERFORM email.record_attempt_facts('failed', ARRAY[p_delivery_id],
                                                   ARRAY[p_attempt], facts, ARRAY[1]);
            END IF;
            RETURN;
        END IF;
    ELSE
        PERFORM email.attach_event_payloads(NULL);
    END IF;
    RETURN QUERY
    SELECT d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at, false
    FROM email.deliveries AS d
    WHERE d.delivery_id = p_delivery_id;
END
$$;
