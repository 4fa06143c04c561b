SET LOCAL lock_timeout = '5s';

SET LOCAL statement_timeout = '60s';

CREATE OR REPLACE FUNCTION email.claim_deliveries(p_delivery_ids text[], p_lease interval DEFAULT NULL::interval)
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, lease_expires_at timestamp with time zone, next_attempt_at timestamp with time zone, changed boolean, attempt integer, retry_at timestamp with time zone)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    claimed_ids text[];
BEGIN
    -- SECURITY DEFINER: the worker holds no write grant on the tables, only EXECUTE on the
    -- lifecycle functions; the guard trigger checks the row as it checks any client's.
    -- The array claim: the tracker's group commit sends many ids; claim_delivery is the
    -- one-id case, written out (one UPDATE), with the same rule (the claimable_row and
    -- claim_assignments placeholders). One row per input position, in input order, each what a
    -- claim of that id alone would have returned had the calls run one after another in that
    -- order (a repeated id is claimed by its first position; the later ones see that live
    -- claim). An unknown id returns no row.
    -- Claimable: queued; retrying once its next_attempt_at has come (before that, retry_at
    -- says when); in_progress whose stored lease_expires_at has passed. A claim is judged by
    -- its own stored expiry, never by this caller's lease, so no worker can take over a live
    -- claim. The new claim lives p_lease, or its workflow's policy's lease.
    IF p_lease IS NOT NULL AND (p_lease <= interval '0' OR p_lease > interval '1 day') THEN
        RAISE EXCEPTION 'lease must be a positive interval of at most %, not %',
            '1 day', p_lease
            USING ERRCODE = '22023', COLUMN = 'lease';
    END IF;
    IF p_delivery_ids IS NULL OR array_position(p_delivery_ids, NULL) IS NOT NULL
       OR cardinality(p_delivery_ids) > 10000 THEN
        RAISE EXCEPTION 'delivery_ids must be 0 to % ids, none NULL', 10000
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
        SET status = 'in_progress', attempts = d.attempts + 1, last_attempted_at = now(), lease_expires_at = now() + coalesce(p_lease, (email.workflow_policy(d.workflow)).lease)
        FROM input
        WHERE d.delivery_id = input.delivery_id
          AND ((d.status IN ('queued', 'retrying') AND coalesce(d.next_attempt_at, '-infinity') <= now()) OR (d.status = 'in_progress' AND d.lease_expires_at <= now()))
        RETURNING d.delivery_id
    )
    SELECT coalesce(array_agg(claimed.delivery_id), '{}') INTO claimed_ids FROM claimed;

    RETURN QUERY
    WITH input AS (
        SELECT i.delivery_id, i.pos,
               row_number() OVER (PARTITION BY i.delivery_id ORDER BY i.pos) AS nth
        FROM unnest(p_delivery_ids) WITH ORDINALITY AS i(delivery_id, pos)
    )
    SELECT d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at,
           input.nth = 1 AND d.delivery_id = ANY (claimed_ids),
           CASE WHEN input.nth = 1 AND d.delivery_id = ANY (claimed_ids) THEN d.attempts END,
           CASE WHEN NOT (input.nth = 1 AND d.delivery_id = ANY (claimed_ids))
                     AND d.status = 'retrying' AND d.next_attempt_at > now()
                THEN d.next_attempt_at END
    FROM input
    JOIN email.deliveries AS d ON d.delivery_id = input.delivery_id
    ORDER BY input.pos;
END
$$;;

CREATE OR REPLACE FUNCTION email.claim_delivery(p_delivery_id text, p_lease interval DEFAULT NULL::interval)
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, lease_expires_at timestamp with time zone, next_attempt_at timestamp with time zone, changed boolean, attempt integer, retry_at timestamp with time zone)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    -- One claim: the one-id case of email.claim_deliveries with the same rule (the
    -- claimable_row and claim_assignments placeholders) and the same result, written out as
    -- one UPDATE … RETURNING because the array form's unnest, sort and second join cost a
    -- per-call worker about twice the server CPU of the claim itself.
    IF p_lease IS NOT NULL AND (p_lease <= interval '0' OR p_lease > interval '1 day') THEN
        RAISE EXCEPTION 'lease must be a positive interval of at most %, not %',
            '1 day', p_lease
            USING ERRCODE = '22023', COLUMN = 'lease';
    END IF;
    IF p_delivery_id IS NULL THEN
        RAISE EXCEPTION 'delivery_ids must be 0 to % ids, none NULL', 10000
            USING ERRCODE = '22023', COLUMN = 'delivery_ids';
    END IF;
    PERFORM email.attach_event_payloads(NULL);
    RETURN QUERY
    UPDATE email.deliveries AS d
    SET status = 'in_progress', attempts = d.attempts + 1, last_attempted_at = now(), lease_expires_at = now() + coalesce(p_lease, (email.workflow_policy(d.workflow)).lease)
    WHERE d.delivery_id = p_delivery_id
      AND ((d.status IN ('queued', 'retrying') AND coalesce(d.next_attempt_at, '-infinity') <= now()) OR (d.status = 'in_progress' AND d.lease_expires_at <= now()))
    RETURNING d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at, true, d.attempts, NULL::timestamp with time zone;
    IF NOT FOUND THEN
        -- Not claimable (or unknown: no row): the row as it is, and when a retry may come.
        RETURN QUERY
        SELECT d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at, false, NULL::integer,
               CASE WHEN d.status = 'retrying' AND d.next_attempt_at > now()
                    THEN d.next_attempt_at END
        FROM email.deliveries AS d
        WHERE d.delivery_id = p_delivery_id;
    END IF;
END
$$;;

CREATE OR REPLACE FUNCTION email.drop_expired_event_partitions(p_before timestamp with time zone)
RETURNS TABLE(name text, rows_estimate bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    expired record;
    oldest_in_flight timestamp with time zone;
BEGIN
    -- Retention of the audit log by whole partitions: a partition whose range ends before
    -- p_before (the sent-retention cutoff) is detached and dropped, unless a delivery
    -- still in flight began in its range (its history stays). What remains of the other
    -- deliveries of that range is kept only as their row, until retention deletes it.
    -- Read once, not per partition: the in-flight deliveries are found through the
    -- (status, updated_at) index but not ordered by created_at, so each check reads them all.
    SELECT min(d.created_at) INTO oldest_in_flight
    FROM email.deliveries AS d
    WHERE d.status IN ('queued', 'in_progress', 'retrying');
    FOR expired IN
        SELECT p.name, p.upper_bound, p.rows_estimate FROM email.event_partitions() AS p
        WHERE NOT p.is_default AND p.upper_bound <= p_before
        ORDER BY p.upper_bound
    LOOP
        EXIT WHEN oldest_in_flight < expired.upper_bound;
        EXECUTE format('ALTER TABLE email.delivery_events DETACH PARTITION email.%I', expired.name);
        EXECUTE format('DROP TABLE email.%I', expired.name);
        name := expired.name;
        rows_estimate := expired.rows_estimate;
        RETURN NEXT;
    END LOOP;
END
$$;;

CREATE OR REPLACE FUNCTION email.mark_delivery_failed(p_delivery_id text, p_attempt integer, p_error_code text, p_error_message text, p_retryable boolean, p_max_attempts integer DEFAULT NULL::integer, p_payload jsonb DEFAULT NULL::jsonb, p_provider text DEFAULT NULL::text, p_provider_message_id text DEFAULT NULL::text, p_reply_code integer DEFAULT NULL::integer, p_duration_ms integer DEFAULT NULL::integer)
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, lease_expires_at timestamp with time zone, next_attempt_at timestamp with time zone, changed boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    facts jsonb[];
    live email.deliveries;
    outcome record;
BEGIN
    -- One failure report: the one-id case of email.mark_deliveries_failed, with the same
    -- result, written out because the array form's unnest, sort and second join cost a
    -- per-call worker about twice the server CPU of the update. Only the live attempt may
    -- report a failure; where it leaves the delivery is email.failure_outcome's (a NULL
    -- max_attempts: the workflow's policy).
    IF p_delivery_id IS NULL THEN
        RAISE EXCEPTION 'delivery_ids must be 0 to % ids, none NULL', 10000
            USING ERRCODE = '22023', COLUMN = 'delivery_ids';
    END IF;
    IF p_max_attempts < 1 THEN
        RAISE EXCEPTION 'max_attempts must be at least 1, not %', p_max_attempts
            USING ERRCODE = '22023', COLUMN = 'max_attempts';
    END IF;
    IF octet_length(p_payload::text) > 15872 THEN
        RAISE EXCEPTION 'payload is larger than % bytes as JSON', 15872
            USING ERRCODE = '22023', COLUMN = 'payload';
    END IF;
    IF num_nonnulls(p_provider, p_provider_message_id, p_reply_code, p_duration_ms) > 0 THEN
        facts := email.attempt_facts(1, ARRAY[p_provider], ARRAY[p_provider_message_id],
                                     ARRAY[p_reply_code], ARRAY[p_duration_ms]);
    END IF;
    SELECT d.* INTO live FROM email.deliveries AS d
    WHERE d.delivery_id = p_delivery_id AND d.status = 'in_progress' AND d.attempts = p_attempt;
    IF FOUND THEN
        SELECT o.status, o.next_attempt_at INTO outcome
        FROM email.failure_outcome(live.workflow, live.attempts, live.metadata, p_retryable,
                                   p_max_attempts) AS o;
        PERFORM email.attach_event_payloads(
            CASE WHEN p_payload IS NOT NULL OR facts IS NOT NULL
                 THEN jsonb_build_object(p_delivery_id,
                          coalesce(p_payload, '{}'::jsonb) || coalesce(facts[1], '{}'::jsonb))
            END);
        -- The update re-checks the attempt: changed is what it did.
        RETURN QUERY
        UPDATE email.deliveries AS d
        SET status = outcome.status, next_attempt_at = outcome.next_attempt_at,
            last_error_code = p_error_code, last_error_message = p_error_message
        WHERE d.delivery_id = p_delivery_id AND d.status = 'in_progress' AND d.attempts = p_attempt
        RETURNING d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at, true;
        IF FOUND THEN
            IF facts IS NOT NULL THEN
                PERFORM email.record_attempt_facts('failed', ARRAY[p_delivery_id],
                                                   ARRAY[p_attempt], facts, ARRAY[1]);
            END IF;
            RETURN;
        END IF;
    ELSE
        PERFORM email.attach_event_payloads(NULL);
    END IF;
    RETURN QUERY
    SELECT d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at, false
    FROM email.deliveries AS d
    WHERE d.delivery_id = p_delivery_id;
END
$$;;

CREATE OR REPLACE FUNCTION email.mark_delivery_sent(p_delivery_id text, p_attempt integer, p_payload jsonb DEFAULT NULL::jsonb, p_provider text DEFAULT NULL::text, p_provider_message_id text DEFAULT NULL::text, p_reply_code integer DEFAULT NULL::integer, p_duration_ms integer DEFAULT NULL::integer)
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, lease_expires_at timestamp with time zone, next_attempt_at timestamp with time zone, changed boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    facts jsonb[];
BEGIN
    -- One success report: the one-id case of email.mark_deliveries_sent, with the same
    -- result, written out as one UPDATE … RETURNING because the array form's unnest, sort
    -- and second join cost a per-call worker about twice the server CPU of the update.
    -- Any attempt's success is the truth, even a superseded one or after failed/dead_letter.
    IF p_delivery_id IS NULL THEN
        RAISE EXCEPTION 'delivery_ids must be 0 to % ids, none NULL', 10000
            USING ERRCODE = '22023', COLUMN = 'delivery_ids';
    END IF;
    IF octet_length(p_payload::text) > 15872 THEN
        RAISE EXCEPTION 'payload is larger than % bytes as JSON', 15872
            USING ERRCODE = '22023', COLUMN = 'payload';
    END IF;
    IF num_nonnulls(p_provider, p_provider_message_id, p_reply_code, p_duration_ms) > 0 THEN
        facts := email.attempt_facts(1, ARRAY[p_provider], ARRAY[p_provider_message_id],
                                     ARRAY[p_reply_code], ARRAY[p_duration_ms]);
    END IF;
    PERFORM email.attach_event_payloads(jsonb_build_object(p_delivery_id,
        coalesce(p_payload, '{}'::jsonb) || coalesce(facts[1], '{}'::jsonb)
        || jsonb_build_object('reported_attempt', p_attempt)));
    RETURN QUERY
    UPDATE email.deliveries AS d
    SET status = 'sent', last_error_code = NULL, last_error_message = NULL
    -- A suppressed delivery was never claimed: no report can be its truth.
    WHERE d.delivery_id = p_delivery_id AND d.status NOT IN ('sent', 'suppressed')
    RETURNING d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at, true;
    IF NOT FOUND THEN
        RETURN QUERY
        SELECT d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at, false
        FROM email.deliveries AS d
        WHERE d.delivery_id = p_delivery_id;
    END IF;
    IF facts IS NOT NULL THEN
        -- As the array form: the facts are kept, then outcome events that arrived before
        -- their message id was known are matched.
        PERFORM email.record_attempt_facts('sent', ARRAY[p_delivery_id], ARRAY[p_attempt],
                                           facts, ARRAY[1]);
        PERFORM email.match_outcome_events(ARRAY[p_delivery_id]);
    END IF;
END
$$;;
