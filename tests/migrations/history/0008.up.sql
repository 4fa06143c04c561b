SET LOCAL lock_timeout = '5s';

SET LOCAL statement_timeout = '60s';

ALTER TABLE email.deliveries ADD COLUMN lease_expires_at TIMESTAMP WITH TIME ZONE;

ALTER TABLE email.deliveries ADD COLUMN next_attempt_at TIMESTAMP WITH TIME ZONE;

CREATE TABLE email.workflow_policies (
    workflow TEXT NOT NULL, 
    max_attempts INTEGER DEFAULT 5 NOT NULL, 
    lease INTERVAL DEFAULT '00:05:00' NOT NULL, 
    backoff_base INTERVAL DEFAULT '00:00:30' NOT NULL, 
    backoff_cap INTERVAL DEFAULT '01:00:00' NOT NULL, 
    backoff_jitter DOUBLE PRECISION DEFAULT 0.2 NOT NULL, 
    keep_sent_for INTERVAL, 
    keep_failed_for INTERVAL, 
    alert_queued_age INTERVAL DEFAULT '00:15:00', 
    alert_retrying_age INTERVAL DEFAULT '02:00:00', 
    alert_expired_claim_age INTERVAL DEFAULT '00:10:00', 
    alert_dead_letters_per_hour INTEGER DEFAULT 5, 
    alert_failure_rate DOUBLE PRECISION DEFAULT 0.1, 
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    updated_by TEXT DEFAULT SESSION_USER NOT NULL, 
    CONSTRAINT pk_workflow_policies PRIMARY KEY (workflow), 
    CONSTRAINT ck_workflow_policies_workflow_format CHECK (workflow = '*' OR workflow ~ '^[a-z][a-z0-9-]{0,62}$'), 
    CONSTRAINT ck_workflow_policies_max_attempts_range CHECK (max_attempts BETWEEN 1 AND 100), 
    CONSTRAINT ck_workflow_policies_lease_range CHECK (lease >= interval '1 second' AND lease <= interval '1 day'), 
    CONSTRAINT ck_workflow_policies_backoff_base_range CHECK (backoff_base >= interval '1 second' AND backoff_base <= interval '1 day'), 
    CONSTRAINT ck_workflow_policies_backoff_cap_range CHECK (backoff_cap >= backoff_base AND backoff_cap <= interval '7 days'), 
    CONSTRAINT ck_workflow_policies_backoff_jitter_range CHECK (backoff_jitter BETWEEN 0 AND 1), 
    CONSTRAINT ck_workflow_policies_keep_sent_for_range CHECK (keep_sent_for IS NULL OR keep_sent_for >= interval '1 day'), 
    CONSTRAINT ck_workflow_policies_keep_failed_for_range CHECK (keep_failed_for IS NULL OR (keep_failed_for >= interval '1 day' AND keep_failed_for >= coalesce(keep_sent_for, keep_failed_for))), 
    CONSTRAINT ck_workflow_policies_alert_ages_positive CHECK (coalesce(alert_queued_age, alert_retrying_age, alert_expired_claim_age) IS NULL OR least(alert_queued_age, alert_retrying_age, alert_expired_claim_age) > interval '0'), 
    CONSTRAINT ck_workflow_policies_alert_dead_letters_range CHECK (alert_dead_letters_per_hour IS NULL OR alert_dead_letters_per_hour >= 0), 
    CONSTRAINT ck_workflow_policies_alert_failure_rate_range CHECK (alert_failure_rate IS NULL OR alert_failure_rate BETWEEN 0 AND 1)
);

INSERT INTO email.workflow_policies (workflow) VALUES ('*');

CREATE TABLE email.workflow_policy_changes (
    id BIGINT GENERATED ALWAYS AS IDENTITY, 
    workflow TEXT NOT NULL, 
    action TEXT NOT NULL, 
    before JSONB, 
    after JSONB, 
    changed_by TEXT DEFAULT SESSION_USER NOT NULL, 
    changed_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    CONSTRAINT pk_workflow_policy_changes PRIMARY KEY (id), 
    CONSTRAINT ck_workflow_policy_changes_action_known CHECK (action IN ('insert', 'update', 'delete'))
);

DO $$
BEGIN
    REVOKE ALL ON TABLE email.workflow_policies FROM PUBLIC;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
        REVOKE ALL ON TABLE email.workflow_policies FROM "anon";
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        REVOKE ALL ON TABLE email.workflow_policies FROM "authenticated";
    END IF;
END
$$;

GRANT SELECT ON TABLE email.workflow_policies TO "email_reader";

GRANT SELECT ON TABLE email.workflow_policies TO "email_writer";

ALTER TABLE email.workflow_policies ENABLE ROW LEVEL SECURITY;

DO $$
BEGIN
    REVOKE ALL ON TABLE email.workflow_policy_changes FROM PUBLIC;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
        REVOKE ALL ON TABLE email.workflow_policy_changes FROM "anon";
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        REVOKE ALL ON TABLE email.workflow_policy_changes FROM "authenticated";
    END IF;
END
$$;

GRANT SELECT ON TABLE email.workflow_policy_changes TO "email_reader";

ALTER TABLE email.workflow_policy_changes ENABLE ROW LEVEL SECURITY;

CREATE OR REPLACE FUNCTION email.audit_updated_deliveries()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    payloads jsonb := email.attached_payloads();
BEGIN
    -- One event per changed row, naming the columns that changed (never their values).
    -- Stamped with the change's own time: the row's updated_at, which the guard sets.
    INSERT INTO email.delivery_events
        (delivery_id, status, attempt, error_code, error_message, payload, changed_columns,
         created_at)
    SELECT n.delivery_id, n.status, n.attempts, n.last_error_code, n.last_error_message,
           payloads -> n.delivery_id, c.changed, n.updated_at
    FROM new_rows AS n
    JOIN old_rows AS o ON o.delivery_id = n.delivery_id
    CROSS JOIN LATERAL (SELECT array_remove(ARRAY[
            CASE WHEN n.workflow IS DISTINCT FROM o.workflow THEN 'workflow' END,
            CASE WHEN n.recipient IS DISTINCT FROM o.recipient THEN 'recipient' END,
            CASE WHEN n.status IS DISTINCT FROM o.status THEN 'status' END,
            CASE WHEN n.attempts IS DISTINCT FROM o.attempts THEN 'attempts' END,
            CASE WHEN n.last_error_code IS DISTINCT FROM o.last_error_code THEN 'last_error_code' END,
            CASE WHEN n.last_error_message IS DISTINCT FROM o.last_error_message THEN 'last_error_message' END,
            CASE WHEN n.last_attempted_at IS DISTINCT FROM o.last_attempted_at THEN 'last_attempted_at' END,
            CASE WHEN n.queued_at IS DISTINCT FROM o.queued_at THEN 'queued_at' END,
            CASE WHEN n.sent_at IS DISTINCT FROM o.sent_at THEN 'sent_at' END,
            CASE WHEN n.metadata IS DISTINCT FROM o.metadata THEN 'metadata' END,
            CASE WHEN n.created_at IS DISTINCT FROM o.created_at THEN 'created_at' END,
            CASE WHEN n.lease_expires_at IS DISTINCT FROM o.lease_expires_at THEN 'lease_expires_at' END,
            CASE WHEN n.next_attempt_at IS DISTINCT FROM o.next_attempt_at THEN 'next_attempt_at' END], NULL) AS changed) AS c
    WHERE c.changed <> '{}';
    RETURN NULL;
END
$$;;

CREATE OR REPLACE FUNCTION email.audit_workflow_policy()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- One row of email.workflow_policy_changes per changed policy: before and after.
    INSERT INTO email.workflow_policy_changes (workflow, action, before, after)
    VALUES (coalesce(NEW.workflow, OLD.workflow), lower(TG_OP),
            CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END,
            CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END);
    RETURN NULL;
END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.audit_workflow_policy() FROM PUBLIC;
END
$$;

DROP FUNCTION email.claim_deliveries(p_delivery_ids text[], p_lease interval);

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
    -- The one definition of a claim: claim_delivery is its one-id case, and the tracker's
    -- group commit sends many. One row per input position, in input order, each what a
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
        SET status = 'in_progress', attempts = d.attempts + 1, last_attempted_at = now(),
            lease_expires_at = now() + coalesce(p_lease, (email.workflow_policy(d.workflow)).lease)
        FROM input
        WHERE d.delivery_id = input.delivery_id
          AND ((d.status IN ('queued', 'retrying')
                AND coalesce(d.next_attempt_at, '-infinity') <= now())
               OR (d.status = 'in_progress' AND d.lease_expires_at <= now()))
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

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.claim_deliveries(p_delivery_ids text[], p_lease interval) FROM PUBLIC;
END
$$;

GRANT EXECUTE ON FUNCTION email.claim_deliveries(p_delivery_ids text[], p_lease interval) TO "email_writer";

DROP FUNCTION email.claim_delivery(p_delivery_id text, p_lease interval);

CREATE OR REPLACE FUNCTION email.claim_delivery(p_delivery_id text, p_lease interval DEFAULT NULL::interval)
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, lease_expires_at timestamp with time zone, next_attempt_at timestamp with time zone, changed boolean, attempt integer, retry_at timestamp with time zone)
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    -- One claim: the one-id case of email.claim_deliveries, where the rule lives.
    SELECT * FROM email.claim_deliveries(ARRAY[p_delivery_id], p_lease)
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.claim_delivery(p_delivery_id text, p_lease interval) FROM PUBLIC;
END
$$;

GRANT EXECUTE ON FUNCTION email.claim_delivery(p_delivery_id text, p_lease interval) TO "email_writer";

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
    ORDER BY 1, 2;
END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.delivery_health(p_queued_age interval, p_retrying_age interval, p_expired_claim_age interval, p_dead_letters_per_hour integer, p_failure_rate double precision) FROM PUBLIC;
END
$$;

GRANT EXECUTE ON FUNCTION email.delivery_health(p_queued_age interval, p_retrying_age interval, p_expired_claim_age interval, p_dead_letters_per_hour integer, p_failure_rate double precision) TO "email_reader";

DROP FUNCTION email.enqueue_deliveries(p_delivery_ids text[], p_workflows text[], p_recipients text[], p_metadata jsonb[], p_queued_ats timestamp with time zone[]);

CREATE OR REPLACE FUNCTION email.enqueue_deliveries(p_delivery_ids text[], p_workflows text[], p_recipients text[], p_metadata jsonb[], p_queued_ats timestamp with time zone[])
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, lease_expires_at timestamp with time zone, next_attempt_at timestamp with time zone, created boolean, conflicts text[])
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    created_ids text[];
BEGIN
    -- SECURITY DEFINER: the worker holds no write grant on the tables, only EXECUTE on the
    -- lifecycle functions; the guard trigger checks the row as it checks any client's.
    IF EXISTS (SELECT FROM unnest(p_metadata) AS m WHERE octet_length(m::text) > 15872) THEN
        RAISE EXCEPTION 'metadata is larger than % bytes as JSON', 15872
            USING ERRCODE = '22023', COLUMN = 'metadata';
    END IF;
    -- One row per input position, in input order; a repeated id is created at most once.
    -- Inserting in key order keeps concurrent overlapping batches from deadlocking.
    WITH input AS (
        SELECT i.*
        FROM unnest(p_delivery_ids, p_workflows, p_recipients, p_metadata, p_queued_ats)
             WITH ORDINALITY AS i(delivery_id, workflow, recipient, metadata, queued_at, pos)
    ),
    inserted AS (
        INSERT INTO email.deliveries AS d (delivery_id, workflow, recipient, metadata, queued_at)
        SELECT DISTINCT ON (input.delivery_id)
               input.delivery_id, input.workflow, input.recipient,
               coalesce(input.metadata, '{}'::jsonb), coalesce(input.queued_at, now())
        FROM input
        ORDER BY input.delivery_id, input.pos
        ON CONFLICT (delivery_id) DO NOTHING
        RETURNING d.delivery_id
    )
    SELECT coalesce(array_agg(inserted.delivery_id), '{}') INTO created_ids FROM inserted;

    RETURN QUERY
    WITH input AS (
        SELECT i.*,
               row_number() OVER (PARTITION BY i.delivery_id ORDER BY i.pos) AS nth
        FROM unnest(p_delivery_ids, p_workflows, p_recipients)
             WITH ORDINALITY AS i(delivery_id, workflow, recipient, pos)
    )
    SELECT d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at,
           input.nth = 1 AND d.delivery_id = ANY (created_ids),
           array_remove(ARRAY[
               CASE WHEN d.workflow IS DISTINCT FROM input.workflow THEN 'workflow' END,
               CASE WHEN d.recipient IS DISTINCT FROM input.recipient THEN 'recipient' END],
               NULL)
    FROM input
    JOIN email.deliveries AS d ON d.delivery_id = input.delivery_id
    ORDER BY input.pos;
END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.enqueue_deliveries(p_delivery_ids text[], p_workflows text[], p_recipients text[], p_metadata jsonb[], p_queued_ats timestamp with time zone[]) FROM PUBLIC;
END
$$;

GRANT EXECUTE ON FUNCTION email.enqueue_deliveries(p_delivery_ids text[], p_workflows text[], p_recipients text[], p_metadata jsonb[], p_queued_ats timestamp with time zone[]) TO "email_writer";

DROP FUNCTION email.enqueue_delivery(p_delivery_id text, p_workflow text, p_recipient text, p_metadata jsonb, p_queued_at timestamp with time zone);

CREATE OR REPLACE FUNCTION email.enqueue_delivery(p_delivery_id text, p_workflow text, p_recipient text, p_metadata jsonb, p_queued_at timestamp with time zone)
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, lease_expires_at timestamp with time zone, next_attempt_at timestamp with time zone, created boolean, conflicts text[])
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    -- SECURITY DEFINER: the worker holds no write grant on the tables, only EXECUTE on the
    -- lifecycle functions; the guard trigger checks the row as it checks any client's.
    IF octet_length(p_metadata::text) > 15872 THEN
        RAISE EXCEPTION 'metadata is larger than % bytes as JSON', 15872
            USING ERRCODE = '22023', COLUMN = 'metadata';
    END IF;
    PERFORM email.attach_event_payloads(NULL);
    -- Insert or nothing: a redelivered event never changes the row nor writes an event.
    RETURN QUERY
    WITH inserted AS (
        INSERT INTO email.deliveries AS d (delivery_id, workflow, recipient, metadata, queued_at)
        VALUES (p_delivery_id, p_workflow, p_recipient, coalesce(p_metadata, '{}'::jsonb),
                coalesce(p_queued_at, now()))
        ON CONFLICT (delivery_id) DO NOTHING
        RETURNING d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at)
    SELECT inserted.*, true, '{}'::text[] FROM inserted;
    IF FOUND THEN
        RETURN;
    END IF;
    -- ON CONFLICT waited for a concurrent inserter, so the row is committed and visible now.
    RETURN QUERY
    SELECT d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at, false,
           array_remove(ARRAY[
               CASE WHEN d.workflow IS DISTINCT FROM p_workflow THEN 'workflow' END,
               CASE WHEN d.recipient IS DISTINCT FROM p_recipient THEN 'recipient' END],
               NULL)
    FROM email.deliveries AS d
    WHERE d.delivery_id = p_delivery_id;
END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.enqueue_delivery(p_delivery_id text, p_workflow text, p_recipient text, p_metadata jsonb, p_queued_at timestamp with time zone) FROM PUBLIC;
END
$$;

GRANT EXECUTE ON FUNCTION email.enqueue_delivery(p_delivery_id text, p_workflow text, p_recipient text, p_metadata jsonb, p_queued_at timestamp with time zone) TO "email_writer";

CREATE OR REPLACE FUNCTION email.extend_claim(p_delivery_id text, p_attempt integer, p_lease interval DEFAULT NULL::interval)
RETURNS TABLE(held boolean, lease_expires_at timestamp with time zone)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    -- SECURITY DEFINER: the worker holds no write grant on the tables, only EXECUTE on the
    -- lifecycle functions; the guard trigger checks the row as it checks any client's.
    -- A heartbeat of a slow send: the claim of attempt p_attempt lives on for p_lease (else
    -- the workflow's policy's lease) from now. held is whether the caller still holds the
    -- claim: false once another attempt started (a takeover after the lease expired), the
    -- delivery finished (reaped, reported) or does not exist; then it must not send. A claim
    -- that expired but that nobody took over is still the caller's, and is extended.
    IF p_lease IS NOT NULL AND (p_lease <= interval '0' OR p_lease > interval '1 day') THEN
        RAISE EXCEPTION 'lease must be a positive interval of at most %, not %',
            '1 day', p_lease
            USING ERRCODE = '22023', COLUMN = 'lease';
    END IF;
    IF p_attempt IS NULL OR p_attempt < 1 THEN
        RAISE EXCEPTION 'attempt must be at least 1, not %', p_attempt
            USING ERRCODE = '22023', COLUMN = 'attempt';
    END IF;
    PERFORM email.attach_event_payloads(NULL);
    RETURN QUERY
    WITH extended AS (
        UPDATE email.deliveries AS d
        SET lease_expires_at = now() + coalesce(p_lease, (email.workflow_policy(d.workflow)).lease)
        WHERE d.delivery_id = p_delivery_id AND d.status = 'in_progress' AND d.attempts = p_attempt
        RETURNING d.lease_expires_at
    )
    SELECT true, extended.lease_expires_at FROM extended;
    IF NOT FOUND THEN
        RETURN QUERY SELECT false, NULL::timestamp with time zone;
    END IF;
END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.extend_claim(p_delivery_id text, p_attempt integer, p_lease interval) FROM PUBLIC;
END
$$;

GRANT EXECUTE ON FUNCTION email.extend_claim(p_delivery_id text, p_attempt integer, p_lease interval) TO "email_writer";

CREATE OR REPLACE FUNCTION email.failure_outcome(p_workflow text, p_attempts integer, p_metadata jsonb, p_retryable boolean, p_max_attempts integer DEFAULT NULL::integer)
RETURNS TABLE(status email.delivery_status, next_attempt_at timestamp with time zone)
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    policy email.workflow_policies := email.workflow_policy(p_workflow);
    failures integer := email.attempts_since_requeue(p_attempts, p_metadata);
BEGIN
    -- Where a failed attempt leaves a delivery (mark_delivery_failed and the reaper): failed
    -- when not retryable; dead_letter once the retry budget (p_max_attempts, else the
    -- workflow's policy) is used up; else retrying, not before now() + the policy's backoff.
    IF NOT coalesce(p_retryable, true) THEN
        RETURN QUERY SELECT 'failed'::email.delivery_status, NULL::timestamptz;
    ELSIF failures >= coalesce(p_max_attempts, policy.max_attempts) THEN
        RETURN QUERY SELECT 'dead_letter'::email.delivery_status, NULL::timestamptz;
    ELSE
        RETURN QUERY SELECT 'retrying'::email.delivery_status,
                            now() + email.retry_delay(policy, failures);
    END IF;
END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.failure_outcome(p_workflow text, p_attempts integer, p_metadata jsonb, p_retryable boolean, p_max_attempts integer) FROM PUBLIC;
END
$$;

CREATE OR REPLACE FUNCTION email.guard_delivery()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    secret text;
    protected text;
BEGIN
    -- Every rule of a delivery row, for every client: the lifecycle functions, a hand-typed
    -- statement, a migration. What only the schema owner may do is decided by the login
    -- (email.is_owner_session()), asked only when a change needs it.
    -- A claim's expiry exists only while it is in progress, a retry's earliest time only
    -- while retrying: leaving the status clears them (revision 0008), and entering
    -- in_progress without an expiry (an owner's edit) gets the workflow's lease.
    IF NEW.status <> 'in_progress' THEN
        NEW.lease_expires_at := NULL;
    ELSIF NEW.lease_expires_at IS NULL THEN
        NEW.lease_expires_at := now() + (email.workflow_policy(NEW.workflow)).lease;
    END IF;
    IF NEW.status <> 'retrying' THEN
        NEW.next_attempt_at := NULL;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        IF NEW IS NOT DISTINCT FROM OLD THEN
            -- Nothing changes: no new row version, no event, updated_at stays.
            RETURN NULL;
        END IF;
        IF NEW.delivery_id IS DISTINCT FROM OLD.delivery_id THEN
            RAISE EXCEPTION 'delivery_id is a delivery''s identity and never changes'
                USING ERRCODE = 'ED004', COLUMN = 'delivery_id';
        END IF;
        -- Its events lie between created_at and updated_at (the purge searches that span).
        IF NEW.created_at IS DISTINCT FROM OLD.created_at THEN
            RAISE EXCEPTION 'created_at is when a delivery was recorded and never changes'
                USING ERRCODE = 'ED004', COLUMN = 'created_at';
        END IF;
        IF NOT email.is_allowed_transition(OLD.status, NEW.status) THEN
            RAISE EXCEPTION 'illegal delivery status transition from % to %', OLD.status, NEW.status
                USING ERRCODE = 'ED001',
                      DETAIL = format('delivery_id=%s', OLD.delivery_id),
                      HINT = 'sent is final; failed and dead_letter move only to queued or sent';
        END IF;
        IF NEW.attempts < OLD.attempts THEN
            RAISE EXCEPTION 'delivery attempts may not decrease (from % to %)',
                OLD.attempts, NEW.attempts
                USING ERRCODE = 'ED002',
                      DETAIL = format('delivery_id=%s', OLD.delivery_id);
        END IF;
        IF OLD.status IN ('failed', 'dead_letter') AND NEW.status = 'queued'
           AND NOT email.is_owner_session() THEN
            RAISE EXCEPTION 'only the schema owner may requeue a % delivery', OLD.status
                USING ERRCODE = 'ED005', COLUMN = 'status',
                      DETAIL = format('delivery_id=%s', OLD.delivery_id);
        END IF;
        -- What the lifecycle does, and nothing else, unless the owner does it by hand.
        protected := CASE
            WHEN NEW.workflow IS DISTINCT FROM OLD.workflow THEN 'workflow'
            WHEN NEW.recipient IS DISTINCT FROM OLD.recipient THEN 'recipient'
            WHEN NEW.queued_at IS DISTINCT FROM OLD.queued_at THEN 'queued_at'
            WHEN OLD.status = 'sent' THEN 'status'
            WHEN NEW.attempts <> OLD.attempts
                 AND NOT (NEW.attempts = OLD.attempts + 1 AND NEW.status = 'in_progress') THEN 'attempts'
            WHEN NEW.last_attempted_at IS DISTINCT FROM OLD.last_attempted_at
                 AND (NEW.attempts = OLD.attempts OR NEW.last_attempted_at IS DISTINCT FROM now())
                THEN 'last_attempted_at'
            WHEN NEW.attempts <> OLD.attempts AND NEW.last_attempted_at IS DISTINCT FROM now()
                THEN 'last_attempted_at'
            WHEN NEW.status = 'sent' AND NEW.sent_at IS NOT NULL AND NEW.sent_at <> now()
                THEN 'sent_at'
            -- A claim or a heartbeat sets the expiry, no further than the longest lease
            -- (leaving in_progress clears it, above).
            WHEN NEW.lease_expires_at IS DISTINCT FROM OLD.lease_expires_at
                 AND NEW.lease_expires_at IS NOT NULL
                 AND NOT (NEW.lease_expires_at > now()
                          AND NEW.lease_expires_at <= now() + interval '1 day')
                THEN 'lease_expires_at'
            -- A failed attempt sets the next one's time, no further than the longest backoff.
            WHEN NEW.next_attempt_at IS DISTINCT FROM OLD.next_attempt_at
                 AND NEW.next_attempt_at IS NOT NULL
                 AND NOT (OLD.status = 'in_progress' AND NEW.next_attempt_at >= now()
                          AND NEW.next_attempt_at <= now() + interval '7 days')
                THEN 'next_attempt_at'
            WHEN NEW.metadata->'requeued_at_attempt' IS DISTINCT FROM OLD.metadata->'requeued_at_attempt'
                 AND NOT (OLD.status IN ('failed', 'dead_letter') AND NEW.status = 'queued')
                THEN 'metadata'
            -- A reference, once recorded, changes only when the delivery is dead-lettered
            -- again (after a requeue: a new message on the dead-letter topic).
            WHEN OLD.metadata ? 'dead_letter_reference'
                 AND NEW.metadata->'dead_letter_reference' IS DISTINCT FROM OLD.metadata->'dead_letter_reference'
                 AND NOT (OLD.status IN ('queued', 'in_progress', 'retrying') AND NEW.status = 'dead_letter')
                THEN 'metadata'
        END;
    ELSE
        IF NEW.created_at > now() THEN
            RAISE EXCEPTION 'created_at may not be in the future'
                USING ERRCODE = 'ED004', COLUMN = 'created_at';
        END IF;
        IF NEW.metadata ?| ARRAY['dead_letter_reference', 'requeued_at_attempt']
           AND NOT email.is_owner_session() THEN
            RAISE EXCEPTION 'metadata may not set the lifecycle''s keys %',
                ARRAY['dead_letter_reference', 'requeued_at_attempt']
                USING ERRCODE = '22023', COLUMN = 'metadata';
        END IF;
        protected := CASE
            WHEN NEW.status <> 'queued' OR NEW.attempts <> 0 THEN 'status'
            WHEN NEW.last_attempted_at IS NOT NULL OR NEW.sent_at IS NOT NULL THEN 'last_attempted_at'
            WHEN NEW.last_error_code IS NOT NULL OR NEW.last_error_message IS NOT NULL
                THEN 'last_error_code'
            WHEN NEW.created_at <> now() OR NEW.updated_at <> now() THEN 'created_at'
        END;
    END IF;
    IF protected IS NOT NULL AND NOT email.is_owner_session() THEN
        IF TG_OP = 'INSERT' THEN
            RAISE EXCEPTION 'only the schema owner may insert a delivery other than a new queued one (%)',
                protected
                USING ERRCODE = 'ED005', COLUMN = protected;
        END IF;
        RAISE EXCEPTION '% of a delivery changes only through the lifecycle functions', protected
            USING ERRCODE = 'ED004', COLUMN = protected,
                  DETAIL = format('delivery_id=%s', OLD.delivery_id);
    END IF;

    -- For everyone, the owner too: what is stored is sanitised and holds no secret.
    IF NEW.last_error_message IS NOT NULL
       AND (TG_OP = 'INSERT' OR NEW.last_error_message IS DISTINCT FROM OLD.last_error_message) THEN
        NEW.last_error_message := email.sanitize_error_message(NEW.last_error_message);
    END IF;
    IF NEW.last_error_code IS NOT NULL
       AND (TG_OP = 'INSERT' OR NEW.last_error_code IS DISTINCT FROM OLD.last_error_code)
       AND NEW.last_error_code !~ '^[A-Za-z0-9][A-Za-z0-9_.:-]*$' THEN
        RAISE EXCEPTION 'last_error_code must be letters, digits and _ . : -, not %', NEW.last_error_code
            USING ERRCODE = '22023', COLUMN = 'last_error_code';
    END IF;
    -- The metadata scan runs only when metadata changes (never on a claim or a report).
    IF TG_OP = 'INSERT' OR NEW.metadata IS DISTINCT FROM OLD.metadata THEN
        secret := email.find_secret(NEW.metadata);
        IF secret IS NOT NULL THEN
            RAISE EXCEPTION 'metadata holds a secret (%); store a hash under a key ending in _sha256',
                secret USING ERRCODE = 'ED003', COLUMN = 'metadata';
        END IF;
        IF NEW.metadata ? 'requeued_at_attempt'
           AND NOT (jsonb_typeof(NEW.metadata->'requeued_at_attempt') = 'number'
                    AND NEW.metadata->>'requeued_at_attempt' ~ '^[0-9]{1,9}$'
                    AND (NEW.metadata->>'requeued_at_attempt')::integer <= NEW.attempts) THEN
            RAISE EXCEPTION 'metadata.requeued_at_attempt must be a whole number of attempts'
                USING ERRCODE = '22023', COLUMN = 'metadata';
        END IF;
        IF NEW.metadata ? 'dead_letter_reference'
           AND NOT (jsonb_typeof(NEW.metadata->'dead_letter_reference') = 'string'
                    AND char_length(NEW.metadata->>'dead_letter_reference')
                        BETWEEN 1 AND 200
                    AND NEW.metadata->>'dead_letter_reference' !~ '[[:space:][:cntrl:]]') THEN
            RAISE EXCEPTION 'metadata.dead_letter_reference must be 1-% printable characters',
                200 USING ERRCODE = '22023', COLUMN = 'metadata';
        END IF;
    END IF;
    IF NEW.status = 'sent' AND NEW.sent_at IS NULL THEN
        NEW.sent_at := now();
    END IF;
    IF TG_OP = 'UPDATE' THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END
$$;;

CREATE OR REPLACE FUNCTION email.guard_workflow_policy()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- The default row '*' is every other workflow's policy: it may change, never go. Every
    -- change says who made it and when (the audit trigger keeps the history).
    IF TG_OP = 'TRUNCATE' THEN
        RAISE EXCEPTION 'the default policy ''*'' may be changed, not deleted: delete the '
                        'workflows'' own rows instead of truncating'
            USING ERRCODE = '22023', COLUMN = 'workflow';
    END IF;
    IF TG_OP = 'DELETE' THEN
        IF OLD.workflow = '*' THEN
            RAISE EXCEPTION 'the default policy ''*'' may be changed, not deleted'
                USING ERRCODE = '22023', COLUMN = 'workflow';
        END IF;
        RETURN OLD;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.workflow IS DISTINCT FROM OLD.workflow THEN
        RAISE EXCEPTION 'a policy''s workflow never changes; insert a new row instead'
            USING ERRCODE = '22023', COLUMN = 'workflow';
    END IF;
    NEW.updated_at := now();
    NEW.updated_by := session_user;
    RETURN NEW;
END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.guard_workflow_policy() FROM PUBLIC;
END
$$;

DROP FUNCTION email.mark_deliveries_failed(p_delivery_ids text[], p_attempts integer[], p_error_codes text[], p_error_messages text[], p_retryables boolean[], p_max_attempts integer[], p_payloads jsonb[]);

CREATE OR REPLACE FUNCTION email.mark_deliveries_failed(p_delivery_ids text[], p_attempts integer[], p_error_codes text[], p_error_messages text[], p_retryables boolean[], p_max_attempts integer[], p_payloads jsonb[])
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, lease_expires_at timestamp with time zone, next_attempt_at timestamp with time zone, changed boolean)
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
       OR n > 10000 THEN
        RAISE EXCEPTION 'delivery_ids must be 0 to % ids, none NULL', 10000
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
    IF EXISTS (SELECT FROM unnest(p_max_attempts) AS m WHERE m < 1) THEN
        RAISE EXCEPTION 'max_attempts must be at least 1, not %',
            (SELECT m FROM unnest(p_max_attempts) AS m WHERE m < 1 LIMIT 1)
            USING ERRCODE = '22023', COLUMN = 'max_attempts';
    END IF;
    IF EXISTS (SELECT FROM unnest(p_payloads) AS p
               WHERE octet_length(p::text) > 15872) THEN
        RAISE EXCEPTION 'payload is larger than % bytes as JSON', 15872
            USING ERRCODE = '22023', COLUMN = 'payload';
    END IF;
    IF n > 1 THEN
        -- Rows are locked in delivery_id order, so overlapping batches never deadlock.
        PERFORM FROM email.deliveries AS d WHERE d.delivery_id = ANY (p_delivery_ids)
        ORDER BY d.delivery_id FOR UPDATE;
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
        (SELECT jsonb_object_agg(p_delivery_ids[pos], p_payloads[pos])
         FROM unnest(applied) AS pos WHERE p_payloads[pos] IS NOT NULL));
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

    RETURN QUERY
    SELECT d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at,
           i.pos = ANY (updated)
    FROM unnest(p_delivery_ids) WITH ORDINALITY AS i(delivery_id, pos)
    JOIN email.deliveries AS d ON d.delivery_id = i.delivery_id
    ORDER BY i.pos;
END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.mark_deliveries_failed(p_delivery_ids text[], p_attempts integer[], p_error_codes text[], p_error_messages text[], p_retryables boolean[], p_max_attempts integer[], p_payloads jsonb[]) FROM PUBLIC;
END
$$;

GRANT EXECUTE ON FUNCTION email.mark_deliveries_failed(p_delivery_ids text[], p_attempts integer[], p_error_codes text[], p_error_messages text[], p_retryables boolean[], p_max_attempts integer[], p_payloads jsonb[]) TO "email_writer";

DROP FUNCTION email.mark_deliveries_sent(p_delivery_ids text[], p_attempts integer[], p_payloads jsonb[]);

CREATE OR REPLACE FUNCTION email.mark_deliveries_sent(p_delivery_ids text[], p_attempts integer[], p_payloads jsonb[])
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, lease_expires_at timestamp with time zone, next_attempt_at timestamp with time zone, changed boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    updated_ids text[];
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
    IF EXISTS (SELECT FROM unnest(p_payloads) AS p
               WHERE octet_length(p::text) > 15872) THEN
        RAISE EXCEPTION 'payload is larger than % bytes as JSON', 15872
            USING ERRCODE = '22023', COLUMN = 'payload';
    END IF;
    IF cardinality(p_delivery_ids) > 1 THEN
        -- Rows are locked in delivery_id order, so overlapping batches never deadlock.
        PERFORM FROM email.deliveries AS d WHERE d.delivery_id = ANY (p_delivery_ids)
        ORDER BY d.delivery_id FOR UPDATE;
    END IF;
    PERFORM email.attach_event_payloads(
        (SELECT jsonb_object_agg(f.delivery_id,
                    coalesce(f.payload, '{}'::jsonb) || jsonb_build_object('reported_attempt', f.attempt))
         FROM (SELECT DISTINCT ON (i.delivery_id) i.delivery_id, i.attempt, i.payload
               FROM unnest(p_delivery_ids, p_attempts, p_payloads)
                    WITH ORDINALITY AS i(delivery_id, attempt, payload, pos)
               ORDER BY i.delivery_id, i.pos) AS f));
    WITH updated AS (
        UPDATE email.deliveries AS d
        SET status = 'sent', last_error_code = NULL, last_error_message = NULL
        WHERE d.delivery_id = ANY (p_delivery_ids) AND d.status <> 'sent'
        RETURNING d.delivery_id
    )
    SELECT coalesce(array_agg(updated.delivery_id), '{}') INTO updated_ids FROM updated;

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

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.mark_deliveries_sent(p_delivery_ids text[], p_attempts integer[], p_payloads jsonb[]) FROM PUBLIC;
END
$$;

GRANT EXECUTE ON FUNCTION email.mark_deliveries_sent(p_delivery_ids text[], p_attempts integer[], p_payloads jsonb[]) TO "email_writer";

DROP FUNCTION email.mark_delivery_dead_letter(p_delivery_id text, p_reference text);

CREATE OR REPLACE FUNCTION email.mark_delivery_dead_letter(p_delivery_id text, p_reference text)
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, lease_expires_at timestamp with time zone, next_attempt_at timestamp with time zone, changed boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    -- SECURITY DEFINER: the worker holds no write grant on the tables, only EXECUTE on the
    -- lifecycle functions; the guard trigger checks the row as it checks any client's.
    -- queued/in_progress/retrying move to dead_letter with the reference in metadata (and on
    -- the event). failed and dead_letter keep their status (failed -> dead_letter is not a
    -- transition) and only record a reference they lack. sent never changes.
    IF p_reference IS NULL
       OR char_length(p_reference) NOT BETWEEN 1 AND 200
       OR p_reference ~ '[[:space:][:cntrl:]]' THEN
        RAISE EXCEPTION 'reference must be 1-% printable characters without spaces',
            200 USING ERRCODE = '22023', COLUMN = 'reference';
    END IF;
    PERFORM email.attach_event_payloads(jsonb_build_object(p_delivery_id,
        jsonb_build_object('dead_letter_reference', p_reference)));
    RETURN QUERY
    WITH updated AS (
        UPDATE email.deliveries AS d
        SET status = CASE WHEN d.status IN ('queued', 'in_progress', 'retrying') THEN 'dead_letter' ELSE d.status END
                ::email.delivery_status,
            metadata = d.metadata || jsonb_build_object('dead_letter_reference', p_reference)
        WHERE d.delivery_id = p_delivery_id
          AND (d.status IN ('queued', 'in_progress', 'retrying')
               OR (d.status IN ('failed', 'dead_letter')
                   AND d.metadata->'dead_letter_reference' IS NULL))
        RETURNING d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at)
    SELECT updated.*, true FROM updated;
    IF NOT FOUND THEN
        RETURN QUERY
        SELECT d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at, false FROM email.deliveries AS d WHERE d.delivery_id = p_delivery_id;
    END IF;
END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.mark_delivery_dead_letter(p_delivery_id text, p_reference text) FROM PUBLIC;
END
$$;

GRANT EXECUTE ON FUNCTION email.mark_delivery_dead_letter(p_delivery_id text, p_reference text) TO "email_writer";

DROP FUNCTION email.mark_delivery_failed(p_delivery_id text, p_attempt integer, p_error_code text, p_error_message text, p_retryable boolean, p_max_attempts integer, p_payload jsonb);

CREATE OR REPLACE FUNCTION email.mark_delivery_failed(p_delivery_id text, p_attempt integer, p_error_code text, p_error_message text, p_retryable boolean, p_max_attempts integer DEFAULT NULL::integer, p_payload jsonb DEFAULT NULL::jsonb)
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, lease_expires_at timestamp with time zone, next_attempt_at timestamp with time zone, changed boolean)
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    -- One failure report: the one-id case of email.mark_deliveries_failed, where the rule
    -- lives (a NULL max_attempts: the workflow's policy).
    SELECT * FROM email.mark_deliveries_failed(ARRAY[p_delivery_id], ARRAY[p_attempt],
        ARRAY[p_error_code], ARRAY[p_error_message], ARRAY[p_retryable], ARRAY[p_max_attempts],
        ARRAY[p_payload])
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.mark_delivery_failed(p_delivery_id text, p_attempt integer, p_error_code text, p_error_message text, p_retryable boolean, p_max_attempts integer, p_payload jsonb) FROM PUBLIC;
END
$$;

GRANT EXECUTE ON FUNCTION email.mark_delivery_failed(p_delivery_id text, p_attempt integer, p_error_code text, p_error_message text, p_retryable boolean, p_max_attempts integer, p_payload jsonb) TO "email_writer";

DROP FUNCTION email.mark_delivery_sent(p_delivery_id text, p_attempt integer, p_payload jsonb);

CREATE OR REPLACE FUNCTION email.mark_delivery_sent(p_delivery_id text, p_attempt integer, p_payload jsonb DEFAULT NULL::jsonb)
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, lease_expires_at timestamp with time zone, next_attempt_at timestamp with time zone, changed boolean)
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    -- One success report: the one-id case of email.mark_deliveries_sent, where the rule lives.
    SELECT * FROM email.mark_deliveries_sent(ARRAY[p_delivery_id], ARRAY[p_attempt], ARRAY[p_payload])
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.mark_delivery_sent(p_delivery_id text, p_attempt integer, p_payload jsonb) FROM PUBLIC;
END
$$;

GRANT EXECUTE ON FUNCTION email.mark_delivery_sent(p_delivery_id text, p_attempt integer, p_payload jsonb) TO "email_writer";

DROP FUNCTION email.reap_stale_deliveries(p_lease interval, p_max_attempts integer, p_limit integer);

CREATE OR REPLACE FUNCTION email.reap_stale_deliveries(p_lease interval DEFAULT NULL::interval, p_max_attempts integer DEFAULT NULL::integer, p_limit integer DEFAULT 1000)
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, lease_expires_at timestamp with time zone, next_attempt_at timestamp with time zone, changed boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    -- SECURITY DEFINER: the worker holds no write grant on the tables, only EXECUTE on the
    -- lifecycle functions; the guard trigger checks the row as it checks any client's.
    -- Claims whose stored lease_expires_at has passed go back to retrying (with the policy's
    -- backoff) or, with the retry budget used up (p_max_attempts, else the workflow's
    -- policy), to dead_letter: email.failure_outcome decides, as for a reported failure.
    -- p_lease is not used since revision 0008 (each claim stores its own expiry, so no
    -- reaper can judge a live claim expired); it stays so existing calls keep working.
    IF p_max_attempts IS NOT NULL AND p_max_attempts < 1 THEN
        RAISE EXCEPTION 'max_attempts must be at least 1, not %', p_max_attempts
            USING ERRCODE = '22023', COLUMN = 'max_attempts';
    END IF;
    IF p_limit IS NULL OR p_limit < 1 THEN
        RAISE EXCEPTION 'limit must be at least 1, not %', p_limit
            USING ERRCODE = '22023', COLUMN = 'limit';
    END IF;
    PERFORM email.attach_event_payloads(NULL);
    -- SKIP LOCKED: concurrent reapers (and a claimer taking the row over) split the work;
    -- the lock re-checks the expiry on the newest row version.
    RETURN QUERY
    WITH stale AS (
        SELECT d.delivery_id, d.workflow, d.attempts, d.metadata, d.lease_expires_at
        FROM email.deliveries AS d
        WHERE d.status = 'in_progress' AND d.lease_expires_at <= now()
        ORDER BY d.lease_expires_at
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ),
    decided AS (
        SELECT stale.*, o.status AS outcome, o.next_attempt_at AS retry_at
        FROM stale
        CROSS JOIN LATERAL email.failure_outcome(stale.workflow, stale.attempts, stale.metadata,
                                                 true, p_max_attempts) AS o
    ),
    reaped AS (
        UPDATE email.deliveries AS d
        SET status = decided.outcome, next_attempt_at = decided.retry_at,
            last_error_code = 'LEASE_EXPIRED',
            last_error_message = format(
                'attempt %s claimed at %s got no report before its lease expired at %s',
                d.attempts, d.last_attempted_at, decided.lease_expires_at)
        FROM decided
        WHERE d.delivery_id = decided.delivery_id
        RETURNING d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at)
    SELECT reaped.*, true FROM reaped;
END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.reap_stale_deliveries(p_lease interval, p_max_attempts integer, p_limit integer) FROM PUBLIC;
END
$$;

GRANT EXECUTE ON FUNCTION email.reap_stale_deliveries(p_lease interval, p_max_attempts integer, p_limit integer) TO "email_writer";

DROP FUNCTION email.requeue_delivery(p_delivery_id text, p_reason text);

CREATE OR REPLACE FUNCTION email.requeue_delivery(p_delivery_id text, p_reason text)
RETURNS TABLE(delivery_id text, workflow text, recipient text, status email.delivery_status, attempts integer, last_error_code text, last_error_message text, last_attempted_at timestamp with time zone, queued_at timestamp with time zone, sent_at timestamp with time zone, metadata jsonb, created_at timestamp with time zone, updated_at timestamp with time zone, lease_expires_at timestamp with time zone, next_attempt_at timestamp with time zone, changed boolean)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    IF p_reason IS NULL OR btrim(p_reason) = '' THEN
        RAISE EXCEPTION 'a requeue needs a reason' USING ERRCODE = '22023', COLUMN = 'reason';
    END IF;
    -- The owner's function (no group role may execute it); the guard trigger refuses a
    -- requeue by any other login, by any path.
    PERFORM email.attach_event_payloads(jsonb_build_object(p_delivery_id,
        jsonb_build_object('reason', email.sanitize_error_message(p_reason),
                           'requeued_by', session_user::text)));
    RETURN QUERY
    WITH updated AS (
        UPDATE email.deliveries AS d
        SET status = 'queued',
            metadata = d.metadata || jsonb_build_object('requeued_at_attempt', d.attempts)
        WHERE d.delivery_id = p_delivery_id AND d.status IN ('failed', 'dead_letter')
        RETURNING d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at)
    SELECT updated.*, true FROM updated;
    IF NOT FOUND THEN
        RETURN QUERY
        SELECT d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message, d.last_attempted_at, d.queued_at, d.sent_at, d.metadata, d.created_at, d.updated_at, d.lease_expires_at, d.next_attempt_at, false FROM email.deliveries AS d WHERE d.delivery_id = p_delivery_id;
    END IF;
END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.requeue_delivery(p_delivery_id text, p_reason text) FROM PUBLIC;
END
$$;

CREATE OR REPLACE FUNCTION email.retry_delay(p_policy email.workflow_policies, p_failures integer)
RETURNS interval
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    -- How long a delivery waits before its next attempt after p_failures failed attempts of
    -- its current retry budget: base * 2^(failures - 1), scaled by a uniform factor in
    -- [1 - jitter, 1 + jitter], at most cap (README "Worker policy").
    SELECT least(p_policy.backoff_cap,
                 p_policy.backoff_base * power(2, least(greatest(p_failures, 1) - 1, 30))
                 * (1 - p_policy.backoff_jitter + 2 * p_policy.backoff_jitter * random()))
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.retry_delay(p_policy email.workflow_policies, p_failures integer) FROM PUBLIC;
END
$$;

CREATE OR REPLACE FUNCTION email.workflow_policy(p_workflow text)
RETURNS email.workflow_policies
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    policy email.workflow_policies;
BEGIN
    -- The policy a workflow runs under: its own row, else the default row '*' (which its
    -- guard trigger keeps from being deleted; a clear error if it is gone all the same).
    SELECT p.* INTO policy FROM email.workflow_policies AS p
    WHERE p.workflow IN (p_workflow, '*')
    ORDER BY p.workflow = '*'
    LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no workflow policy for % and no default row ''*''', p_workflow
            USING ERRCODE = '22023', COLUMN = 'workflow',
                  HINT = 'restore it: email-delivery policy reset ''*''';
    END IF;
    RETURN policy;
END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.workflow_policy(p_workflow text) FROM PUBLIC;
END
$$;

CREATE OR REPLACE TRIGGER workflow_policies_audit
    AFTER INSERT OR UPDATE OR DELETE ON email.workflow_policies
    FOR EACH ROW
    EXECUTE FUNCTION email.audit_workflow_policy();;

CREATE OR REPLACE TRIGGER workflow_policies_guard
    BEFORE INSERT OR UPDATE OR DELETE ON email.workflow_policies
    FOR EACH ROW
    EXECUTE FUNCTION email.guard_workflow_policy();;

CREATE OR REPLACE TRIGGER workflow_policies_no_truncate
    BEFORE TRUNCATE ON email.workflow_policies
    FOR EACH STATEMENT
    EXECUTE FUNCTION email.guard_workflow_policy();;

CREATE POLICY workflow_policies_email_reader_select ON email.workflow_policies
    AS PERMISSIVE FOR SELECT TO email_reader USING (true);;

CREATE POLICY workflow_policies_email_writer_select ON email.workflow_policies
    AS PERMISSIVE FOR SELECT TO email_writer USING (true);;

CREATE POLICY workflow_policy_changes_email_reader_select ON email.workflow_policy_changes
    AS PERMISSIVE FOR SELECT TO email_reader USING (true);;

CREATE OR REPLACE VIEW email.delivery_health WITH (security_invoker = true) AS
SELECT * FROM email.delivery_health();;

DO $$
BEGIN
    REVOKE ALL ON TABLE email.delivery_health FROM PUBLIC;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
        REVOKE ALL ON TABLE email.delivery_health FROM "anon";
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        REVOKE ALL ON TABLE email.delivery_health FROM "authenticated";
    END IF;
END
$$;

GRANT SELECT ON TABLE email.delivery_health TO "email_reader";

CREATE OR REPLACE VIEW email.pending_deliveries WITH (security_invoker = true) AS
SELECT delivery_id, workflow, recipient, status, attempts, last_error_code,
       queued_at, last_attempted_at, updated_at, now() - updated_at AS idle_for,
       lease_expires_at, next_attempt_at,
       -- A claim past the expiry it stored (revision 0008): the reaper's next catch.
       coalesce(status = 'in_progress' AND lease_expires_at <= now(), false) AS claim_expired
FROM email.deliveries
WHERE status IN ('queued', 'in_progress', 'retrying');;

UPDATE email.deliveries SET lease_expires_at = greatest(coalesce(last_attempted_at, now()) + interval '5 minutes', now() + interval '1 second') WHERE status = 'in_progress' AND lease_expires_at IS NULL;

ALTER TABLE email.deliveries ADD CONSTRAINT ck_deliveries_lease_iff_in_progress CHECK ((status = 'in_progress') = (lease_expires_at IS NOT NULL)) NOT VALID;

ALTER TABLE email.deliveries ADD CONSTRAINT ck_deliveries_next_attempt_only_retrying CHECK (next_attempt_at IS NULL OR status = 'retrying') NOT VALID;

COMMIT;

SET lock_timeout = '5s';

SET statement_timeout = '6h';

ALTER TABLE email.deliveries VALIDATE CONSTRAINT ck_deliveries_lease_iff_in_progress;

ALTER TABLE email.deliveries VALIDATE CONSTRAINT ck_deliveries_next_attempt_only_retrying;

RESET statement_timeout;

RESET lock_timeout;

BEGIN;
