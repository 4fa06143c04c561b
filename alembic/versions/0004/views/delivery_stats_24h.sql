CREATE OR REPLACE VIEW email.delivery_stats_24h WITH (security_invoker = true) AS
SELECT workflow, total, sent, failed, dead_letter, in_flight, success_rate, retry_rate,
       mean_attempts, latency_p50_s, latency_p95_s, latency_p99_s, top_error_codes
FROM email.delivery_stats(now() - interval '24 hours');
