SET LOCAL lock_timeout = '5s';

SET LOCAL statement_timeout = '60s';

CREATE TABLE email.provider_rollups (
    hour TIMESTAMP WITH TIME ZONE NOT NULL, 
    provider TEXT NOT NULL, 
    workflow TEXT NOT NULL, 
    attempts BIGINT NOT NULL, 
    accepted BIGINT NOT NULL, 
    failed BIGINT NOT NULL, 
    delivered BIGINT NOT NULL, 
    deferred BIGINT NOT NULL, 
    bounced BIGINT NOT NULL, 
    hard_bounced BIGINT NOT NULL, 
    complained BIGINT NOT NULL, 
    rejected BIGINT NOT NULL, 
    send_buckets SMALLINT[] NOT NULL, 
    send_counts BIGINT[] NOT NULL, 
    delivered_buckets SMALLINT[] NOT NULL, 
    delivered_counts BIGINT[] NOT NULL, 
    CONSTRAINT pk_provider_rollups PRIMARY KEY (hour, provider, workflow), 
    CONSTRAINT ck_provider_rollups_attempts_positive CHECK (attempts > 0), 
    CONSTRAINT ck_provider_rollups_histograms_aligned CHECK (cardinality(send_buckets) = cardinality(send_counts) AND cardinality(delivered_buckets) = cardinality(delivered_counts))
);

CREATE TABLE email.provider_rollups_daily (
    day TIMESTAMP WITH TIME ZONE NOT NULL, 
    provider TEXT NOT NULL, 
    workflow TEXT NOT NULL, 
    attempts BIGINT NOT NULL, 
    accepted BIGINT NOT NULL, 
    failed BIGINT NOT NULL, 
    delivered BIGINT NOT NULL, 
    deferred BIGINT NOT NULL, 
    bounced BIGINT NOT NULL, 
    hard_bounced BIGINT NOT NULL, 
    complained BIGINT NOT NULL, 
    rejected BIGINT NOT NULL, 
    send_buckets SMALLINT[] NOT NULL, 
    send_counts BIGINT[] NOT NULL, 
    delivered_buckets SMALLINT[] NOT NULL, 
    delivered_counts BIGINT[] NOT NULL, 
    CONSTRAINT pk_provider_rollups_daily PRIMARY KEY (day, provider, workflow), 
    CONSTRAINT ck_provider_rollups_daily_attempts_positive CHECK (attempts > 0), 
    CONSTRAINT ck_provider_rollups_daily_histograms_aligned CHECK (cardinality(send_buckets) = cardinality(send_counts) AND cardinality(delivered_buckets) = cardinality(delivered_counts))
);

CREATE TABLE email.provider_rollup_state (
    singleton BOOLEAN DEFAULT true NOT NULL, 
    rolled_until TIMESTAMP WITH TIME ZONE DEFAULT '-infinity' NOT NULL, 
    xact_watermark BIGINT DEFAULT 0 NOT NULL, 
    refreshed_at TIMESTAMP WITH TIME ZONE, 
    CONSTRAINT pk_provider_rollup_state PRIMARY KEY (singleton), 
    CONSTRAINT ck_provider_rollup_state_one_row CHECK (singleton)
);

INSERT INTO email.provider_rollup_state DEFAULT VALUES;

CREATE TABLE email.provider_rollup_deletions (
    xact_id BIGINT DEFAULT (pg_current_xact_id())::text::bigint NOT NULL, 
    hour TIMESTAMP WITH TIME ZONE NOT NULL, 
    provider TEXT NOT NULL, 
    workflow TEXT NOT NULL, 
    CONSTRAINT pk_provider_rollup_deletions PRIMARY KEY (xact_id, hour, provider, workflow)
);

DO $$
BEGIN
    REVOKE ALL ON TABLE email.provider_rollups FROM PUBLIC;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
        REVOKE ALL ON TABLE email.provider_rollups FROM "anon";
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        REVOKE ALL ON TABLE email.provider_rollups FROM "authenticated";
    END IF;
END
$$;

GRANT SELECT ON TABLE email.provider_rollups TO "email_reader", "email_writer";

ALTER TABLE email.provider_rollups ENABLE ROW LEVEL SECURITY;

DO $$
BEGIN
    REVOKE ALL ON TABLE email.provider_rollups_daily FROM PUBLIC;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
        REVOKE ALL ON TABLE email.provider_rollups_daily FROM "anon";
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        REVOKE ALL ON TABLE email.provider_rollups_daily FROM "authenticated";
    END IF;
END
$$;

GRANT SELECT ON TABLE email.provider_rollups_daily TO "email_reader", "email_writer";

ALTER TABLE email.provider_rollups_daily ENABLE ROW LEVEL SECURITY;

DO $$
BEGIN
    REVOKE ALL ON TABLE email.provider_rollup_state FROM PUBLIC;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
        REVOKE ALL ON TABLE email.provider_rollup_state FROM "anon";
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        REVOKE ALL ON TABLE email.provider_rollup_state FROM "authenticated";
    END IF;
END
$$;

GRANT SELECT ON TABLE email.provider_rollup_state TO "email_reader", "email_writer";

ALTER TABLE email.provider_rollup_state ENABLE ROW LEVEL SECURITY;

DO $$
BEGIN
    REVOKE ALL ON TABLE email.provider_rollup_deletions FROM PUBLIC;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
        REVOKE ALL ON TABLE email.provider_rollup_deletions FROM "anon";
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        REVOKE ALL ON TABLE email.provider_rollup_deletions FROM "authenticated";
    END IF;
END
$$;

GRANT SELECT ON TABLE email.provider_rollup_deletions TO "email_reader", "email_writer";

ALTER TABLE email.provider_rollup_deletions ENABLE ROW LEVEL SECURITY;

ALTER TABLE email.delivery_attempts ADD COLUMN xact_id BIGINT;

ALTER TABLE email.delivery_attempts ALTER COLUMN xact_id SET DEFAULT (pg_current_xact_id())::text::bigint;

ALTER TABLE email.delivery_outcomes ADD COLUMN xact_id BIGINT;

ALTER TABLE email.delivery_outcomes ALTER COLUMN xact_id SET DEFAULT (pg_current_xact_id())::text::bigint;

GRANT EXECUTE ON FUNCTION email.latency_percentile(p_buckets smallint[], p_counts bigint[], p_fraction double precision) TO "email_writer";

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
        updated_at = now(),
        -- This transaction: the provider rollups recompute the attempt's hour.
        xact_id = EXCLUDED.xact_id;
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

CREATE OR REPLACE FUNCTION email.maintain(p_ahead interval DEFAULT '3 mons'::interval, p_interval interval DEFAULT '1 mon'::interval)
RETURNS TABLE(partitions_created text[], rollup_hours_recomputed integer, rollup_hours_added integer, rolled_until timestamp with time zone, covered_until timestamp with time zone, default_partition_rows bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    created text[];
    refreshed record;
BEGIN
    -- The owner's periodic step, every few minutes (`email-delivery maintain`, or pg_cron:
    -- SELECT * FROM email.maintain()): the audit log's partitions p_ahead into the future,
    -- then the dashboards' rollups (deliveries, then providers). What it reports is what verify and health warn about:
    -- how far the partitions reach, and events that landed in the default partition.
    SELECT coalesce(array_agg(p), '{}') INTO created
    FROM email.create_event_partitions(p_ahead, p_interval) AS p;
    SELECT * INTO refreshed FROM email.refresh_delivery_rollups();
    PERFORM FROM email.refresh_provider_rollups();
    RETURN QUERY
    SELECT created, refreshed.hours_recomputed, refreshed.hours_added, refreshed.rolled_until,
           (SELECT max(p.upper_bound) FROM email.event_partitions() AS p),
           (SELECT count(*) FROM email.delivery_events_default);
END
$$;;

CREATE OR REPLACE FUNCTION email.merge_provider_rollups(p_units email.provider_rollups[], p_span interval)
RETURNS SETOF email.provider_rollups
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- Provider rollup rows summed per provider, workflow and p_span (each unit's hour binned
    -- to it; a NULL span: one row per provider and workflow, its hour NULL): the counts
    -- added, each latency histogram merged bucket by bucket. How the refresh sums hours into
    -- days and email.provider_metrics sums a window.
    WITH units AS (
        SELECT date_bin(p_span, u.hour, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS span, u.*
        FROM unnest(p_units) AS u
    ), counts AS (
        SELECT u.span, u.provider, u.workflow,
               sum(u.attempts)::bigint AS attempts, sum(u.accepted)::bigint AS accepted,
               sum(u.failed)::bigint AS failed, sum(u.delivered)::bigint AS delivered,
               sum(u.deferred)::bigint AS deferred, sum(u.bounced)::bigint AS bounced,
               sum(u.hard_bounced)::bigint AS hard_bounced,
               sum(u.complained)::bigint AS complained, sum(u.rejected)::bigint AS rejected
        FROM units AS u
        GROUP BY u.span, u.provider, u.workflow
    ), histograms AS (
        SELECT h.span, h.provider, h.workflow, h.measure,
               array_agg(h.bucket ORDER BY h.bucket) AS buckets,
               array_agg(h.n ORDER BY h.bucket) AS counts
        FROM (SELECT u.span, u.provider, u.workflow, x.measure, x.bucket, sum(x.n)::bigint AS n
              FROM units AS u
              CROSS JOIN LATERAL (
                  SELECT 'send', b.bucket, b.n
                  FROM unnest(u.send_buckets, u.send_counts) AS b(bucket, n)
                  UNION ALL
                  SELECT 'delivered', b.bucket, b.n
                  FROM unnest(u.delivered_buckets, u.delivered_counts) AS b(bucket, n)
              ) AS x(measure, bucket, n)
              GROUP BY u.span, u.provider, u.workflow, x.measure, x.bucket) AS h
        GROUP BY h.span, h.provider, h.workflow, h.measure
    )
    SELECT c.span, c.provider, c.workflow, c.attempts, c.accepted, c.failed, c.delivered,
           c.deferred, c.bounced, c.hard_bounced, c.complained, c.rejected,
           coalesce(s.buckets, '{}'), coalesce(s.counts, '{}'),
           coalesce(d.buckets, '{}'), coalesce(d.counts, '{}')
    FROM counts AS c
    LEFT JOIN histograms AS s
           ON s.span IS NOT DISTINCT FROM c.span AND s.provider = c.provider
          AND s.workflow = c.workflow AND s.measure = 'send'
    LEFT JOIN histograms AS d
           ON d.span IS NOT DISTINCT FROM c.span AND d.provider = c.provider
          AND d.workflow = c.workflow AND d.measure = 'delivered'
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.merge_provider_rollups(p_units email.provider_rollups[], p_span interval) FROM PUBLIC;
END
$$;

GRANT EXECUTE ON FUNCTION email.merge_provider_rollups(p_units email.provider_rollups[], p_span interval) TO "email_writer", "email_reader";

CREATE OR REPLACE FUNCTION email.provider_metrics(p_since timestamp with time zone, p_until timestamp with time zone DEFAULT now())
RETURNS TABLE(provider text, workflow text, attempts bigint, accepted bigint, failed bigint, delivered bigint, deferred bigint, bounced bigint, hard_bounced bigint, complained bigint, rejected bigint, delivery_rate double precision, bounce_rate double precision, complaint_rate double precision, deferral_rate double precision, failure_rate double precision, p50_send_ms double precision, p95_send_ms double precision, p50_sent_to_delivered_s double precision, p95_sent_to_delivered_s double precision)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
#variable_conflict use_column
DECLARE
    rolled_until timestamp with time zone;
    watermark bigint;
    -- [low, high): the whole hours inside the window that the rollups may answer.
    low timestamp with time zone;
    high timestamp with time zone;
    -- [day_low, day_high): the whole days inside [low, high) the daily tier answers.
    day_low timestamp with time zone;
    day_high timestamp with time zone;
BEGIN
    -- Per provider and workflow, the attempts reported with a provider in [since, until)
    -- (email.delivery_attempts, by reported_at): how many it accepted (sent) or failed, what
    -- became of the accepted ones (their current outcome, email.delivery_outcomes), the send
    -- duration's percentiles and the time from sent to delivered. Rates are shares of the
    -- accepted attempts (failure_rate: of all attempts); NULL when there are none. What a
    -- worker orders its providers by (tracker.provider_health) and the dashboards show;
    -- SECURITY INVOKER: the caller's own SELECT on the tables decides.
    -- Whole days come from email.provider_rollups_daily and the other whole hours from
    -- email.provider_rollups, unless a transaction the last refresh did not see changed
    -- them (then that day's hours, and the changed hour from the attempts); the rest (the
    -- window's edges, the open hour) from the attempts, summed the same way
    -- (email.raw_provider_rollups). Counts are exact; percentiles come from the latency
    -- histograms (within rules.LATENCY_RELATIVE_ERROR). No JIT, as for delivery_stats: the
    -- raw edges' plans are costed past jit_above_cost at 10 M and run in milliseconds.
    IF p_since IS NULL THEN
        RAISE EXCEPTION 'since is required' USING ERRCODE = '22023', COLUMN = 'since';
    END IF;
    IF p_until IS NULL THEN
        RAISE EXCEPTION 'until is required' USING ERRCODE = '22023', COLUMN = 'until';
    END IF;
    SELECT s.rolled_until, s.xact_watermark INTO rolled_until, watermark
    FROM email.provider_rollup_state AS s;
    IF isfinite(p_since) AND rolled_until > '-infinity' THEN
        low := date_bin(interval '1 hour', p_since, TIMESTAMPTZ '2000-01-01 00:00:00+00');
        IF low < p_since THEN
            low := low + interval '1 hour';
        END IF;
        high := rolled_until;
        IF isfinite(p_until) THEN
            high := least(high, date_bin(interval '1 hour', p_until, TIMESTAMPTZ '2000-01-01 00:00:00+00'));
        END IF;
    END IF;
    IF low IS NULL OR high <= low THEN
        -- No whole rolled hour in the window: every attempt is read.
        low := p_until;
        high := low;
    END IF;
    day_low := date_bin(interval '1 day', low, TIMESTAMPTZ '2000-01-01 00:00:00+00');
    IF day_low < low THEN
        day_low := day_low + interval '1 day';
    END IF;
    day_high := date_bin(interval '1 day', high, TIMESTAMPTZ '2000-01-01 00:00:00+00');
    IF day_high <= day_low THEN
        -- No whole day in [low, high): its hours are all read hourly.
        day_low := high;
        day_high := high;
    END IF;
    RETURN QUERY
    WITH touched AS MATERIALIZED (
        SELECT date_bin(interval '1 hour', a.reported_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS hour, a.provider, a.workflow
        FROM email.delivery_attempts AS a
        WHERE high > low AND a.xact_id >= watermark
          AND a.reported_at >= low AND a.reported_at < high AND a.provider IS NOT NULL
        UNION
        SELECT date_bin(interval '1 hour', a.reported_at, TIMESTAMPTZ '2000-01-01 00:00:00+00'), a.provider, a.workflow
        FROM email.delivery_outcomes AS o
        JOIN email.delivery_attempts AS a
          ON a.delivery_id = o.delivery_id AND a.result = 'sent'
        WHERE high > low AND o.xact_id >= watermark
          AND a.reported_at >= low AND a.reported_at < high AND a.provider IS NOT NULL
        UNION
        SELECT x.hour, x.provider, x.workflow FROM email.provider_rollup_deletions AS x
        WHERE high > low AND x.hour >= low AND x.hour < high
    ), touched_days AS MATERIALIZED (
        SELECT DISTINCT date_bin(interval '1 day', t.hour, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS day, t.provider, t.workflow
        FROM touched AS t
        WHERE t.hour >= day_low AND t.hour < day_high
    ), units AS (
        SELECT raw.* FROM email.raw_provider_rollups(p_since, low) AS raw
        UNION ALL
        SELECT raw.* FROM email.raw_provider_rollups(high, p_until) AS raw
        WHERE high > low
        UNION ALL
        SELECT raw.* FROM touched AS t
        CROSS JOIN LATERAL email.raw_provider_rollups(
            t.hour, t.hour + interval '1 hour', t.provider, t.workflow) AS raw
        UNION ALL
        -- The whole hours outside the whole days, and the hours of a day that changed.
        SELECT r.* FROM email.provider_rollups AS r
        WHERE ((r.hour >= low AND r.hour < day_low) OR (r.hour >= day_high AND r.hour < high))
          AND NOT EXISTS (SELECT FROM touched AS t
                          WHERE t.hour = r.hour AND t.provider = r.provider
                            AND t.workflow = r.workflow)
        UNION ALL
        SELECT r.* FROM touched_days AS c
        JOIN email.provider_rollups AS r
          ON r.hour >= c.day AND r.hour < c.day + interval '1 day'
         AND r.provider = c.provider AND r.workflow = c.workflow
        WHERE NOT EXISTS (SELECT FROM touched AS t
                          WHERE t.hour = r.hour AND t.provider = r.provider
                            AND t.workflow = r.workflow)
        UNION ALL
        SELECT y.* FROM email.provider_rollups_daily AS y
        WHERE y.day >= day_low AND y.day < day_high
          AND NOT EXISTS (SELECT FROM touched_days AS c
                          WHERE c.day = y.day AND c.provider = y.provider
                            AND c.workflow = y.workflow)
    ), totals AS (
        SELECT m.* FROM email.merge_provider_rollups(
            (SELECT array_agg(ROW(u.*)::email.provider_rollups) FROM units AS u), NULL) AS m
    )
    SELECT t.provider, t.workflow, t.attempts, t.accepted, t.failed, t.delivered, t.deferred,
           t.bounced, t.hard_bounced, t.complained, t.rejected,
           t.delivered::double precision / nullif(t.accepted, 0),
           t.bounced::double precision / nullif(t.accepted, 0),
           t.complained::double precision / nullif(t.accepted, 0),
           t.deferred::double precision / nullif(t.accepted, 0),
           t.failed::double precision / t.attempts,
           1000 * email.latency_percentile(t.send_buckets, t.send_counts, 0.5),
           1000 * email.latency_percentile(t.send_buckets, t.send_counts, 0.95),
           email.latency_percentile(t.delivered_buckets, t.delivered_counts, 0.5),
           email.latency_percentile(t.delivered_buckets, t.delivered_counts, 0.95)
    FROM totals AS t
    ORDER BY t.provider, t.workflow;
END
$$;;

CREATE OR REPLACE FUNCTION email.raw_provider_rollups(p_from timestamp with time zone, p_until timestamp with time zone, p_provider text DEFAULT NULL::text, p_workflow text DEFAULT NULL::text)
RETURNS TABLE(hour timestamp with time zone, provider text, workflow text, attempts bigint, accepted bigint, failed bigint, delivered bigint, deferred bigint, bounced bigint, hard_bounced bigint, complained bigint, rejected bigint, send_buckets smallint[], send_counts bigint[], delivered_buckets smallint[], delivered_counts bigint[])
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- The attempts reported with a provider in [p_from, p_until) (of one provider and
    -- workflow, or all), summed as email.provider_rollups stores them: per UTC hour,
    -- provider and workflow, the counts email.provider_metrics reports (outcomes: the
    -- current one of each accepted attempt's delivery) and two latency histograms, the send
    -- duration and the time from sent to delivered. The one definition of what a provider
    -- rollup row holds: email.refresh_provider_rollups stores it, email.provider_metrics
    -- reads it for the hours the rollups do not cover.
    WITH timed AS MATERIALIZED (
        -- Each level turns one latency (named latency_s, as the bucket rule reads it) into
        -- its bucket: the send duration, then the time from sent to delivered.
        SELECT v.hour, v.provider, v.workflow, v.result, v.outcome, v.permanent,
               v.delivered_at, v.send_bucket, CASE WHEN latency_s IS NULL THEN NULL WHEN latency_s <= power(10::double precision, (-61)::double precision / 20) THEN -61 WHEN latency_s > 1e6 THEN 121 ELSE ceil(20 * log(latency_s)) END::smallint AS delivered_bucket
        FROM (
            SELECT u.hour, u.provider, u.workflow, u.result, u.outcome, u.permanent,
                   u.delivered_at, CASE WHEN latency_s IS NULL THEN NULL WHEN latency_s <= power(10::double precision, (-61)::double precision / 20) THEN -61 WHEN latency_s > 1e6 THEN 121 ELSE ceil(20 * log(latency_s)) END::smallint AS send_bucket,
                   EXTRACT(EPOCH FROM u.delivered_at - u.reported_at)::double precision
                       AS delivered_s
            FROM (
                SELECT date_bin(interval '1 hour', a.reported_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS hour,
                       a.provider, a.workflow, a.result, a.reported_at, o.outcome,
                       o.permanent, o.delivered_at,
                       a.duration_ms::double precision / 1000 AS latency_s
                FROM email.delivery_attempts AS a
                LEFT JOIN email.delivery_outcomes AS o
                       ON a.result = 'sent' AND o.delivery_id = a.delivery_id
                WHERE a.reported_at >= p_from AND a.reported_at < p_until
                  AND a.provider IS NOT NULL
                  AND (p_provider IS NULL OR a.provider = p_provider)
                  AND (p_workflow IS NULL OR a.workflow = p_workflow)
            ) AS u
        ) AS w
        CROSS JOIN LATERAL (SELECT w.hour, w.provider, w.workflow, w.result, w.outcome,
                                   w.permanent, w.delivered_at, w.send_bucket,
                                   w.delivered_s AS latency_s) AS v
    ), counts AS (
        SELECT t.hour, t.provider, t.workflow,
               count(*) AS attempts,
               count(*) FILTER (WHERE t.result = 'sent') AS accepted,
               count(*) FILTER (WHERE t.result = 'failed') AS failed,
               count(*) FILTER (WHERE t.delivered_at IS NOT NULL) AS delivered,
               count(*) FILTER (WHERE t.outcome = 'deferred') AS deferred,
               count(*) FILTER (WHERE t.outcome = 'bounced') AS bounced,
               count(*) FILTER (WHERE t.outcome = 'bounced' AND t.permanent) AS hard_bounced,
               count(*) FILTER (WHERE t.outcome = 'complained') AS complained,
               count(*) FILTER (WHERE t.outcome = 'rejected') AS rejected
        FROM timed AS t
        GROUP BY t.hour, t.provider, t.workflow
    ), histograms AS (
        -- Both latencies of each attempt, by measure: one aggregate builds both histograms.
        SELECT h.hour, h.provider, h.workflow, h.measure,
               array_agg(h.bucket ORDER BY h.bucket) AS buckets,
               array_agg(h.n ORDER BY h.bucket) AS counts
        FROM (SELECT t.hour, t.provider, t.workflow, x.measure, x.bucket, count(*) AS n
              FROM timed AS t
              CROSS JOIN LATERAL (VALUES ('send', t.send_bucket),
                                         ('delivered', t.delivered_bucket)) AS x(measure, bucket)
              WHERE x.bucket IS NOT NULL
              GROUP BY t.hour, t.provider, t.workflow, x.measure, x.bucket) AS h
        GROUP BY h.hour, h.provider, h.workflow, h.measure
    )
    SELECT c.hour, c.provider, c.workflow, c.attempts, c.accepted, c.failed, c.delivered,
           c.deferred, c.bounced, c.hard_bounced, c.complained, c.rejected,
           coalesce(s.buckets, '{}'), coalesce(s.counts, '{}'),
           coalesce(d.buckets, '{}'), coalesce(d.counts, '{}')
    FROM counts AS c
    LEFT JOIN histograms AS s
           ON s.hour = c.hour AND s.provider = c.provider AND s.workflow = c.workflow
          AND s.measure = 'send'
    LEFT JOIN histograms AS d
           ON d.hour = c.hour AND d.provider = c.provider AND d.workflow = c.workflow
          AND d.measure = 'delivered'
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.raw_provider_rollups(p_from timestamp with time zone, p_until timestamp with time zone, p_provider text, p_workflow text) FROM PUBLIC;
END
$$;

GRANT EXECUTE ON FUNCTION email.raw_provider_rollups(p_from timestamp with time zone, p_until timestamp with time zone, p_provider text, p_workflow text) TO "email_writer", "email_reader";

CREATE OR REPLACE FUNCTION email.record_provider_rollup_deletions()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- Attempts go only with their delivery (retention, or the owner's DELETE; the foreign
    -- key's cascade fires this once per statement, with every cascaded row). A deletion
    -- writes no xact_id anywhere, so the provider hours it changed are recorded for the
    -- provider rollups' next refresh (and read from the attempts until then).
    INSERT INTO email.provider_rollup_deletions (hour, provider, workflow)
    SELECT DISTINCT date_bin(interval '1 hour', d.reported_at, TIMESTAMPTZ '2000-01-01 00:00:00+00'), d.provider, d.workflow
    FROM deleted_attempts AS d
    WHERE d.provider IS NOT NULL
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.record_provider_rollup_deletions() FROM PUBLIC;
END
$$;

CREATE OR REPLACE FUNCTION email.refresh_provider_rollups()
RETURNS TABLE(hours_recomputed integer, hours_added integer, rolled_until timestamp with time zone)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    state record;
    -- Every transaction below the snapshot's xmin has ended: its attempts and outcomes (and
    -- deletions) are all visible now, so the next run starts there and misses none that
    -- commit late.
    horizon bigint := pg_snapshot_xmin(pg_current_snapshot())::text::bigint;
    target timestamp with time zone := date_bin(interval '1 hour', now(), TIMESTAMPTZ '2000-01-01 00:00:00+00');
    dirty_hours timestamp with time zone[] := '{}';
    dirty_providers text[] := '{}';
    dirty_workflows text[] := '{}';
    dirty_days timestamp with time zone[];
    new_hours integer;
BEGIN
    -- The owner's maintenance (maintain, or pg_cron), as email.refresh_delivery_rollups
    -- for the delivery rollups: recompute every rolled (hour, provider, workflow) whose
    -- attempts, or their deliveries' outcomes, a transaction changed since the last run,
    -- or whose attempts retention removed; then roll up the hours that closed, and sum the
    -- closed days those hours belong to. Several runs at once wait for each other on the
    -- state row.
    SELECT s.rolled_until, s.xact_watermark INTO state
    FROM email.provider_rollup_state AS s FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO email.provider_rollup_state DEFAULT VALUES ON CONFLICT DO NOTHING;
        SELECT s.rolled_until, s.xact_watermark INTO state
        FROM email.provider_rollup_state AS s FOR UPDATE;
    END IF;
    IF state.rolled_until > '-infinity' THEN
        WITH touched AS (
            SELECT date_bin(interval '1 hour', a.reported_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS hour, a.provider, a.workflow
            FROM email.delivery_attempts AS a
            WHERE a.xact_id >= state.xact_watermark AND a.xact_id < horizon
              AND a.provider IS NOT NULL
            UNION
            SELECT date_bin(interval '1 hour', a.reported_at, TIMESTAMPTZ '2000-01-01 00:00:00+00'), a.provider, a.workflow
            FROM email.delivery_outcomes AS o
            JOIN email.delivery_attempts AS a
              ON a.delivery_id = o.delivery_id AND a.result = 'sent'
            WHERE o.xact_id >= state.xact_watermark AND o.xact_id < horizon
              AND a.provider IS NOT NULL
            UNION
            SELECT x.hour, x.provider, x.workflow FROM email.provider_rollup_deletions AS x
            WHERE x.xact_id < horizon
        )
        SELECT coalesce(array_agg(t.hour), '{}'), coalesce(array_agg(t.provider), '{}'),
               coalesce(array_agg(t.workflow), '{}')
        INTO dirty_hours, dirty_providers, dirty_workflows
        FROM touched AS t WHERE t.hour < state.rolled_until;
        DELETE FROM email.provider_rollups AS r
        USING unnest(dirty_hours, dirty_providers, dirty_workflows) AS t(hour, provider, workflow)
        WHERE r.hour = t.hour AND r.provider = t.provider AND r.workflow = t.workflow;
    END IF;
    IF state.rolled_until < target THEN
        DELETE FROM email.provider_rollups AS r
        WHERE r.hour >= state.rolled_until AND r.hour < target;
    END IF;
    WITH written AS (
        INSERT INTO email.provider_rollups
            (hour, provider, workflow, attempts, accepted, failed, delivered, deferred, bounced, hard_bounced, complained, rejected, send_buckets, send_counts, delivered_buckets, delivered_counts)
        SELECT raw.* FROM unnest(dirty_hours, dirty_providers, dirty_workflows)
                          AS t(hour, provider, workflow)
        CROSS JOIN LATERAL email.raw_provider_rollups(
            t.hour, t.hour + interval '1 hour', t.provider, t.workflow) AS raw
        UNION ALL
        SELECT raw.* FROM email.raw_provider_rollups(state.rolled_until, target) AS raw
        WHERE state.rolled_until < target
        RETURNING email.provider_rollups.hour
    )
    SELECT count(DISTINCT w.hour) FILTER (WHERE w.hour >= state.rolled_until) INTO new_hours
    FROM written AS w;
    -- The daily tier: every closed day that holds a recomputed hour, and every day that
    -- closed since the last run, summed anew from its hours.
    SELECT coalesce(array_agg(DISTINCT d.day), '{}') INTO dirty_days
    FROM (SELECT date_bin(interval '1 day', h.hour, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS day
          FROM unnest(dirty_hours) AS h(hour)
          UNION ALL
          SELECT date_bin(interval '1 day', r.hour, TIMESTAMPTZ '2000-01-01 00:00:00+00')
          FROM email.provider_rollups AS r
          WHERE r.hour >= date_bin(interval '1 day', state.rolled_until, TIMESTAMPTZ '2000-01-01 00:00:00+00')) AS d
    WHERE d.day < date_bin(interval '1 day', greatest(state.rolled_until, target), TIMESTAMPTZ '2000-01-01 00:00:00+00');
    DELETE FROM email.provider_rollups_daily AS y WHERE y.day = ANY (dirty_days);
    INSERT INTO email.provider_rollups_daily
    SELECT m.* FROM email.merge_provider_rollups(
        (SELECT array_agg(r) FROM unnest(dirty_days) AS d(day)
         JOIN email.provider_rollups AS r ON r.hour >= d.day AND r.hour < d.day + interval '1 day'),
        interval '1 day') AS m;
    DELETE FROM email.provider_rollup_deletions AS x WHERE x.xact_id < horizon;
    UPDATE email.provider_rollup_state AS s
    SET xact_watermark = greatest(s.xact_watermark, horizon),
        rolled_until = greatest(s.rolled_until, target),
        refreshed_at = now();
    RETURN QUERY
    SELECT cardinality(dirty_hours), new_hours, greatest(state.rolled_until, target);
END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.refresh_provider_rollups() FROM PUBLIC;
END
$$;

CREATE OR REPLACE TRIGGER delivery_attempts_rollup_deletions
    AFTER DELETE ON email.delivery_attempts
    REFERENCING OLD TABLE AS deleted_attempts
    FOR EACH STATEMENT
    EXECUTE FUNCTION email.record_provider_rollup_deletions();;

CREATE POLICY provider_rollup_deletions_email_reader_select ON email.provider_rollup_deletions
    AS PERMISSIVE FOR SELECT TO email_reader USING (true);;

CREATE POLICY provider_rollup_deletions_email_writer_select ON email.provider_rollup_deletions
    AS PERMISSIVE FOR SELECT TO email_writer USING (true);;

CREATE POLICY provider_rollup_state_email_reader_select ON email.provider_rollup_state
    AS PERMISSIVE FOR SELECT TO email_reader USING (true);;

CREATE POLICY provider_rollup_state_email_writer_select ON email.provider_rollup_state
    AS PERMISSIVE FOR SELECT TO email_writer USING (true);;

CREATE POLICY provider_rollups_daily_email_reader_select ON email.provider_rollups_daily
    AS PERMISSIVE FOR SELECT TO email_reader USING (true);;

CREATE POLICY provider_rollups_daily_email_writer_select ON email.provider_rollups_daily
    AS PERMISSIVE FOR SELECT TO email_writer USING (true);;

CREATE POLICY provider_rollups_email_reader_select ON email.provider_rollups
    AS PERMISSIVE FOR SELECT TO email_reader USING (true);;

CREATE POLICY provider_rollups_email_writer_select ON email.provider_rollups
    AS PERMISSIVE FOR SELECT TO email_writer USING (true);;

COMMIT;

SET lock_timeout = '5s';

SET statement_timeout = '6h';

CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_delivery_attempts_xact_id ON email.delivery_attempts (xact_id);

CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_delivery_outcomes_xact_id ON email.delivery_outcomes (xact_id);

RESET statement_timeout;

RESET lock_timeout;

BEGIN;
