CREATE OR REPLACE FUNCTION email.failure_outcome(p_workflow text, p_attempts integer, p_metadata jsonb, p_retryable boolean, p_max_attempts integer DEFAULT NULL::integer)
RETURNS TABLE(status email.delivery_status, next_attempt_at timestamp with time zone)
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    policy email.workflow_policies := email.workflow_policy(p_workflow);
    failures integer := email.attempts_since_requeue(p_attempts, p_metadata);
BEGIN
    -- Where a failed attempt leaves a delivery (mark_delivery_failed and the reaper): failed
    -- when not retryable; dead_letter once the retry budget (p_max_attempts, else the
    -- workflow's policy) is used up; else retrying, not before now() + the policy's backoff.
    IF NOT coalesce(p_retryable, true) THEN
        RETURN QUERY SELECT 'failed'::email.delivery_status, NULL::timestamptz;
    ELSIF failures >= coalesce(p_max_attempts, policy.max_attempts) THEN
        RETURN QUERY SELECT 'dead_letter'::email.delivery_status, NULL::timestamptz;
    ELSE
        RETURN QUERY SELECT 'retrying'::email.delivery_status,
                            now() + email.retry_delay(policy, failures);
    END IF;
END
$$;
