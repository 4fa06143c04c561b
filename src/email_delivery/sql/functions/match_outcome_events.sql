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
    WITH found AS (
        SELECT e.id, coalesce(a.delivery_id, d.delivery_id) AS delivery_id
        FROM email.outcome_events AS e
        LEFT JOIN email.delivery_attempts AS a
               ON a.provider = e.provider AND a.provider_message_id = e.provider_message_id
        LEFT JOIN email.deliveries AS d ON d.delivery_id = e.echoed_delivery_id
        WHERE e.delivery_id IS NULL
          AND (a.delivery_id IS NOT NULL OR d.delivery_id IS NOT NULL)
          AND (p_delivery_ids IS NULL
               OR coalesce(a.delivery_id, d.delivery_id) = ANY (p_delivery_ids))
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
