CREATE OR REPLACE FUNCTION email.requeue_delivery(p_delivery_id text, p_reason text)
RETURNS TABLE(/*{delivery_row_types}*/delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, lease_expires_at timestamp with time zone, next_attempt_at timestamp with time zone/*{end}*/, changed boolean)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    IF p_reason IS NULL OR btrim(p_reason) = '' THEN
        RAISE EXCEPTION 'a requeue needs a reason' USING ERRCODE = '22023', COLUMN = 'reason';
    END IF;
    -- The owner's function (no group role may execute it); the guard trigger refuses a
    -- requeue by any other login, by any path.
    PERFORM email.attach_event_payloads(jsonb_build_object(p_delivery_id,
        jsonb_build_object('reason', email.sanitize_error_message(p_reason),
                           'requeued_by', session_user::text)));
    RETURN QUERY
    WITH updated AS (
        UPDATE email.deliveries AS d
        SET status = 'queued',
            metadata = d.metadata || jsonb_build_object(/*{requeued_at_attempt_key}*/'requeued_at_attempt'/*{end}*/, d.attempts)
        WHERE d.delivery_id = p_delivery_id AND d.status IN /*{failed_statuses}*/('failed', 'dead_letter')/*{end}*/
        RETURNING /*{delivery_row}*/d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at/*{end}*/)
    SELECT updated.*, true FROM updated;
    IF NOT FOUND THEN
        RETURN QUERY
        SELECT /*{delivery_row}*/d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at/*{end}*/, false FROM email.deliveries AS d WHERE d.delivery_id = p_delivery_id;
    END IF;
END
$$;
