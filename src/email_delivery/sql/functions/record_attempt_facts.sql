CREATE OR REPLACE FUNCTION email.record_attempt_facts(p_result text, p_delivery_ids text[], p_attempts integer[], p_facts jsonb[], p_positions integer[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- The owner's internal step of mark_deliveries_sent / mark_deliveries_failed: the
    -- facts of the given positions into email.delivery_attempts. A report repeated with the
    -- same attempt, or a message id another delivery already holds, adds nothing.
    -- Each message id is first locked (transaction-scoped, in key order, so batches never
    -- deadlock): email.record_delivery_outcome takes the same lock before it looks the id
    -- up, so an outcome arriving during this report is either matched by it or found by
    -- the match that follows it, never missed by both.
    PERFORM pg_advisory_xact_lock(k.key)
    FROM (SELECT DISTINCT email.provider_message_lock(p_facts[pos]->>'provider',
                                                      p_facts[pos]->>'provider_message_id') AS key
          FROM unnest(p_positions) AS pos
          WHERE p_facts[pos] ? 'provider_message_id') AS k
    ORDER BY k.key;
    INSERT INTO email.delivery_attempts AS a (delivery_id, attempt, result, workflow, provider,
        provider_message_id, reply_code, duration_ms)
    SELECT d.delivery_id, p_attempts[pos], p_result, d.workflow, p_facts[pos]->>'provider',
           p_facts[pos]->>'provider_message_id', (p_facts[pos]->>'reply_code')::integer,
           (p_facts[pos]->>'duration_ms')::integer
    FROM unnest(p_positions) AS pos
    JOIN email.deliveries AS d ON d.delivery_id = p_delivery_ids[pos]
    WHERE p_facts[pos] IS NOT NULL
    ORDER BY d.delivery_id
    ON CONFLICT DO NOTHING;
END
$$;
