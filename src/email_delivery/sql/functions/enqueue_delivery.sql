CREATE OR REPLACE FUNCTION email.enqueue_delivery(p_delivery_id text, p_workflow text, p_recipient text, p_metadata jsonb, p_queued_at timestamp with time zone)
RETURNS TABLE(/*{delivery_row_types}*/delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, lease_expires_at timestamp with time zone, next_attempt_at timestamp with time zone/*{end}*/, created boolean, conflicts text[])
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    created_id text;
BEGIN
    -- SECURITY DEFINER: the worker holds no write grant on the tables, only EXECUTE on the
    -- lifecycle functions; the guard trigger checks the row as it checks any client's.
    IF octet_length(p_metadata::text) > /*{max_caller_json_bytes}*/15872/*{end}*/ THEN
        RAISE EXCEPTION 'metadata is larger than % bytes as JSON', /*{max_caller_json_bytes}*/15872/*{end}*/
            USING ERRCODE = '22023', COLUMN = 'metadata';
    END IF;
    PERFORM email.attach_event_payloads(NULL);
    IF EXISTS (SELECT FROM email.suppressions AS s WHERE s.address = p_recipient) THEN
        -- The recipient is on the suppression list (revision 0012): a new delivery ends at
        -- once in 'suppressed' (email.suppress_new_deliveries decides, by expiry and the
        -- workflow's policy). Then the row as the other path returns it.
        INSERT INTO email.deliveries AS d (delivery_id, workflow, recipient, metadata, queued_at)
        VALUES (p_delivery_id, p_workflow, p_recipient, coalesce(p_metadata, '{}'::jsonb),
                coalesce(p_queued_at, now()))
        ON CONFLICT (delivery_id) DO NOTHING
        RETURNING d.delivery_id INTO created_id;
        IF created_id IS NOT NULL THEN
            PERFORM email.suppress_new_deliveries(ARRAY[created_id]);
        END IF;
    ELSE
        -- Insert or nothing: a redelivered event never changes the row nor writes an event.
        RETURN QUERY
        WITH inserted AS (
            INSERT INTO email.deliveries AS d (delivery_id, workflow, recipient, metadata, queued_at)
            VALUES (p_delivery_id, p_workflow, p_recipient, coalesce(p_metadata, '{}'::jsonb),
                    coalesce(p_queued_at, now()))
            ON CONFLICT (delivery_id) DO NOTHING
            RETURNING /*{delivery_row}*/d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at/*{end}*/)
        SELECT inserted.*, true, '{}'::text[] FROM inserted;
        IF FOUND THEN
            RETURN;
        END IF;
    END IF;
    -- ON CONFLICT waited for a concurrent inserter, so the row is committed and visible now.
    RETURN QUERY
    SELECT /*{delivery_row}*/d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at/*{end}*/, created_id IS NOT NULL,
           array_remove(ARRAY[
               CASE WHEN d.workflow IS DISTINCT FROM p_workflow THEN 'workflow' END,
               CASE WHEN d.recipient IS DISTINCT FROM p_recipient THEN 'recipient' END],
               NULL)
    FROM email.deliveries AS d
    WHERE d.delivery_id = p_delivery_id;
END
$$;
