CREATE OR REPLACE FUNCTION email.mark_deliveries_failed(p_delivery_ids text[], p_attempts integer[], p_error_codes text[], p_error_messages text[], p_retryables boolean[], p_max_attempts integer[], p_payloads jsonb[], p_providers text[] DEFAULT NULL::text[], p_provider_message_ids text[] DEFAULT NULL::text[], p_reply_codes integer[] DEFAULT NULL::integer[], p_durations_ms integer[] DEFAULT NULL::integer[])
RETURNS TABLE(/*{delivery_row_types}*/delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, lease_expires_at timestamp with time zone, next_attempt_at timestamp with time zone/*{end}*/, changed boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    n integer := cardinality(p_delivery_ids);
    applied integer[];
    outcomes email.delivery_status[];
    retry_ats timestamp with time zone[];
    updated integer[];
    facts jsonb[];
BEGIN
    -- SECURITY DEFINER: the worker holds no write grant on the tables, only EXECUTE on the
    -- lifecycle functions; the guard trigger checks the row as it checks any client's.
    -- The one definition of a failure report (mark_delivery_failed is its one-id case): one
    -- row per input position, in input order, each what the report alone would have
    -- returned had the calls run one after another in that order. Only the live attempt may
    -- report a failure: of a repeated id, the first position naming the live attempt
    -- applies, and the later ones find the delivery no longer in progress. Where it leaves
    -- the delivery is email.failure_outcome's (a NULL max_attempts: the workflow's policy).
    IF p_delivery_ids IS NULL OR array_position(p_delivery_ids, NULL) IS NOT NULL
       OR n > /*{max_batch}*/10000/*{end}*/ THEN
        RAISE EXCEPTION 'delivery_ids must be 0 to % ids, none NULL', /*{max_batch}*/10000/*{end}*/
            USING ERRCODE = '22023', COLUMN = 'delivery_ids';
    END IF;
    IF cardinality(p_attempts) IS DISTINCT FROM n OR cardinality(p_error_codes) IS DISTINCT FROM n
       OR cardinality(p_error_messages) IS DISTINCT FROM n
       OR cardinality(p_retryables) IS DISTINCT FROM n
       OR cardinality(p_max_attempts) IS DISTINCT FROM n
       OR cardinality(p_payloads) IS DISTINCT FROM n THEN
        RAISE EXCEPTION 'every argument array must have one item per delivery id'
            USING ERRCODE = '22023', COLUMN = 'attempts';
    END IF;
    -- The provider facts (revision 0010): each array NULL (none given) or one per id.
    IF coalesce(cardinality(p_providers), n) <> n
       OR coalesce(cardinality(p_provider_message_ids), n) <> n
       OR coalesce(cardinality(p_reply_codes), n) <> n
       OR coalesce(cardinality(p_durations_ms), n) <> n THEN
        RAISE EXCEPTION 'providers, provider_message_ids, reply_codes and durations_ms must be '
                        'NULL or have one item per delivery id'
            USING ERRCODE = '22023', COLUMN = 'providers';
    END IF;
    facts := email.attempt_facts(n, p_providers, p_provider_message_ids, p_reply_codes,
                                 p_durations_ms);
    IF EXISTS (SELECT FROM unnest(p_max_attempts) AS m WHERE m < 1) THEN
        RAISE EXCEPTION 'max_attempts must be at least 1, not %',
            (SELECT m FROM unnest(p_max_attempts) AS m WHERE m < 1 LIMIT 1)
            USING ERRCODE = '22023', COLUMN = 'max_attempts';
    END IF;
    IF EXISTS (SELECT FROM unnest(p_payloads) AS p
               WHERE octet_length(p::text) > /*{max_caller_json_bytes}*/15872/*{end}*/) THEN
        RAISE EXCEPTION 'payload is larger than % bytes as JSON', /*{max_caller_json_bytes}*/15872/*{end}*/
            USING ERRCODE = '22023', COLUMN = 'payload';
    END IF;
    IF n > 1 THEN
        -- Rows are locked in delivery_id order, so overlapping batches never deadlock;
        -- FOR NO KEY UPDATE (what the UPDATE takes anyway), so an outcome recorded meanwhile
        -- (its foreign key takes KEY SHARE while it holds the message id's advisory lock,
        -- which this report waits for) is not blocked into a deadlock.
        PERFORM FROM email.deliveries AS d WHERE d.delivery_id = ANY (p_delivery_ids)
        ORDER BY d.delivery_id FOR NO KEY UPDATE;
    END IF;
    -- The positions that apply (per id, the first naming the live attempt) and where each
    -- leaves its delivery; the update re-checks the attempt: changed is what it did.
    SELECT coalesce(array_agg(f.pos), '{}'), coalesce(array_agg(o.status), '{}'),
           coalesce(array_agg(o.next_attempt_at), '{}')
    INTO applied, outcomes, retry_ats
    FROM (SELECT DISTINCT ON (i.delivery_id) i.pos::integer AS pos, d.workflow, d.attempts,
                 d.metadata
          FROM unnest(p_delivery_ids, p_attempts) WITH ORDINALITY AS i(delivery_id, attempt, pos)
          JOIN email.deliveries AS d ON d.delivery_id = i.delivery_id
          WHERE d.status = 'in_progress' AND d.attempts = i.attempt
          ORDER BY i.delivery_id, i.pos) AS f
    CROSS JOIN LATERAL email.failure_outcome(f.workflow, f.attempts, f.metadata,
                                             p_retryables[f.pos], p_max_attempts[f.pos]) AS o;
    PERFORM email.attach_event_payloads(
        (SELECT jsonb_object_agg(p_delivery_ids[pos],
                    coalesce(p_payloads[pos], '{}'::jsonb) || coalesce(facts[pos], '{}'::jsonb))
         FROM unnest(applied) AS pos
         WHERE p_payloads[pos] IS NOT NULL OR facts[pos] IS NOT NULL));
    WITH changed AS (
        UPDATE email.deliveries AS d
        SET status = a.outcome, next_attempt_at = a.retry_at,
            last_error_code = p_error_codes[a.pos],
            last_error_message = p_error_messages[a.pos]
        FROM unnest(applied, outcomes, retry_ats) AS a(pos, outcome, retry_at)
        WHERE d.delivery_id = p_delivery_ids[a.pos]
          AND d.status = 'in_progress' AND d.attempts = p_attempts[a.pos]
        RETURNING a.pos
    )
    SELECT coalesce(array_agg(changed.pos), '{}') INTO updated FROM changed;
    IF facts IS NOT NULL THEN
        -- A failed attempt's facts count only for the live attempt that reported.
        PERFORM email.record_attempt_facts('failed', p_delivery_ids, p_attempts, facts, updated);
    END IF;

    RETURN QUERY
    SELECT /*{delivery_row}*/d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at/*{end}*/,
           i.pos = ANY (updated)
    FROM unnest(p_delivery_ids) WITH ORDINALITY AS i(delivery_id, pos)
    JOIN email.deliveries AS d ON d.delivery_id = i.delivery_id
    ORDER BY i.pos;
END
$$;
