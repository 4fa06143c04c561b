CREATE OR REPLACE FUNCTION email.extend_claim(p_delivery_id text, p_attempt integer, p_lease interval DEFAULT NULL::interval)
RETURNS TABLE(held boolean, lease_expires_at timestamp with time zone)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    -- SECURITY DEFINER: the worker holds no write grant on the tables, only EXECUTE on the
    -- lifecycle functions; the guard trigger checks the row as it checks any client's.
    -- A heartbeat of a slow send: the claim of attempt p_attempt lives on for p_lease (else
    -- the workflow's policy's lease) from now. held is whether the caller still holds the
    -- claim: false once another attempt started (a takeover after the lease expired), the
    -- delivery finished (reaped, reported) or does not exist; then it must not send. A claim
    -- that expired but that nobody took over is still the caller's, and is extended.
    IF p_lease IS NOT NULL AND (p_lease <= interval '0' OR p_lease > interval /*{max_lease}*/'1 day'/*{end}*/) THEN
        RAISE EXCEPTION 'lease must be a positive interval of at most %, not %',
            /*{max_lease}*/'1 day'/*{end}*/, p_lease
            USING ERRCODE = '22023', COLUMN = 'lease';
    END IF;
    IF p_attempt IS NULL OR p_attempt < 1 THEN
        RAISE EXCEPTION 'attempt must be at least 1, not %', p_attempt
            USING ERRCODE = '22023', COLUMN = 'attempt';
    END IF;
    PERFORM email.attach_event_payloads(NULL);
    RETURN QUERY
    WITH extended AS (
        UPDATE email.deliveries AS d
        SET lease_expires_at = now() + coalesce(p_lease, (email.workflow_policy(d.workflow)).lease)
        WHERE d.delivery_id = p_delivery_id AND d.status = 'in_progress' AND d.attempts = p_attempt
        RETURNING d.lease_expires_at
    )
    SELECT true, extended.lease_expires_at FROM extended;
    IF NOT FOUND THEN
        RETURN QUERY SELECT false, NULL::timestamp with time zone;
    END IF;
END
$$;
