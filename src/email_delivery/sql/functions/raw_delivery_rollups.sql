CREATE OR REPLACE FUNCTION email.raw_delivery_rollups(p_from timestamp with time zone, p_until timestamp with time zone, p_workflow text DEFAULT NULL::text)
RETURNS TABLE(hour timestamp with time zone, workflow text, status email.delivery_status, error_code text, latency_bucket smallint, deliveries bigint, attempts bigint, retried bigint)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- The deliveries queued in [p_from, p_until) (of one workflow, or all), summed as
    -- email.delivery_rollups stores them: per UTC hour, workflow and current status, sent
    -- ones by latency bucket, the others by last_error_code. The one definition of what a
    -- rollup row holds: email.refresh_delivery_rollups stores it, email.delivery_stats reads
    -- it for the hours the rollups do not cover.
    -- Finished rows come from ix_deliveries_finished (status IN the finished statuses: one
    -- range per status, and it implies the index's predicate even in a generic plan),
    -- in-flight ones from (status, updated_at).
    SELECT date_bin(/*{rollup_hour}*/interval '1 hour'/*{end}*/, d.queued_at, /*{stats_bucket_origin}*/TIMESTAMPTZ '2000-01-01 00:00:00+00'/*{end}*/),
           d.workflow, d.status,
           CASE WHEN d.status <> 'sent' THEN d.last_error_code END,
           CASE WHEN d.status = 'sent' THEN /*{latency_bucket}*/CASE WHEN latency_s IS NULL THEN NULL WHEN latency_s <= power(10::double precision, (-61)::double precision / 20) THEN -61 WHEN latency_s > 1e6 THEN 121 ELSE ceil(20 * log(latency_s)) END::smallint/*{end}*/ END,
           count(*), sum(d.attempts)::bigint, count(*) FILTER (WHERE d.attempts > 1)
    FROM (
        SELECT f.queued_at, f.workflow, f.status, f.last_error_code, f.attempts,
               EXTRACT(EPOCH FROM f.sent_at - f.queued_at)::double precision AS latency_s
        FROM email.deliveries AS f
        WHERE f.status IN /*{terminal_statuses}*/('sent', 'failed', 'dead_letter', 'suppressed')/*{end}*/
          AND f.queued_at >= p_from AND f.queued_at < p_until
          AND (p_workflow IS NULL OR f.workflow = p_workflow)
        UNION ALL
        SELECT a.queued_at, a.workflow, a.status, a.last_error_code, a.attempts, NULL
        FROM email.deliveries AS a
        WHERE a.status IN /*{active_statuses}*/('queued', 'in_progress', 'retrying')/*{end}*/
          AND a.queued_at >= p_from AND a.queued_at < p_until
          AND (p_workflow IS NULL OR a.workflow = p_workflow)
    ) AS d
    GROUP BY 1, 2, 3, 4, 5
$$;
