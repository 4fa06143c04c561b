CREATE OR REPLACE FUNCTION email.mark_delivery_dead_letter(p_delivery_id text, p_reference text)
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, lease_expires_at timestamp with time zone, next_attempt_at timestamp with time zone, changed boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    -- SECURITY DEFINER: the worker holds no write grant on the tables, only EXECUTE on the
    -- lifecycle functions; the guard trigger checks the row as it checks any client's.
    -- queued/in_progress/retrying move to dead_letter with the reference in metadata (and on
    -- the event). failed and dead_letter keep their status (failed -> dead_letter is not a
    -- transition) and only record a reference they lack. sent never changes.
    IF p_reference IS NULL
       OR char_length(p_reference) NOT BETWEEN 1 AND 200
       OR p_reference ~ '[[:space:][:cntrl:]]' THEN
        RAISE EXCEPTION 'reference must be 1-% printable characters without spaces',
            200 USING ERRCODE = '22023', COLUMN = 'reference';
    END IF;
    PERFORM email.attach_event_payloads(jsonb_build_object(p_delivery_id,
        jsonb_build_object('dead_letter_reference', p_reference)));
    RETURN QUERY
    WITH updated AS (
        UPDATE email.deliveries AS d
        SET status = CASE WHEN d.status IN ('queued', 'in_progress', 'retrying') THEN 'dead_letter' ELSE d.status END
                ::email.delivery_status,
            metadata = d.metadata || jsonb_build_object('dead_letter_reference', p_reference)
        WHERE d.delivery_id = p_delivery_id
          AND (d.status IN ('queued', 'in_progress', 'retrying')
               OR (d.status IN ('failed', 'dead_letter')
                   AND d.metadata->'dead_letter_reference' IS NULL))
        RETURNING d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at)
    SELECT updated.*, true FROM updated;
    IF NOT FOUND THEN
        RETURN QUERY
        SELECT d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at, false FROM email.deliveries AS d WHERE d.delivery_id = p_delivery_id;
    END IF;
END
$$;
