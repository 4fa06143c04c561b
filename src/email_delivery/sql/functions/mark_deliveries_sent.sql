CREATE OR REPLACE FUNCTION email.mark_deliveries_sent(p_delivery_ids text[], p_attempts integer[], p_payloads jsonb[], p_providers text[] DEFAULT NULL::text[], p_provider_message_ids text[] DEFAULT NULL::text[], p_reply_codes integer[] DEFAULT NULL::integer[], p_durations_ms integer[] DEFAULT NULL::integer[])
RETURNS TABLE(/*{delivery_row_types}*/delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, lease_expires_at timestamp with time zone, next_attempt_at timestamp with time zone/*{end}*/, changed boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    n integer := cardinality(p_delivery_ids);
    updated_ids text[];
    facts jsonb[];
BEGIN
    -- SECURITY DEFINER: the worker holds no write grant on the tables, only EXECUTE on the
    -- lifecycle functions; the guard trigger checks the row as it checks any client's.
    -- One row per input position, in input order, each what mark_delivery_sent would have
    -- returned had the calls run one after another in that order: a repeated id is sent by
    -- its first position, with that position's attempt and payload. Any attempt's success is
    -- the truth, even a superseded one or after failed/dead_letter.
    IF p_delivery_ids IS NULL OR array_position(p_delivery_ids, NULL) IS NOT NULL
       OR cardinality(p_delivery_ids) > /*{max_batch}*/10000/*{end}*/ THEN
        RAISE EXCEPTION 'delivery_ids must be 0 to % ids, none NULL', /*{max_batch}*/10000/*{end}*/
            USING ERRCODE = '22023', COLUMN = 'delivery_ids';
    END IF;
    IF cardinality(p_attempts) IS DISTINCT FROM cardinality(p_delivery_ids)
       OR cardinality(p_payloads) IS DISTINCT FROM cardinality(p_delivery_ids) THEN
        RAISE EXCEPTION 'attempts and payloads must have one item per delivery id'
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
    IF EXISTS (SELECT FROM unnest(p_payloads) AS p
               WHERE octet_length(p::text) > /*{max_caller_json_bytes}*/15872/*{end}*/) THEN
        RAISE EXCEPTION 'payload is larger than % bytes as JSON', /*{max_caller_json_bytes}*/15872/*{end}*/
            USING ERRCODE = '22023', COLUMN = 'payload';
    END IF;
    IF cardinality(p_delivery_ids) > 1 THEN
        -- Rows are locked in delivery_id order, so overlapping batches never deadlock;
        -- FOR NO KEY UPDATE (what the UPDATE takes anyway), so an outcome recorded meanwhile
        -- (its foreign key takes KEY SHARE while it holds the message id's advisory lock,
        -- which this report waits for) is not blocked into a deadlock.
        PERFORM FROM email.deliveries AS d WHERE d.delivery_id = ANY (p_delivery_ids)
        ORDER BY d.delivery_id FOR NO KEY UPDATE;
    END IF;
    -- The attempt's provider facts, per position (NULL when it has none): typed in
    -- email.delivery_attempts, and on the audit event beside the caller's payload.
    facts := email.attempt_facts(n, p_providers, p_provider_message_ids, p_reply_codes,
                                 p_durations_ms);
    PERFORM email.attach_event_payloads(
        (SELECT jsonb_object_agg(f.delivery_id,
                    coalesce(f.payload, '{}'::jsonb) || coalesce(f.facts, '{}'::jsonb)
                    || jsonb_build_object('reported_attempt', f.attempt))
         FROM (SELECT DISTINCT ON (i.delivery_id) i.delivery_id, i.attempt, i.payload, i.facts
               FROM unnest(p_delivery_ids, p_attempts, p_payloads, facts)
                    WITH ORDINALITY AS i(delivery_id, attempt, payload, facts, pos)
               ORDER BY i.delivery_id, i.pos) AS f));
    WITH updated AS (
        UPDATE email.deliveries AS d
        SET status = 'sent', last_error_code = NULL, last_error_message = NULL
        -- A suppressed delivery was never claimed: no report can be its truth.
        WHERE d.delivery_id = ANY (p_delivery_ids) AND d.status NOT IN /*{sent_report_skips}*/('sent', 'suppressed')/*{end}*/
        RETURNING d.delivery_id
    )
    SELECT coalesce(array_agg(updated.delivery_id), '{}') INTO updated_ids FROM updated;
    IF facts IS NOT NULL THEN
        -- Every report of a success keeps its facts (a duplicate send's message id must
        -- still find its delivery), the first position of an id only; then the outcome
        -- events that arrived before their message id was known are matched.
        PERFORM email.record_attempt_facts('sent', p_delivery_ids, p_attempts, facts,
            (SELECT array_agg(DISTINCT i.pos::integer) FROM (
                 SELECT DISTINCT ON (u.delivery_id) u.pos
                 FROM unnest(p_delivery_ids) WITH ORDINALITY AS u(delivery_id, pos)
                 ORDER BY u.delivery_id, u.pos) AS i));
        -- Of the ids reported with facts (as mark_delivery_sent does for one id).
        PERFORM email.match_outcome_events(ARRAY(
            SELECT i.delivery_id FROM unnest(p_delivery_ids, facts) AS i(delivery_id, fact)
            WHERE i.fact IS NOT NULL));
    END IF;

    RETURN QUERY
    WITH input AS (
        SELECT i.delivery_id, i.pos,
               row_number() OVER (PARTITION BY i.delivery_id ORDER BY i.pos) AS nth
        FROM unnest(p_delivery_ids) WITH ORDINALITY AS i(delivery_id, pos)
    )
    SELECT /*{delivery_row}*/d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at/*{end}*/,
           input.nth = 1 AND d.delivery_id = ANY (updated_ids)
    FROM input
    JOIN email.deliveries AS d ON d.delivery_id = input.delivery_id
    ORDER BY input.pos;
END
$$;
