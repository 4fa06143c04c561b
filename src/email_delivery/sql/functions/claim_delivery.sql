CREATE OR REPLACE FUNCTION email.claim_delivery(p_delivery_id text, p_lease interval DEFAULT NULL::interval)
RETURNS TABLE(/*{delivery_row_types}*/delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, lease_expires_at timestamp with time zone, next_attempt_at timestamp with time zone/*{end}*/, changed boolean, attempt integer, retry_at timestamp with time zone)
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    -- One claim: the one-id case of email.claim_deliveries, where the rule lives.
    SELECT * FROM email.claim_deliveries(ARRAY[p_delivery_id], p_lease)
$$;
