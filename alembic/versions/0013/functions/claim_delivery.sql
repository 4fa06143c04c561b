CREATE OR REPLACE FUNCTION email.claim_delivery(p_delivery_id text, p_lease interval DEFAULT NULL::interval)
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, lease_expires_at timestamp with time zone, next_attempt_at timestamp with time zone, changed boolean, attempt integer, retry_at timestamp with time zone)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    -- One claim: the one-id case of email.claim_deliveries with the same rule (the
    -- claimable_row and claim_assignments placeholders) and the same result, written out as
    -- one UPDATE … RETURNING because the array form's unnest, sort and second join cost a
    -- per-call worker about twice the server CPU of the claim itself.
    IF p_lease IS NOT NULL AND (p_lease <= interval '0' OR p_lease > interval '1 day') THEN
        RAISE EXCEPTION 'lease must be a positive interval of at most %, not %',
            '1 day', p_lease
            USING ERRCODE = '22023', COLUMN = 'lease';
    END IF;
    IF p_delivery_id IS NULL THEN
        RAISE EXCEPTION 'delivery_ids must be 0 to % ids, none NULL', 10000
            USING ERRCODE = '22023', COLUMN = 'delivery_ids';
    END IF;
    PERFORM email.attach_event_payloads(NULL);
    RETURN QUERY
    UPDATE email.deliveries AS d
    SET status = 'in_progress', attempts = d.attempts + 1, last_attempted_at = now(), lease_expires_at = now() + coalesce(p_lease, (email.workflow_policy(d.workflow)).lease)
    WHERE d.delivery_id = p_delivery_id
      AND ((d.status IN ('queued', 'retrying') AND coalesce(d.next_attempt_at, '-infinity') <= now()) OR (d.status = 'in_progress' AND d.lease_expires_at <= now()))
    RETURNING d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at, true, d.attempts, NULL::timestamp with time zone;
    IF NOT FOUND THEN
        -- Not claimable (or unknown: no row): the row as it is, and when a retry may come.
        RETURN QUERY
        SELECT d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at, false, NULL::integer,
               CASE WHEN d.status = 'retrying' AND d.next_attempt_at > now()
                    THEN d.next_attempt_at END
        FROM email.deliveries AS d
        WHERE d.delivery_id = p_delivery_id;
    END IF;
END
$$;
