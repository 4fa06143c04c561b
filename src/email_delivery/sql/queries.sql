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
SELECT * FROM email.mark_delivery_sent($1, $2, $3::jsonb, $4, $5, $6, $7);

-- name: mark_delivery_failed
SELECT * FROM email.mark_delivery_failed($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10, $11);

-- The batch forms, for the tracker's group commit (email_delivery.group_commit): one row
-- per input position, in input order.

-- name: claim_deliveries
SELECT * FROM email.claim_deliveries($1::text[], $2);

-- name: mark_deliveries_sent
SELECT * FROM email.mark_deliveries_sent($1::text[], $2::integer[], $3::jsonb[], $4::text[], $5::text[], $6::integer[], $7::integer[]);

-- name: mark_deliveries_failed
SELECT * FROM email.mark_deliveries_failed($1::text[], $2::integer[], $3::text[], $4::text[], $5::boolean[], $6::integer[], $7::jsonb[], $8::text[], $9::text[], $10::integer[], $11::integer[]);

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

-- Provider outcomes (revision 0010).

-- name: record_delivery_outcome
SELECT * FROM email.record_delivery_outcome($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11);

-- name: match_outcome_events
SELECT email.match_outcome_events(NULL);

-- name: delivery_outcome
SELECT delivery_id, workflow, outcome, permanent, reason, provider, outcome_at, delivered_at,
       events, updated_at
FROM email.delivery_outcomes WHERE delivery_id = $1;

-- name: outcome_events
SELECT id, provider, event_id, kind, permanent, occurred_at, provider_message_id, reason,
       smtp_code, provider_event_type, received_at, matched_at
FROM email.outcome_events WHERE delivery_id = $1 ORDER BY occurred_at, id;

-- name: delivery_attempts
SELECT delivery_id, attempt, result, provider, provider_message_id, reply_code, duration_ms,
       reported_at
FROM email.delivery_attempts WHERE delivery_id = $1 ORDER BY attempt, reported_at;

-- name: find_by_provider_message_id
SELECT delivery_id FROM email.delivery_attempts
WHERE provider = $1 AND provider_message_id = $2;

-- name: unmatched_outcome_events
SELECT id, provider, event_id, kind, permanent, provider_message_id, echoed_delivery_id,
       occurred_at, received_at
FROM email.outcome_events WHERE delivery_id IS NULL AND received_at < now() - $1::interval
ORDER BY received_at, id LIMIT $2;

-- name: provider_metrics
SELECT * FROM email.provider_metrics(now() - $1::interval, now());
