CREATE OR REPLACE FUNCTION email.audit_inserted_deliveries()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    payloads jsonb := email.attached_payloads();
BEGIN
    -- The audit trail is written here and nowhere else: as the schema owner (no client role
    -- may insert events), once per statement for all its rows.
    INSERT INTO email.delivery_events
        (delivery_id, status, attempt, error_code, error_message, payload)
    SELECT n.delivery_id, n.status, n.attempts, n.last_error_code, n.last_error_message,
           payloads -> n.delivery_id
    FROM inserted_rows AS n;
    RETURN NULL;
END
$$;
