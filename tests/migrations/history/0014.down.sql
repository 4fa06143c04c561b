COMMIT;

SET lock_timeout = '5s';

DROP INDEX CONCURRENTLY IF EXISTS email.ix_delivery_attempts_xact_id;

DROP INDEX CONCURRENTLY IF EXISTS email.ix_delivery_outcomes_xact_id;

RESET lock_timeout;

BEGIN;

SET LOCAL lock_timeout = '5s';

SET LOCAL statement_timeout = '60s';

DROP POLICY provider_rollups_email_writer_select ON email.provider_rollups;

DROP POLICY provider_rollups_email_reader_select ON email.provider_rollups;

DROP POLICY provider_rollups_daily_email_writer_select ON email.provider_rollups_daily;

DROP POLICY provider_rollups_daily_email_reader_select ON email.provider_rollups_daily;

DROP POLICY provider_rollup_state_email_writer_select ON email.provider_rollup_state;

DROP POLICY provider_rollup_state_email_reader_select ON email.provider_rollup_state;

DROP POLICY provider_rollup_deletions_email_writer_select ON email.provider_rollup_deletions;

DROP POLICY provider_rollup_deletions_email_reader_select ON email.provider_rollup_deletions;

DROP TRIGGER delivery_attempts_rollup_deletions ON email.delivery_attempts;

DROP FUNCTION email.refresh_provider_rollups();

DROP FUNCTION email.record_provider_rollup_deletions();

DROP FUNCTION email.raw_provider_rollups(p_from timestamp with time zone, p_until timestamp with time zone, p_provider text, p_workflow text);

DROP FUNCTION email.merge_provider_rollups(p_units email.provider_rollups[], p_span interval);

CREATE OR REPLACE FUNCTION email.provider_metrics(p_since timestamp with time zone, p_until timestamp with time zone DEFAULT now())
RETURNS TABLE(provider text, workflow text, attempts bigint, accepted bigint, failed bigint, delivered bigint, deferred bigint, bounced bigint, hard_bounced bigint, complained bigint, rejected bigint, delivery_rate double precision, bounce_rate double precision, complaint_rate double precision, deferral_rate double precision, failure_rate double precision, p50_send_ms double precision, p95_send_ms double precision, p50_sent_to_delivered_s double precision, p95_sent_to_delivered_s double precision)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- Per provider and workflow, the attempts reported with a provider in [since, until)
    -- (email.delivery_attempts, by reported_at): how many it accepted (sent) or failed, what
    -- became of the accepted ones (their current outcome, email.delivery_outcomes), the send
    -- duration's percentiles and the time from sent to delivered. Rates are shares of the
    -- accepted attempts (failure_rate: of all attempts); NULL when there are none. What a
    -- worker orders its providers by (tracker.provider_health); SECURITY INVOKER: the
    -- caller's own SELECT on the tables decides.
    SELECT a.provider, a.workflow,
           count(*) AS attempts,
           count(*) FILTER (WHERE a.result = 'sent') AS accepted,
           count(*) FILTER (WHERE a.result = 'failed') AS failed,
           count(*) FILTER (WHERE o.delivered_at IS NOT NULL) AS delivered,
           count(*) FILTER (WHERE o.outcome = 'deferred') AS deferred,
           count(*) FILTER (WHERE o.outcome = 'bounced') AS bounced,
           count(*) FILTER (WHERE o.outcome = 'bounced' AND o.permanent) AS hard_bounced,
           count(*) FILTER (WHERE o.outcome = 'complained') AS complained,
           count(*) FILTER (WHERE o.outcome = 'rejected') AS rejected,
           (count(*) FILTER (WHERE o.delivered_at IS NOT NULL))::double precision
               / nullif(count(*) FILTER (WHERE a.result = 'sent'), 0),
           (count(*) FILTER (WHERE o.outcome = 'bounced'))::double precision
               / nullif(count(*) FILTER (WHERE a.result = 'sent'), 0),
           (count(*) FILTER (WHERE o.outcome = 'complained'))::double precision
               / nullif(count(*) FILTER (WHERE a.result = 'sent'), 0),
           (count(*) FILTER (WHERE o.outcome = 'deferred'))::double precision
               / nullif(count(*) FILTER (WHERE a.result = 'sent'), 0),
           (count(*) FILTER (WHERE a.result = 'failed'))::double precision / count(*),
           percentile_cont(0.5) WITHIN GROUP (ORDER BY a.duration_ms),
           percentile_cont(0.95) WITHIN GROUP (ORDER BY a.duration_ms),
           percentile_cont(0.5) WITHIN GROUP (
               ORDER BY extract(epoch FROM o.delivered_at - a.reported_at)),
           percentile_cont(0.95) WITHIN GROUP (
               ORDER BY extract(epoch FROM o.delivered_at - a.reported_at))
    FROM email.delivery_attempts AS a
    LEFT JOIN email.delivery_outcomes AS o
           ON a.result = 'sent' AND o.delivery_id = a.delivery_id
    WHERE a.reported_at >= p_since AND a.reported_at < p_until AND a.provider IS NOT NULL
    GROUP BY a.provider, a.workflow
    ORDER BY a.provider, a.workflow
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
    -- then the dashboards' rollups. What it reports is what verify and health warn about:
    -- how far the partitions reach, and events that landed in the default partition.
    SELECT coalesce(array_agg(p), '{}') INTO created
    FROM email.create_event_partitions(p_ahead, p_interval) AS p;
    SELECT * INTO refreshed FROM email.refresh_delivery_rollups();
    RETURN QUERY
    SELECT created, refreshed.hours_recomputed, refreshed.hours_added, refreshed.rolled_until,
           (SELECT max(p.upper_bound) FROM email.event_partitions() AS p),
           (SELECT count(*) FROM email.delivery_events_default);
END
$$;;

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

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'email_writer') THEN
        REVOKE EXECUTE ON FUNCTION email.latency_percentile(p_buckets smallint[], p_counts bigint[], p_fraction double precision) FROM "email_writer";
    END IF;
END
$$;

ALTER TABLE email.delivery_attempts DROP COLUMN xact_id;

ALTER TABLE email.delivery_outcomes DROP COLUMN xact_id;

DROP TABLE email.provider_rollup_deletions;

DROP TABLE email.provider_rollup_state;

DROP TABLE email.provider_rollups_daily;

DROP TABLE email.provider_rollups;
