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
$$;
