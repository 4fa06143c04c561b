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
    -- An event is stamped with the change's own time (the row's created_at), so a
    -- delivery's events lie within its created_at..updated_at (purge relies on it).
    INSERT INTO email.delivery_events
        (delivery_id, status, attempt, error_code, error_message, payload, created_at)
    SELECT n.delivery_id, n.status, n.attempts, n.last_error_code, n.last_error_message,
           payloads -> n.delivery_id, n.created_at
    FROM inserted_rows AS n;
    RETURN NULL;
END
$$;
