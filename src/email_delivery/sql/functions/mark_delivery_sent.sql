CREATE OR REPLACE FUNCTION email.mark_delivery_sent(p_delivery_id text, p_attempt integer, p_payload jsonb)
RETURNS TABLE(/*{delivery_row_types}*/delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone/*{end}*/, changed boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    -- SECURITY DEFINER: the worker holds no write grant on the tables, only EXECUTE on the
    -- lifecycle functions; the guard trigger checks the row as it checks any client's.
    IF octet_length(p_payload::text) > /*{max_caller_json_bytes}*/15872/*{end}*/ THEN
        RAISE EXCEPTION 'payload is larger than % bytes as JSON', /*{max_caller_json_bytes}*/15872/*{end}*/
            USING ERRCODE = '22023', COLUMN = 'payload';
    END IF;
    -- Any attempt's success is the truth, even a superseded one or after failed/dead_letter.
    PERFORM email.attach_event_payloads(jsonb_build_object(p_delivery_id,
        coalesce(p_payload, '{}'::jsonb) || jsonb_build_object('reported_attempt', p_attempt)));
    RETURN QUERY
    WITH updated AS (
        UPDATE email.deliveries AS d
        SET status = 'sent', last_error_code = NULL, last_error_message = NULL
        WHERE d.delivery_id = p_delivery_id AND d.status <> 'sent'
        RETURNING /*{delivery_row}*/d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at/*{end}*/)
    SELECT updated.*, true FROM updated;
    IF NOT FOUND THEN
        RETURN QUERY
        SELECT /*{delivery_row}*/d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at/*{end}*/, false FROM email.deliveries AS d WHERE d.delivery_id = p_delivery_id;
    END IF;
END
$$;
