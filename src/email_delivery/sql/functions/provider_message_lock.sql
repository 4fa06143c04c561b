CREATE OR REPLACE FUNCTION email.provider_message_lock(p_provider text, p_provider_message_id text)
RETURNS bigint
LANGUAGE sql
IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    -- The advisory lock key of one provider message id (see record_attempt_facts).
    SELECT hashtextextended('email.provider_message:' || p_provider || ':' || p_provider_message_id, 0)
$$;
