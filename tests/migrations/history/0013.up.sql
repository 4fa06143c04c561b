SET LOCAL lock_timeout = '5s';

SET LOCAL statement_timeout = '60s';

CREATE OR REPLACE FUNCTION email.apply_outcome_events(p_event_ids bigint[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- The owner's internal step: fold matched outcome events into their deliveries'
    -- email.delivery_outcomes row. The outcome only rises (email.outcome_rank): an event
    -- of lower or equal rank than the stored outcome changes only the counters, so any
    -- order of arrival ends in the same outcome. opened / clicked count only for a
    -- workflow whose policy tracks engagement. Then the suppression list follows.
    WITH ev AS (
        SELECT e.delivery_id, d.workflow, e.kind, e.permanent, e.reason, e.provider,
               e.occurred_at, email.outcome_rank(e.kind, e.permanent) AS rank
        FROM email.outcome_events AS e
        JOIN email.deliveries AS d ON d.delivery_id = e.delivery_id
        WHERE e.id = ANY (p_event_ids)
          AND (e.kind NOT IN ('opened', 'clicked')
               OR (email.workflow_policy(d.workflow)).track_engagement)
    ), best AS (
        SELECT DISTINCT ON (ev.delivery_id) ev.*
        FROM ev ORDER BY ev.delivery_id, ev.rank DESC, ev.occurred_at
    ), counts AS (
        SELECT ev.delivery_id, count(*)::integer AS events,
               min(ev.occurred_at) FILTER (WHERE ev.kind IN ('delivered', 'opened', 'clicked'))
                   AS delivered_at
        FROM ev GROUP BY ev.delivery_id
    )
    INSERT INTO email.delivery_outcomes AS o (delivery_id, workflow, outcome, permanent, reason,
        provider, outcome_at, delivered_at, events)
    SELECT b.delivery_id, b.workflow, b.kind, b.permanent, b.reason, b.provider, b.occurred_at,
           c.delivered_at, c.events
    FROM best AS b JOIN counts AS c ON c.delivery_id = b.delivery_id
    ORDER BY b.delivery_id
    ON CONFLICT (delivery_id) DO UPDATE SET
        outcome = CASE WHEN email.outcome_rank(EXCLUDED.outcome, EXCLUDED.permanent)
                            > email.outcome_rank(o.outcome, o.permanent)
                       THEN EXCLUDED.outcome ELSE o.outcome END,
        permanent = CASE WHEN email.outcome_rank(EXCLUDED.outcome, EXCLUDED.permanent)
                              > email.outcome_rank(o.outcome, o.permanent)
                         THEN EXCLUDED.permanent ELSE o.permanent END,
        reason = CASE WHEN email.outcome_rank(EXCLUDED.outcome, EXCLUDED.permanent)
                           > email.outcome_rank(o.outcome, o.permanent)
                      THEN EXCLUDED.reason ELSE o.reason END,
        provider = CASE WHEN email.outcome_rank(EXCLUDED.outcome, EXCLUDED.permanent)
                             > email.outcome_rank(o.outcome, o.permanent)
                        THEN EXCLUDED.provider ELSE o.provider END,
        outcome_at = CASE WHEN email.outcome_rank(EXCLUDED.outcome, EXCLUDED.permanent)
                               > email.outcome_rank(o.outcome, o.permanent)
                          THEN EXCLUDED.outcome_at ELSE o.outcome_at END,
        delivered_at = least(o.delivered_at, EXCLUDED.delivered_at),
        events = o.events + EXCLUDED.events,
        updated_at = now();
    -- Suppression (revision 0012): a hard bounce or a complaint puts the recipient on the
    -- list (for its workflow's policy's suppress_for, NULL: until removed); an entry that
    -- exists keeps the stronger reason (manual > complaint > hard_bounce) and the later
    -- expiry, and an expired one starts afresh.
    INSERT INTO email.suppressions AS s (address, reason, source_delivery_id, provider, detail,
        expires_at)
    SELECT DISTINCT ON (d.recipient) d.recipient,
           CASE WHEN e.kind = 'complained' THEN 'complaint' ELSE 'hard_bounce' END,
           e.delivery_id, e.provider, e.reason,
           now() + (email.workflow_policy(d.workflow)).suppress_for
    FROM email.outcome_events AS e
    JOIN email.deliveries AS d ON d.delivery_id = e.delivery_id
    WHERE e.id = ANY (p_event_ids)
      AND (e.kind = 'complained' OR (e.kind = 'bounced' AND e.permanent))
    ORDER BY d.recipient, e.kind = 'complained' DESC, e.occurred_at
    ON CONFLICT (address) DO UPDATE SET
        -- The new entry replaces an expired one or a weaker reason, whole (w.wins, decided
        -- once); otherwise the entry stays as it is (an operator's manual note and expiry
        -- are theirs), except that the same reason again keeps the later expiry (NULL: never).
        (reason, source_delivery_id, provider, detail, created_at, expires_at) = (
            SELECT n.reason, n.source_delivery_id, n.provider, n.detail,
                   CASE WHEN s.expires_at <= now() THEN now() ELSE s.created_at END,
                   CASE WHEN w.wins THEN EXCLUDED.expires_at
                        WHEN EXCLUDED.reason <> s.reason THEN s.expires_at
                        WHEN s.expires_at IS NULL OR EXCLUDED.expires_at IS NULL THEN NULL
                        ELSE greatest(s.expires_at, EXCLUDED.expires_at) END
            FROM (SELECT coalesce(s.expires_at <= now(), false)
                         OR array_position(ARRAY['hard_bounce', 'complaint', 'manual'], EXCLUDED.reason)
                            > array_position(ARRAY['hard_bounce', 'complaint', 'manual'], s.reason)
                         AS wins) AS w
            CROSS JOIN LATERAL (
                SELECT EXCLUDED.reason, EXCLUDED.source_delivery_id, EXCLUDED.provider,
                       EXCLUDED.detail
                WHERE w.wins
                UNION ALL
                SELECT s.reason, s.source_delivery_id, s.provider, s.detail
                WHERE NOT w.wins) AS n(reason, source_delivery_id, provider, detail));
    -- A delivery enqueued after a hard-bounce entry and delivered clears the entry (Postal's
    -- behaviour): the mailbox works again. Complaints and manual entries stay until removed.
    DELETE FROM email.suppressions AS s
    USING email.outcome_events AS e
    JOIN email.deliveries AS d ON d.delivery_id = e.delivery_id
    WHERE e.id = ANY (p_event_ids) AND e.kind IN ('delivered', 'opened', 'clicked')
      AND d.status = 'sent'
      AND s.address = d.recipient AND s.reason = 'hard_bounce' AND d.queued_at >= s.created_at;
END
$$;;

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

CREATE OR REPLACE FUNCTION email.delivery_health(p_queued_age interval DEFAULT NULL::interval, p_retrying_age interval DEFAULT NULL::interval, p_expired_claim_age interval DEFAULT NULL::interval, p_dead_letters_per_hour integer DEFAULT NULL::integer, p_failure_rate double precision DEFAULT NULL::double precision)
RETURNS TABLE(check_name text, workflow text, value double precision, threshold double precision, breached boolean, detail text)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    -- What an on-call engineer needs before users notice, one row per check (and workflow),
    -- each with its threshold: the workflow's policy's alert_* column, or the argument that
    -- overrides it for every workflow (NULL threshold: reported, never breached). SECURITY
    -- DEFINER: a dashboard (email_reader) also sees the audit log's partitions. Every part is
    -- index-backed ((status, updated_at), the rollups): one cheap round trip.
    RETURN QUERY
    WITH active AS (
        SELECT d.workflow, d.status,
               min(d.updated_at) AS oldest,
               count(*) FILTER (WHERE d.status = 'in_progress' AND d.lease_expires_at <= now())
                   AS expired,
               min(d.lease_expires_at) FILTER (WHERE d.status = 'in_progress') AS first_expiry
        FROM email.deliveries AS d
        WHERE d.status IN ('queued', 'in_progress', 'retrying')
        GROUP BY d.workflow, d.status
    ), dead AS (
        SELECT d.workflow,
               count(*) FILTER (WHERE d.updated_at > now() - interval '1 hour') AS last_hour,
               count(*) AS last_day,
               max(d.updated_at) AS newest
        FROM email.deliveries AS d
        WHERE d.status = 'dead_letter' AND d.updated_at > now() - interval '24 hours'
        GROUP BY d.workflow
    ), recent AS (
        SELECT s.workflow, s.failed + s.dead_letter AS failures,
               s.sent + s.failed + s.dead_letter AS finished
        FROM email.delivery_stats(now() - interval '15 minutes', p_top_errors => 0) AS s
    ), baseline AS (
        SELECT s.workflow,
               (s.failed + s.dead_letter)::double precision
                   / nullif(s.sent + s.failed + s.dead_letter, 0) AS rate
        FROM email.delivery_stats(now() - interval '24 hours', p_top_errors => 0) AS s
    ), workflows AS (
        SELECT a.workflow FROM active AS a UNION SELECT dead.workflow FROM dead
        UNION SELECT recent.workflow FROM recent
    ), checks AS (
        SELECT 'oldest_queued_age_s' AS check_name, a.workflow,
               EXTRACT(EPOCH FROM now() - a.oldest)::double precision AS value,
               EXTRACT(EPOCH FROM coalesce(p_queued_age, (email.workflow_policy(a.workflow)).alert_queued_age))::double precision AS threshold,
               NULL::text AS detail
        FROM active AS a WHERE a.status = 'queued'
        UNION ALL
        SELECT 'oldest_retrying_age_s', a.workflow, EXTRACT(EPOCH FROM now() - a.oldest)::double precision,
               EXTRACT(EPOCH FROM coalesce(p_retrying_age, (email.workflow_policy(a.workflow)).alert_retrying_age))::double precision,
               NULL
        FROM active AS a WHERE a.status = 'retrying'
        UNION ALL
        SELECT 'oldest_expired_claim_age_s', a.workflow,
               greatest(EXTRACT(EPOCH FROM now() - a.first_expiry), 0)::double precision,
               EXTRACT(EPOCH FROM coalesce(p_expired_claim_age, (email.workflow_policy(a.workflow)).alert_expired_claim_age))::double precision,
               format('%s claims past their expiry, not yet reaped', a.expired)
        FROM active AS a WHERE a.status = 'in_progress' AND a.expired > 0
        UNION ALL
        SELECT 'dead_letters_last_hour', w.workflow, coalesce(dead.last_hour, 0)::double precision,
               coalesce(p_dead_letters_per_hour, (email.workflow_policy(w.workflow)).alert_dead_letters_per_hour)::double precision,
               format('%s in the last 24 hours, the newest at %s', coalesce(dead.last_day, 0),
                      coalesce(dead.newest::text, 'none'))
        FROM workflows AS w LEFT JOIN dead ON dead.workflow = w.workflow
        UNION ALL
        SELECT 'failure_rate_15m', r.workflow,
               r.failures::double precision / nullif(r.finished, 0),
               coalesce(p_failure_rate, (email.workflow_policy(r.workflow)).alert_failure_rate),
               format('%s of %s finished in 15 minutes; 24-hour baseline %s', r.failures,
                      r.finished, coalesce(round(b.rate::numeric, 4)::text, 'none'))
        FROM recent AS r LEFT JOIN baseline AS b ON b.workflow = r.workflow
    )
    SELECT c.check_name, c.workflow, c.value, c.threshold,
           coalesce(c.value > c.threshold
                    AND (c.check_name <> 'failure_rate_15m'
                         OR ((SELECT r.finished FROM recent AS r WHERE r.workflow = c.workflow) >= 10
                             AND c.value > 2 * coalesce((SELECT b.rate FROM baseline AS b
                                                         WHERE b.workflow = c.workflow), 0))),
                    false),
           c.detail
    FROM checks AS c
    UNION ALL
    SELECT 'partitions_ahead_days', NULL,
           EXTRACT(EPOCH FROM max(p.upper_bound) - now())::double precision / 86400, 7,
           coalesce(max(p.upper_bound) < now() + interval '7 days', true),
           format('the audit log''s partitions end at %s; run email-delivery maintain',
                  coalesce(max(p.upper_bound)::text, 'none'))
    FROM email.event_partitions() AS p
    UNION ALL
    SELECT 'events_in_default_partition', NULL, count(*)::double precision, 0, count(*) > 0,
           'events whose partition was missing; email-delivery maintain moves them'
    FROM email.delivery_events_default
    UNION ALL
    SELECT 'rollups_behind_s', NULL,
           -- NULL: never refreshed (infinite intervals only exist from PostgreSQL 17 on).
           CASE WHEN isfinite(s.rolled_until)
                THEN EXTRACT(EPOCH FROM now() - s.rolled_until)::double precision END, 7200,
           s.rolled_until < now() - interval '2 hours',
           'the statistics read every later hour row by row; run email-delivery maintain'
    FROM email.delivery_rollup_state AS s
    UNION ALL
    -- Webhooks (revision 0009): endpoints the sender disabled (410, or failures for longer
    -- than the budget), messages due but not sent, changes not yet turned into messages.
    SELECT 'webhook_endpoints_disabled', NULL, count(*)::double precision, 0, count(*) > 0,
           -- Ids only: a reader may call this, and an endpoint's URL (which may carry
           -- credentials) and the receiver's answer are the owner's to see.
           coalesce('disabled by the sender: '
                    || string_agg(format('#%s', e.id), ', ' ORDER BY e.id)
                    || '; email-delivery webhooks list says why; webhooks enable ID after '
                    || 'fixing the receiver', 'none')
    FROM email.webhook_endpoints AS e
    WHERE NOT e.enabled AND e.disabled_automatically
    UNION ALL
    SELECT 'webhook_outbox_lag_s', NULL,
           coalesce(EXTRACT(EPOCH FROM now() - min(m.next_attempt_at)), 0)::double precision, 300,
           coalesce(min(m.next_attempt_at) < now() - interval '5 minutes', false),
           format('%s webhook messages due and not sent; is email-delivery webhooks run running?',
                  count(*))
    FROM email.webhook_messages AS m
    JOIN email.webhook_endpoints AS e ON e.id = m.endpoint_id AND e.enabled
    WHERE m.state = 'pending' AND m.next_attempt_at <= now()
    UNION ALL
    SELECT 'webhook_fanout_lag_s', NULL,
           coalesce(EXTRACT(EPOCH FROM now() - f.created_at), 0)::double precision, 300,
           coalesce(f.created_at < now() - interval '5 minutes', false),
           'changes not yet turned into webhook messages; is email-delivery webhooks run running?'
    FROM email.webhook_feed_state AS s
    LEFT JOIN LATERAL (
        SELECT ev.created_at FROM email.delivery_events AS ev
        WHERE (ev.xact_id, ev.id) > (s.after_xact_id, s.after_event_id)
        ORDER BY ev.xact_id, ev.id LIMIT 1) AS f ON true
    WHERE EXISTS (SELECT FROM email.webhook_endpoints AS w WHERE w.enabled)
    ORDER BY 1, 2;
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

CREATE OR REPLACE FUNCTION email.feed_listener_heartbeat(p_ttl interval DEFAULT '00:01:00'::interval)
RETURNS timestamp with time zone
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    expires timestamptz;
BEGIN
    -- A session that LISTENs on email_delivery_feed says so, and again before p_ttl has
    -- passed: while one is registered, writers' commits NOTIFY (email.notify_delivery_feed).
    -- A listener that dies stops being counted when its registration expires.
    -- At most 2 minutes: any reader or writer may register, and while one is registered
    -- every commit that writes events NOTIFYs (which serialises commits cluster-wide).
    IF p_ttl IS NULL OR p_ttl < interval '1 second' OR p_ttl > interval '2 minutes' THEN
        RAISE EXCEPTION 'p_ttl must be between 1 second and 2 minutes, not %', p_ttl
            USING ERRCODE = '22023', COLUMN = 'p_ttl';
    END IF;
    INSERT INTO email.feed_listeners AS l (backend_pid, expires_at)
    VALUES (pg_backend_pid(), now() + p_ttl)
    ON CONFLICT (backend_pid) DO UPDATE SET expires_at = EXCLUDED.expires_at
    RETURNING l.expires_at INTO expires;
    -- Registrations that expired, or whose session has ended, no longer count.
    DELETE FROM email.feed_listeners AS l
    WHERE l.expires_at < now()
       OR NOT EXISTS (SELECT FROM pg_stat_activity AS a WHERE a.pid = l.backend_pid);
    RETURN expires;
END
$$;;

CREATE OR REPLACE FUNCTION email.mark_deliveries_sent(p_delivery_ids text[], p_attempts integer[], p_payloads jsonb[], p_providers text[] DEFAULT NULL::text[], p_provider_message_ids text[] DEFAULT NULL::text[], p_reply_codes integer[] DEFAULT NULL::integer[], p_durations_ms integer[] DEFAULT NULL::integer[])
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, lease_expires_at timestamp with time zone, next_attempt_at timestamp with time zone, changed boolean)
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
       OR cardinality(p_delivery_ids) > 10000 THEN
        RAISE EXCEPTION 'delivery_ids must be 0 to % ids, none NULL', 10000
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
               WHERE octet_length(p::text) > 15872) THEN
        RAISE EXCEPTION 'payload is larger than % bytes as JSON', 15872
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
        WHERE d.delivery_id = ANY (p_delivery_ids) AND d.status NOT IN ('sent', 'suppressed')
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
    SELECT d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at,
           input.nth = 1 AND d.delivery_id = ANY (updated_ids)
    FROM input
    JOIN email.deliveries AS d ON d.delivery_id = input.delivery_id
    ORDER BY input.pos;
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
$$;;

CREATE OR REPLACE FUNCTION email.record_delivery_outcome(p_provider text, p_event_id text, p_kind text, p_occurred_at timestamp with time zone, p_provider_message_id text DEFAULT NULL::text, p_delivery_id text DEFAULT NULL::text, p_permanent boolean DEFAULT NULL::boolean, p_reason text DEFAULT NULL::text, p_smtp_code integer DEFAULT NULL::integer, p_recipient text DEFAULT NULL::text, p_provider_event_type text DEFAULT NULL::text)
RETURNS TABLE(delivery_id text, recorded boolean, matched boolean, outcome text, permanent boolean, outcome_changed boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    found_id text;
    event_row_id bigint;
    before_rank integer;
    after_rank integer;
BEGIN
    -- SECURITY DEFINER: the worker (email_writer) records provider events only through
    -- this function. One provider event (provider, event_id) is recorded once: a retried
    -- webhook returns recorded = false and changes nothing. The event is matched to its
    -- delivery by the provider's message id (stored by mark_sent), else by the delivery id
    -- the provider echoed back; an event matching neither is kept (matched = false) and
    -- matched when its id arrives (mark_sent, email.match_outcome_events). The delivery's
    -- status is untouched: its outcome is email.delivery_outcomes, whose outcome only rises.
    IF p_provider IS NULL OR p_event_id IS NULL OR p_kind IS NULL OR p_occurred_at IS NULL THEN
        RAISE EXCEPTION 'provider, event_id, kind and occurred_at are required'
            USING ERRCODE = '22023', COLUMN = CASE
                WHEN p_provider IS NULL THEN 'provider' WHEN p_event_id IS NULL THEN 'event_id'
                WHEN p_kind IS NULL THEN 'kind' ELSE 'occurred_at' END;
    END IF;
    IF email.outcome_rank(p_kind, p_permanent) IS NULL THEN
        RAISE EXCEPTION 'unknown outcome kind %', p_kind
            USING ERRCODE = '22023', COLUMN = 'kind',
                  HINT = 'one of deferred, delivered, opened, clicked, bounced, rejected, complained';
    END IF;
    IF p_provider_message_id IS NULL AND p_delivery_id IS NULL THEN
        RAISE EXCEPTION 'an outcome names its provider_message_id or its delivery_id'
            USING ERRCODE = '22023', COLUMN = 'provider_message_id';
    END IF;
    IF p_provider_message_id IS NOT NULL THEN
        -- The lock mark_sent takes while it stores this id: see email.record_attempt_facts.
        PERFORM pg_advisory_xact_lock(email.provider_message_lock(p_provider, p_provider_message_id));
        SELECT a.delivery_id INTO found_id FROM email.delivery_attempts AS a
        WHERE a.provider = p_provider AND a.provider_message_id = p_provider_message_id;
    END IF;
    IF found_id IS NULL AND p_delivery_id IS NOT NULL THEN
        -- A suppressed delivery was never sent: no outcome can be its (a forged one must
        -- not clear the list nor mark the delivery delivered).
        SELECT d.delivery_id INTO found_id FROM email.deliveries AS d
        WHERE d.delivery_id = p_delivery_id AND d.status <> 'suppressed';
    END IF;
    IF found_id IS NOT NULL AND p_kind IN ('opened', 'clicked')
       AND NOT (SELECT (email.workflow_policy(d.workflow)).track_engagement
                FROM email.deliveries AS d WHERE d.delivery_id = found_id) THEN
        -- The workflow does not track engagement: nothing is stored about it.
        RETURN QUERY SELECT found_id, false, true, o.outcome, o.permanent, false
            FROM (SELECT) AS one LEFT JOIN email.delivery_outcomes AS o ON o.delivery_id = found_id;
        RETURN;
    END IF;
    SELECT email.outcome_rank(o.outcome, o.permanent) INTO before_rank
    FROM email.delivery_outcomes AS o WHERE o.delivery_id = found_id;
    INSERT INTO email.outcome_events AS e (provider, event_id, kind, permanent, occurred_at,
        provider_message_id, echoed_delivery_id, delivery_id, recipient, reason, smtp_code,
        provider_event_type, matched_at)
    VALUES (p_provider, p_event_id, p_kind, p_permanent, p_occurred_at, p_provider_message_id,
        p_delivery_id, found_id, p_recipient,
        left(email.sanitize_error_message(p_reason), 500),
        p_smtp_code, p_provider_event_type, CASE WHEN found_id IS NOT NULL THEN now() END)
    ON CONFLICT (provider, event_id) DO NOTHING
    RETURNING e.id INTO event_row_id;
    IF event_row_id IS NULL THEN
        -- A duplicate: report what the first recording left.
        RETURN QUERY SELECT coalesce(e.delivery_id, found_id), false, e.delivery_id IS NOT NULL,
                            o.outcome, o.permanent, false
            FROM email.outcome_events AS e
            LEFT JOIN email.delivery_outcomes AS o ON o.delivery_id = e.delivery_id
            WHERE e.provider = p_provider AND e.event_id = p_event_id;
        RETURN;
    END IF;
    IF found_id IS NOT NULL THEN
        PERFORM email.apply_outcome_events(ARRAY[event_row_id]);
    END IF;
    SELECT email.outcome_rank(o.outcome, o.permanent) INTO after_rank
    FROM email.delivery_outcomes AS o WHERE o.delivery_id = found_id;
    RETURN QUERY SELECT found_id, true, found_id IS NOT NULL, o.outcome, o.permanent,
                        after_rank IS DISTINCT FROM before_rank
        FROM (SELECT) AS one LEFT JOIN email.delivery_outcomes AS o ON o.delivery_id = found_id;
END
$$;;
