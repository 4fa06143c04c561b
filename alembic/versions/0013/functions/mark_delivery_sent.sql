CREATE OR REPLACE FUNCTION email.mark_delivery_sent(p_delivery_id text, p_attempt integer, p_payload jsonb DEFAULT NULL::jsonb, p_provider text DEFAULT NULL::text, p_provider_message_id text DEFAULT NULL::text, p_reply_code integer DEFAULT NULL::integer, p_duration_ms integer DEFAULT NULL::integer)
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, lease_expires_at timestamp with time zone, next_attempt_at timestamp with time zone, changed boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    facts jsonb[];
BEGIN
    -- One success report: the one-id case of email.mark_deliveries_sent, with the same
    -- result, written out as one UPDATE … RETURNING because the array form's unnest, sort
    -- and second join cost a per-call worker about twice the server CPU of the update.
    -- Any attempt's success is the truth, even a superseded one or after failed/dead_letter.
    IF p_delivery_id IS NULL THEN
        RAISE EXCEPTION 'delivery_ids must be 0 to % ids, none NULL', 10000
            USING ERRCODE = '22023', COLUMN = 'delivery_ids';
    END IF;
    IF octet_length(p_payload::text) > 15872 THEN
        RAISE EXCEPTION 'payload is larger than % bytes as JSON', 15872
            USING ERRCODE = '22023', COLUMN = 'payload';
    END IF;
    IF num_nonnulls(p_provider, p_provider_message_id, p_reply_code, p_duration_ms) > 0 THEN
        facts := email.attempt_facts(1, ARRAY[p_provider], ARRAY[p_provider_message_id],
                                     ARRAY[p_reply_code], ARRAY[p_duration_ms]);
    END IF;
    PERFORM email.attach_event_payloads(jsonb_build_object(p_delivery_id,
        coalesce(p_payload, '{}'::jsonb) || coalesce(facts[1], '{}'::jsonb)
        || jsonb_build_object('reported_attempt', p_attempt)));
    RETURN QUERY
    UPDATE email.deliveries AS d
    SET status = 'sent', last_error_code = NULL, last_error_message = NULL
    -- A suppressed delivery was never claimed: no report can be its truth.
    WHERE d.delivery_id = p_delivery_id AND d.status NOT IN ('sent', 'suppressed')
    RETURNING d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at, true;
    IF NOT FOUND THEN
        RETURN QUERY
        SELECT d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at, false
        FROM email.deliveries AS d
        WHERE d.delivery_id = p_delivery_id;
    END IF;
    IF facts IS NOT NULL THEN
        -- As the array form: the facts are kept, then outcome events that arrived before
        -- their message id was known are matched.
        PERFORM email.record_attempt_facts('sent', ARRAY[p_delivery_id], ARRAY[p_attempt],
                                           facts, ARRAY[1]);
        PERFORM email.match_outcome_events(ARRAY[p_delivery_id]);
    END IF;
END
$$;
