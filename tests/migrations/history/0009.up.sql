COMMIT;

SET lock_timeout = '5s';

SET statement_timeout = '6h';

CREATE INDEX IF NOT EXISTS ix_delivery_events_xact_id_id ON email.delivery_events (xact_id, id);

RESET statement_timeout;

RESET lock_timeout;

BEGIN;

SET LOCAL lock_timeout = '5s';

SET LOCAL statement_timeout = '60s';

DROP INDEX email.ix_delivery_events_xact_id;

CREATE TABLE email.webhook_endpoints (
    id BIGINT GENERATED ALWAYS AS IDENTITY, 
    url TEXT NOT NULL, 
    description TEXT, 
    enabled BOOLEAN DEFAULT true NOT NULL, 
    workflows TEXT[], 
    statuses TEXT[], 
    include_recipient BOOLEAN DEFAULT false NOT NULL, 
    include_metadata BOOLEAN DEFAULT false NOT NULL, 
    first_failure_at TIMESTAMP WITH TIME ZONE, 
    disabled_at TIMESTAMP WITH TIME ZONE, 
    disabled_reason TEXT, 
    disabled_automatically BOOLEAN DEFAULT false NOT NULL, 
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    CONSTRAINT pk_webhook_endpoints PRIMARY KEY (id), 
    CONSTRAINT ck_webhook_endpoints_url_http CHECK (url ~ '^https?://' AND char_length(url) <= 2000), 
    CONSTRAINT ck_webhook_endpoints_description_length CHECK (char_length(description) <= 500), 
    CONSTRAINT ck_webhook_endpoints_disabled_at_iff_disabled CHECK (enabled = (disabled_at IS NULL))
);

CREATE TABLE email.webhook_secrets (
    endpoint_id BIGINT NOT NULL, 
    secret TEXT NOT NULL, 
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    CONSTRAINT pk_webhook_secrets PRIMARY KEY (endpoint_id), 
    CONSTRAINT ck_webhook_secrets_secret_format CHECK (secret ~ '^whsec_'), 
    CONSTRAINT fk_webhook_secrets_endpoint_id_webhook_endpoints FOREIGN KEY(endpoint_id) REFERENCES email.webhook_endpoints (id) ON DELETE CASCADE
);

CREATE TABLE email.webhook_messages (
    id BIGINT GENERATED ALWAYS AS IDENTITY, 
    endpoint_id BIGINT NOT NULL, 
    event_id BIGINT NOT NULL, 
    delivery_id TEXT NOT NULL, 
    message_id TEXT NOT NULL, 
    body TEXT NOT NULL, 
    state TEXT DEFAULT 'pending' NOT NULL, 
    attempts INTEGER DEFAULT 0 NOT NULL, 
    next_attempt_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    last_status INTEGER, 
    last_error TEXT, 
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    finished_at TIMESTAMP WITH TIME ZONE, 
    CONSTRAINT pk_webhook_messages PRIMARY KEY (id), 
    CONSTRAINT ck_webhook_messages_state_known CHECK (state IN ('pending', 'delivered', 'failed')), 
    CONSTRAINT ck_webhook_messages_attempts_non_negative CHECK (attempts >= 0), 
    CONSTRAINT fk_webhook_messages_endpoint_id_webhook_endpoints FOREIGN KEY(endpoint_id) REFERENCES email.webhook_endpoints (id) ON DELETE CASCADE, 
    CONSTRAINT uq_webhook_messages_endpoint_id_event_id UNIQUE (endpoint_id, event_id)
);

CREATE INDEX ix_webhook_messages_next_attempt_at_id ON email.webhook_messages (next_attempt_at, id) WHERE state = 'pending';

CREATE INDEX ix_webhook_messages_delivery_id ON email.webhook_messages (delivery_id);

CREATE TABLE email.webhook_attempts (
    id BIGINT GENERATED ALWAYS AS IDENTITY, 
    message_id BIGINT NOT NULL, 
    attempt INTEGER NOT NULL, 
    attempted_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    status_code INTEGER, 
    latency_ms DOUBLE PRECISION NOT NULL, 
    error TEXT, 
    response_excerpt TEXT, 
    CONSTRAINT pk_webhook_attempts PRIMARY KEY (id), 
    CONSTRAINT ck_webhook_attempts_error_length CHECK (char_length(error) <= 500), 
    CONSTRAINT ck_webhook_attempts_excerpt_length CHECK (char_length(response_excerpt) <= 1024), 
    CONSTRAINT fk_webhook_attempts_message_id_webhook_messages FOREIGN KEY(message_id) REFERENCES email.webhook_messages (id) ON DELETE CASCADE
);

CREATE INDEX ix_webhook_attempts_message_id_attempt ON email.webhook_attempts (message_id, attempt);

CREATE TABLE email.webhook_feed_state (
    singleton BOOLEAN DEFAULT true NOT NULL, 
    after_xact_id BIGINT DEFAULT (pg_snapshot_xmin(pg_current_snapshot()))::text::bigint - 1 NOT NULL, 
    after_event_id BIGINT DEFAULT '9223372036854775807'::bigint NOT NULL, 
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    CONSTRAINT pk_webhook_feed_state PRIMARY KEY (singleton), 
    CONSTRAINT ck_webhook_feed_state_one_row CHECK (singleton)
);

INSERT INTO email.webhook_feed_state DEFAULT VALUES;

CREATE TABLE email.feed_listeners (
    backend_pid INTEGER NOT NULL, 
    expires_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    CONSTRAINT pk_feed_listeners PRIMARY KEY (backend_pid)
);

DO $$
BEGIN
    REVOKE ALL ON TABLE email.webhook_endpoints FROM PUBLIC;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
        REVOKE ALL ON TABLE email.webhook_endpoints FROM "anon";
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        REVOKE ALL ON TABLE email.webhook_endpoints FROM "authenticated";
    END IF;
END
$$;

ALTER TABLE email.webhook_endpoints ENABLE ROW LEVEL SECURITY;

DO $$
BEGIN
    REVOKE ALL ON TABLE email.webhook_secrets FROM PUBLIC;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
        REVOKE ALL ON TABLE email.webhook_secrets FROM "anon";
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        REVOKE ALL ON TABLE email.webhook_secrets FROM "authenticated";
    END IF;
END
$$;

ALTER TABLE email.webhook_secrets ENABLE ROW LEVEL SECURITY;

DO $$
BEGIN
    REVOKE ALL ON TABLE email.webhook_messages FROM PUBLIC;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
        REVOKE ALL ON TABLE email.webhook_messages FROM "anon";
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        REVOKE ALL ON TABLE email.webhook_messages FROM "authenticated";
    END IF;
END
$$;

ALTER TABLE email.webhook_messages ENABLE ROW LEVEL SECURITY;

DO $$
BEGIN
    REVOKE ALL ON TABLE email.webhook_attempts FROM PUBLIC;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
        REVOKE ALL ON TABLE email.webhook_attempts FROM "anon";
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        REVOKE ALL ON TABLE email.webhook_attempts FROM "authenticated";
    END IF;
END
$$;

ALTER TABLE email.webhook_attempts ENABLE ROW LEVEL SECURITY;

DO $$
BEGIN
    REVOKE ALL ON TABLE email.webhook_feed_state FROM PUBLIC;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
        REVOKE ALL ON TABLE email.webhook_feed_state FROM "anon";
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        REVOKE ALL ON TABLE email.webhook_feed_state FROM "authenticated";
    END IF;
END
$$;

ALTER TABLE email.webhook_feed_state ENABLE ROW LEVEL SECURITY;

DO $$
BEGIN
    REVOKE ALL ON TABLE email.feed_listeners FROM PUBLIC;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
        REVOKE ALL ON TABLE email.feed_listeners FROM "anon";
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        REVOKE ALL ON TABLE email.feed_listeners FROM "authenticated";
    END IF;
END
$$;

ALTER TABLE email.feed_listeners ENABLE ROW LEVEL SECURITY;

CREATE OR REPLACE FUNCTION email.delivery_feed(p_after_xact_id bigint DEFAULT 0, p_after_event_id bigint DEFAULT 0, p_limit integer DEFAULT 1000)
RETURNS TABLE(xact_id bigint, id bigint, delivery_id text, status email.delivery_status, attempt integer, error_code text, error_message text, payload jsonb, changed_columns text[], created_at timestamp with time zone)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    legacy integer := 0;
BEGIN
    -- The change feed: every audit event exactly once, in transaction order, after the
    -- cursor (p_after_xact_id, p_after_event_id). Identity values are taken at insert, not at
    -- commit, so "id > last seen" skips an event whose transaction commits after a higher id
    -- was read. Here a page holds only events of transactions below the snapshot's xmin:
    -- every one of those has ended (committed or rolled back), and every transaction that
    -- starts later gets a higher id, so nothing can ever appear behind the cursor. The order
    -- (xact_id, id) is the btree ix_delivery_events_xact_id_id. xact_id is the 64-bit
    -- pg_current_xact_id() (epoch and xid): no wraparound. SECURITY INVOKER: the caller's
    -- own SELECT right and policies on delivery_events apply (email_reader, email_writer).
    IF p_limit IS NULL OR p_limit < 1 OR p_limit > 10000 THEN
        RAISE EXCEPTION 'p_limit must be between 1 and 10000, not %', p_limit
            USING ERRCODE = '22023', COLUMN = 'p_limit';
    END IF;
    -- Events written before revision 0006 have no xact_id: all committed long before this
    -- function existed, they come first, as xact_id 0, in id order.
    IF coalesce(p_after_xact_id, 0) = 0 THEN
        RETURN QUERY
        SELECT 0::bigint, e.id, e.delivery_id, e.status, e.attempt, e.error_code,
               e.error_message, e.payload, e.changed_columns, e.created_at
        FROM email.delivery_events AS e
        WHERE e.xact_id IS NULL AND e.id > coalesce(p_after_event_id, 0)
        ORDER BY e.id
        LIMIT p_limit;
        GET DIAGNOSTICS legacy = ROW_COUNT;
        IF legacy >= p_limit THEN
            RETURN;
        END IF;
        p_after_event_id := 0;
    END IF;
    -- One statement: the xmin and the rows come from the same snapshot.
    RETURN QUERY
    SELECT e.xact_id, e.id, e.delivery_id, e.status, e.attempt, e.error_code,
           e.error_message, e.payload, e.changed_columns, e.created_at
    FROM email.delivery_events AS e
    WHERE (e.xact_id, e.id) > (coalesce(p_after_xact_id, 0), coalesce(p_after_event_id, 0))
      AND e.xact_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
    ORDER BY e.xact_id, e.id
    LIMIT p_limit - legacy;
END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.delivery_feed(p_after_xact_id bigint, p_after_event_id bigint, p_limit integer) FROM PUBLIC;
END
$$;

GRANT EXECUTE ON FUNCTION email.delivery_feed(p_after_xact_id bigint, p_after_event_id bigint, p_limit integer) TO "email_writer", "email_reader";

CREATE OR REPLACE FUNCTION email.delivery_feed_head()
RETURNS TABLE(xact_id bigint, id bigint)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- The feed's cursor "now": after every event a page could return at this moment (every
    -- transaction below the snapshot's xmin). A reader starting here gets only later changes.
    SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint - 1, 9223372036854775807::bigint
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.delivery_feed_head() FROM PUBLIC;
END
$$;

GRANT EXECUTE ON FUNCTION email.delivery_feed_head() TO "email_writer", "email_reader";

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
           coalesce('disabled by the sender: '
                    || string_agg(format('#%s %s (%s)', e.id, e.url, e.disabled_reason), '; '
                                  ORDER BY e.id)
                    || '; email-delivery webhooks enable ID after fixing the receiver', 'none')
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
    IF p_ttl IS NULL OR p_ttl < interval '1 second' OR p_ttl > interval '1 hour' THEN
        RAISE EXCEPTION 'p_ttl must be between 1 second and 1 hour, not %', p_ttl
            USING ERRCODE = '22023', COLUMN = 'p_ttl';
    END IF;
    INSERT INTO email.feed_listeners AS l (backend_pid, expires_at)
    VALUES (pg_backend_pid(), now() + p_ttl)
    ON CONFLICT (backend_pid) DO UPDATE SET expires_at = EXCLUDED.expires_at
    RETURNING l.expires_at INTO expires;
    DELETE FROM email.feed_listeners AS l WHERE l.expires_at < now() - interval '1 hour';
    RETURN expires;
END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.feed_listener_heartbeat(p_ttl interval) FROM PUBLIC;
END
$$;

GRANT EXECUTE ON FUNCTION email.feed_listener_heartbeat(p_ttl interval) TO "email_writer", "email_reader";

CREATE OR REPLACE FUNCTION email.feed_listener_stop()
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    -- This session no longer LISTENs: writers stop notifying once nobody else does.
    DELETE FROM email.feed_listeners WHERE backend_pid = pg_backend_pid();
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.feed_listener_stop() FROM PUBLIC;
END
$$;

GRANT EXECUTE ON FUNCTION email.feed_listener_stop() TO "email_writer", "email_reader";

CREATE OR REPLACE FUNCTION email.notify_delivery_feed()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- Wakes feed readers that LISTEN on email_delivery_feed when the writing transaction
    -- commits (a rolled-back one notifies nobody). Only while a reader has registered
    -- (email.feed_listener_heartbeat): a NOTIFY serialises its transaction's commit with every
    -- other notifying commit of the cluster (one lock, held through the commit's WAL flush),
    -- which would cap the lifecycle's throughput for nobody's benefit. Once per statement,
    -- with an empty payload (PostgreSQL folds a transaction's identical notifications). A
    -- hint only: an event also becomes readable when an older transaction ends, which
    -- notifies nobody, so readers poll as well (email_delivery.feed.follow).
    IF EXISTS (SELECT FROM email.feed_listeners AS l WHERE l.expires_at > now()) THEN
        PERFORM pg_notify('email_delivery_feed', '');
    END IF;
    RETURN NULL;
END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.notify_delivery_feed() FROM PUBLIC;
END
$$;

CREATE OR REPLACE TRIGGER delivery_events_notify
    AFTER INSERT ON email.delivery_events
    FOR EACH STATEMENT
    EXECUTE FUNCTION email.notify_delivery_feed();;
