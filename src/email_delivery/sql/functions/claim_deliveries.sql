CREATE OR REPLACE FUNCTION email.claim_deliveries(p_delivery_ids text[], p_lease interval)
RETURNS TABLE(/*{delivery_row_types}*/delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone/*{end}*/, changed boolean, attempt integer)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    claimed_ids text[];
BEGIN
    -- The batch form of claim_delivery, for the tracker's group commit: one row per input
    -- position, in input order, each exactly what claim_delivery would have returned had the
    -- calls run one after another in that order (a repeated id is claimed by its first
    -- position; the later ones see that live claim). An unknown id returns no row.
    IF p_lease IS NULL OR p_lease <= interval '0' THEN
        RAISE EXCEPTION 'lease must be a positive interval, not %', p_lease
            USING ERRCODE = '22023', COLUMN = 'lease';
    END IF;
    IF p_delivery_ids IS NULL OR array_position(p_delivery_ids, NULL) IS NOT NULL
       OR cardinality(p_delivery_ids) > /*{max_batch}*/10000/*{end}*/ THEN
        RAISE EXCEPTION 'delivery_ids must be 0 to % ids, none NULL', /*{max_batch}*/10000/*{end}*/
            USING ERRCODE = '22023', COLUMN = 'delivery_ids';
    END IF;
    PERFORM email.attach_event_payloads(NULL);
    IF cardinality(p_delivery_ids) > 1 THEN
        -- Rows are locked in delivery_id order, so overlapping batches never deadlock.
        PERFORM FROM email.deliveries AS d WHERE d.delivery_id = ANY (p_delivery_ids)
        ORDER BY d.delivery_id FOR UPDATE;
    END IF;
    WITH input AS (
        SELECT DISTINCT ON (i.delivery_id) i.delivery_id
        FROM unnest(p_delivery_ids) AS i(delivery_id)
    ),
    claimed AS (
        UPDATE email.deliveries AS d
        SET status = 'in_progress', attempts = d.attempts + 1, last_attempted_at = now()
        FROM input
        WHERE d.delivery_id = input.delivery_id
          AND (d.status IN /*{claimable_statuses}*/('queued', 'retrying')/*{end}*/
               OR (d.status = 'in_progress'
                   AND coalesce(d.last_attempted_at, '-infinity') <= now() - p_lease))
        RETURNING d.delivery_id
    )
    SELECT coalesce(array_agg(claimed.delivery_id), '{}') INTO claimed_ids FROM claimed;

    RETURN QUERY
    WITH input AS (
        SELECT i.delivery_id, i.pos,
               row_number() OVER (PARTITION BY i.delivery_id ORDER BY i.pos) AS nth
        FROM unnest(p_delivery_ids) WITH ORDINALITY AS i(delivery_id, pos)
    )
    SELECT /*{delivery_row}*/d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at/*{end}*/,
           input.nth = 1 AND d.delivery_id = ANY (claimed_ids),
           CASE WHEN input.nth = 1 AND d.delivery_id = ANY (claimed_ids) THEN d.attempts END
    FROM input
    JOIN email.deliveries AS d ON d.delivery_id = input.delivery_id
    ORDER BY input.pos;
END
$$;
