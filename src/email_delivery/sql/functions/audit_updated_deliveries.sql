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
    CROSS JOIN LATERAL (SELECT /*{changed_columns}*/array_remove(ARRAY[
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
            CASE WHEN n.created_at IS DISTINCT FROM o.created_at THEN 'created_at' END,
            CASE WHEN n.lease_expires_at IS DISTINCT FROM o.lease_expires_at THEN 'lease_expires_at' END,
            CASE WHEN n.next_attempt_at IS DISTINCT FROM o.next_attempt_at THEN 'next_attempt_at' END], NULL)/*{end}*/ AS changed) AS c
    WHERE c.changed <> '{}';
    RETURN NULL;
END
$$;
