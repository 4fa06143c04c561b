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
$$;
