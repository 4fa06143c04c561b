CREATE OR REPLACE FUNCTION email.attempts_since_requeue(attempts integer, metadata jsonb)
RETURNS integer
LANGUAGE sql
IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    -- The attempts that count against the retry budget: attempts never decrease, so a
    -- requeue records where the new budget starts. A malformed record (possible only in rows
    -- written before revision 0005's guard) counts from zero instead of failing the caller:
    -- one bad row must never stall the reaper.
    SELECT attempts - CASE
        WHEN jsonb_typeof(metadata->/*{requeued_at_attempt_key}*/'requeued_at_attempt'/*{end}*/) = 'number'
             AND metadata->>/*{requeued_at_attempt_key}*/'requeued_at_attempt'/*{end}*/ ~ '^[0-9]{1,9}$'
            THEN least((metadata->>/*{requeued_at_attempt_key}*/'requeued_at_attempt'/*{end}*/)::integer, attempts)
        ELSE 0
    END
$$;
