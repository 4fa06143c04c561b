CREATE OR REPLACE VIEW email.pending_deliveries WITH (security_invoker = true) AS
SELECT delivery_id, workflow, recipient, status, attempts, last_error_code,
       queued_at, last_attempted_at, updated_at, now() - updated_at AS idle_for,
       lease_expires_at, next_attempt_at,
       -- A claim past the expiry it stored (revision 0008): the reaper's next catch.
       coalesce(status = 'in_progress' AND lease_expires_at <= now(), false) AS claim_expired
FROM email.deliveries
WHERE status IN /*{active_statuses}*/('queued', 'in_progress', 'retrying')/*{end}*/;
