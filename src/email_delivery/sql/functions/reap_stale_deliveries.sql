CREATE OR REPLACE FUNCTION email.reap_stale_deliveries(p_lease interval DEFAULT NULL::interval, p_max_attempts integer DEFAULT NULL::integer, p_limit integer DEFAULT 1000)
RETURNS TABLE(/*{delivery_row_types}*/delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, lease_expires_at timestamp with time zone, next_attempt_at timestamp with time zone/*{end}*/, changed boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    -- SECURITY DEFINER: the worker holds no write grant on the tables, only EXECUTE on the
    -- lifecycle functions; the guard trigger checks the row as it checks any client's.
    -- Claims whose stored lease_expires_at has passed go back to retrying (with the policy's
    -- backoff) or, with the retry budget used up (p_max_attempts, else the workflow's
    -- policy), to dead_letter: email.failure_outcome decides, as for a reported failure.
    -- p_lease is not used since revision 0008 (each claim stores its own expiry, so no
    -- reaper can judge a live claim expired); it stays so existing calls keep working.
    IF p_max_attempts IS NOT NULL AND p_max_attempts < 1 THEN
        RAISE EXCEPTION 'max_attempts must be at least 1, not %', p_max_attempts
            USING ERRCODE = '22023', COLUMN = 'max_attempts';
    END IF;
    IF p_limit IS NULL OR p_limit < 1 THEN
        RAISE EXCEPTION 'limit must be at least 1, not %', p_limit
            USING ERRCODE = '22023', COLUMN = 'limit';
    END IF;
    PERFORM email.attach_event_payloads(NULL);
    -- SKIP LOCKED: concurrent reapers (and a claimer taking the row over) split the work;
    -- the lock re-checks the expiry on the newest row version.
    RETURN QUERY
    WITH stale AS (
        SELECT d.delivery_id, d.workflow, d.attempts, d.metadata, d.lease_expires_at
        FROM email.deliveries AS d
        WHERE d.status = 'in_progress' AND d.lease_expires_at <= now()
        ORDER BY d.lease_expires_at
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ),
    decided AS (
        SELECT stale.*, o.status AS outcome, o.next_attempt_at AS retry_at
        FROM stale
        CROSS JOIN LATERAL email.failure_outcome(stale.workflow, stale.attempts, stale.metadata,
                                                 true, p_max_attempts) AS o
    ),
    reaped AS (
        UPDATE email.deliveries AS d
        SET status = decided.outcome, next_attempt_at = decided.retry_at,
            last_error_code = /*{lease_expired_code}*/'LEASE_EXPIRED'/*{end}*/,
            last_error_message = format(
                'attempt %s claimed at %s got no report before its lease expired at %s',
                d.attempts, d.last_attempted_at, decided.lease_expires_at)
        FROM decided
        WHERE d.delivery_id = decided.delivery_id
        RETURNING /*{delivery_row}*/d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at/*{end}*/)
    SELECT reaped.*, true FROM reaped;
END
$$;
