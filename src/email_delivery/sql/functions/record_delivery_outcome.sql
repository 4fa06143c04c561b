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
        -- A suppressed delivery was never sent: no outcome can be its (a forged one must
        -- not clear the list nor mark the delivery delivered).
        SELECT d.delivery_id INTO found_id FROM email.deliveries AS d
        WHERE d.delivery_id = p_delivery_id AND d.status <> 'suppressed';
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
        left(email.sanitize_error_message(p_reason), /*{max_outcome_reason}*/500/*{end}*/),
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
$$;
