CREATE OR REPLACE VIEW email.pending_deliveries WITH (security_invoker = true) AS
SELECT delivery_id, workflow, recipient, status, attempts, last_error_code,
       queued_at, last_attempted_at, updated_at, now() - updated_at AS idle_for
FROM email.deliveries
WHERE status IN /*{active_statuses}*/('queued', 'in_progress', 'retrying')/*{end}*/;
