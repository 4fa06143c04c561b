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
        WHERE d.status IN /*{active_statuses}*/('queued', 'in_progress', 'retrying')/*{end}*/
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
$$;
