CREATE OR REPLACE FUNCTION email.match_outcome_events(p_delivery_ids text[] DEFAULT NULL::text[])
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    matched bigint[];
BEGIN
    -- SECURITY DEFINER: run by the worker (or a schedule) and by mark_deliveries_sent.
    -- Outcome events that matched no delivery when they arrived (the provider's event came
    -- before mark_sent stored its message id, or echoed a delivery id not enqueued yet)
    -- are matched now: those of the given deliveries, or every one (NULL). Returns how
    -- many were matched; the rest stay listed by email.unmatched_outcome_events.
    IF NOT EXISTS (SELECT FROM email.outcome_events AS e WHERE e.delivery_id IS NULL) THEN
        RETURN 0;
    END IF;
    WITH candidates AS (
        -- Of the given deliveries: their attempts' message ids, and the events that echoed
        -- their ids, each through its partial index of unmatched events; or, with NULL,
        -- every unmatched event. A message id match wins over an echoed id. A suppressed
        -- delivery was never sent: no outcome can be its.
        SELECT e.id, a.delivery_id, 1 AS preference
        FROM email.delivery_attempts AS a
        JOIN email.outcome_events AS e
          ON e.provider = a.provider AND e.provider_message_id = a.provider_message_id
         AND e.delivery_id IS NULL
        WHERE a.provider_message_id IS NOT NULL
          AND (p_delivery_ids IS NULL OR a.delivery_id = ANY (p_delivery_ids))
        UNION ALL
        SELECT e.id, d.delivery_id, 2
        FROM email.outcome_events AS e
        JOIN email.deliveries AS d ON d.delivery_id = e.echoed_delivery_id
        WHERE e.delivery_id IS NULL AND d.status <> 'suppressed'
          AND (p_delivery_ids IS NULL OR e.echoed_delivery_id = ANY (p_delivery_ids))
    ), found AS (
        SELECT e.id, c.delivery_id
        FROM (SELECT DISTINCT ON (c.id) c.id, c.delivery_id FROM candidates AS c
              ORDER BY c.id, c.preference) AS c
        JOIN email.outcome_events AS e ON e.id = c.id
        WHERE e.delivery_id IS NULL
        ORDER BY e.id
        FOR UPDATE OF e SKIP LOCKED
    ), updated AS (
        UPDATE email.outcome_events AS e
        SET delivery_id = found.delivery_id, matched_at = now()
        FROM found
        WHERE e.id = found.id AND e.delivery_id IS NULL
        RETURNING e.id
    )
    SELECT coalesce(array_agg(updated.id), '{}') INTO matched FROM updated;
    IF cardinality(matched) > 0 THEN
        PERFORM email.apply_outcome_events(matched);
    END IF;
    RETURN cardinality(matched);
END
$$;
