CREATE OR REPLACE FUNCTION email.attempt_facts(p_count integer, p_providers text[], p_provider_message_ids text[], p_reply_codes integer[], p_durations_ms integer[])
RETURNS jsonb[]
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- The provider facts of each reported attempt as a JSON object (its keys those given),
    -- NULL for a position without any, and NULL altogether when no array was given: a
    -- report without facts pays nothing more.
    SELECT CASE
        WHEN coalesce(p_providers, p_provider_message_ids) IS NULL
             AND coalesce(p_reply_codes, p_durations_ms) IS NULL THEN NULL
        ELSE (SELECT array_agg(nullif(jsonb_strip_nulls(jsonb_build_object(
                         'provider', p_providers[i],
                         'provider_message_id', p_provider_message_ids[i],
                         'reply_code', p_reply_codes[i],
                         'duration_ms', p_durations_ms[i])), '{}'::jsonb) ORDER BY i)
              FROM generate_series(1, p_count) AS i)
    END
$$;
