-- Per provider and workflow, the attempts of the last 24 hours (see email.provider_metrics).
CREATE OR REPLACE VIEW email.provider_metrics_24h WITH (security_invoker = true) AS
SELECT provider, workflow, attempts, accepted, failed, delivered, deferred, bounced,
       hard_bounced, complained, rejected, delivery_rate, bounce_rate, complaint_rate,
       deferral_rate, failure_rate, p50_send_ms, p95_send_ms, p50_sent_to_delivered_s,
       p95_sent_to_delivered_s
FROM email.provider_metrics(now() - interval '24 hours', now());
