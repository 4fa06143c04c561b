-- The statements DeliveryTracker (email_delivery.tracker) runs: one round trip each, sent
-- straight to asyncpg, which numbers the parameters ($1, $2, …). Every state change is one
-- call of one lifecycle function (see functions/).

-- name: enqueue_delivery
SELECT * FROM email.enqueue_delivery($1, $2, $3, $4::jsonb, $5);

-- name: enqueue_deliveries
SELECT * FROM email.enqueue_deliveries($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::timestamptz[]);

-- name: claim_delivery
SELECT * FROM email.claim_delivery($1, $2);

-- name: mark_delivery_sent
SELECT * FROM email.mark_delivery_sent($1, $2, $3::jsonb);

-- name: mark_delivery_failed
SELECT * FROM email.mark_delivery_failed($1, $2, $3, $4, $5, $6, $7::jsonb);

-- The batch forms, for the tracker's group commit (email_delivery.group_commit): one row
-- per input position, in input order.

-- name: claim_deliveries
SELECT * FROM email.claim_deliveries($1::text[], $2);

-- name: mark_deliveries_sent
SELECT * FROM email.mark_deliveries_sent($1::text[], $2::integer[], $3::jsonb[]);

-- name: mark_deliveries_failed
SELECT * FROM email.mark_deliveries_failed($1::text[], $2::integer[], $3::text[], $4::text[], $5::boolean[], $6::integer[], $7::jsonb[]);

-- name: extend_claim
SELECT * FROM email.extend_claim($1, $2, $3);

-- name: now
SELECT now();

-- name: mark_delivery_dead_letter
SELECT * FROM email.mark_delivery_dead_letter($1, $2);

-- name: requeue_delivery
SELECT * FROM email.requeue_delivery($1, $2);

-- name: reap_stale_deliveries
SELECT * FROM email.reap_stale_deliveries($1, $2, $3);

-- name: get_delivery
SELECT /*{delivery_columns}*/delivery_id, workflow, recipient, status, attempts, last_error_code, last_error_message, last_attempted_at, queued_at, sent_at, metadata, created_at, updated_at, lease_expires_at, next_attempt_at/*{end}*/
FROM email.deliveries WHERE delivery_id = $1;

-- name: delivery_history
-- Only the partitions from the delivery's created_at on are searched (its events are never
-- older than the delivery).
SELECT id, delivery_id, status, attempt, error_code, error_message, payload, created_at
FROM email.delivery_events
WHERE delivery_id = $1
  AND created_at >= (SELECT d.created_at FROM email.deliveries AS d WHERE d.delivery_id = $1)
ORDER BY id;
