CREATE OR REPLACE FUNCTION email.retry_delay(p_policy email.workflow_policies, p_failures integer)
RETURNS interval
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    -- How long a delivery waits before its next attempt after p_failures failed attempts of
    -- its current retry budget: base * 2^(failures - 1), scaled by a uniform factor in
    -- [1 - jitter, 1 + jitter], at most cap (README "Worker policy").
    SELECT least(p_policy.backoff_cap,
                 p_policy.backoff_base * power(2, least(greatest(p_failures, 1) - 1, 30))
                 * (1 - p_policy.backoff_jitter + 2 * p_policy.backoff_jitter * random()))
$$;
