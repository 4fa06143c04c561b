-- The statements of retention (email_delivery.retention), run as the table owner through
-- SQLAlchemy (named :parameters). A pass covers the workflows of one retention window
-- (:only, or every workflow but :excluded: those with a window of their own). A batch walks one status in (queued_at, delivery_id)
-- order from a cursor on ix_deliveries_finished (the literal status list implies the partial
-- index's predicate, also in a generic plan), locking up to :batch_size finished rows and
-- skipping any a worker holds; the action re-checks status and age itself.

-- name: finished_at
-- When a delivery finished: sent_at for sent ones, else its last attempt, else queued_at
-- (not updated_at: scrubbing updates the row).
coalesce(d.sent_at, d.last_attempted_at, d.queued_at)

-- name: batch
-- ctid: the action finds each locked row by its address, without a second descent of the
-- primary key (a row locked here cannot move before the statement ends).
SELECT d.ctid, d.delivery_id, d.queued_at
FROM email.deliveries d
WHERE d.status = CAST(:status AS email.delivery_status) AND d.queued_at < :cutoff
  AND d.status IN /*{terminal_statuses}*/('sent', 'failed', 'dead_letter', 'suppressed')/*{end}*/
  AND (CAST(:only AS text[]) IS NULL OR d.workflow = ANY (CAST(:only AS text[])))
  AND d.workflow <> ALL (CAST(:excluded AS text[]))
  AND (d.queued_at, d.delivery_id) > (:after_queued_at, :after_id)
ORDER BY d.queued_at, d.delivery_id
LIMIT :batch_size
FOR UPDATE SKIP LOCKED

-- name: batch_report
-- The counts of a batch and the cursor after it (the rows and events the action changed
-- are in its CTEs changed_rows and changed_events).
last AS (
    SELECT queued_at, delivery_id FROM batch ORDER BY queued_at DESC, delivery_id DESC LIMIT 1
)
SELECT (SELECT count(*) FROM batch) AS scanned,
       (SELECT count(*) FROM changed_rows) AS deliveries,
       (SELECT count(*) FROM changed_events) AS events,
       (SELECT queued_at FROM last) AS last_queued_at,
       (SELECT delivery_id FROM last) AS last_id

-- name: prune_batch
-- Delete one batch of finished deliveries; the statement-level trigger
-- deliveries_purge_events deletes their events (counted in purged_events), attempts and
-- outcomes.
WITH batch AS (/*{block:batch}*/),
changed_rows AS (
    DELETE FROM email.deliveries d
    USING batch
    WHERE d.ctid = batch.ctid
      AND d.status = CAST(:status AS email.delivery_status)
      AND /*{block:finished_at}*/ < :cutoff
    RETURNING d.delivery_id
), changed_events AS (
    SELECT WHERE false
), /*{block:batch_report}*/;

-- name: purged_events
-- The events the purge trigger deleted in this transaction.
SELECT coalesce(nullif(current_setting(/*{purged_events_setting}*/'email.purged_events'/*{end}*/, true), ''), '0')::bigint;

-- name: drop_expired_event_partitions
-- Whole partitions of the audit log whose range ended before the cutoff (see the function).
SELECT name, rows_estimate FROM email.drop_expired_event_partitions(:before);

-- name: expired_event_partitions
-- What drop_expired_event_partitions would drop (dry run: in-flight deliveries not checked).
SELECT name, rows_estimate FROM email.event_partitions()
WHERE NOT is_default AND upper_bound <= :before ORDER BY upper_bound;

-- name: scrub_batch
-- Blank the personal details of one batch: metadata (but the lifecycle's own keys) and the
-- error message of each delivery, error message and payload of its events.
WITH batch AS (/*{block:batch}*/),
changed_rows AS (
    UPDATE email.deliveries d
    SET metadata = (SELECT coalesce(jsonb_object_agg(m.key, m.value), '{}'::jsonb)
                    FROM jsonb_each(d.metadata) AS m
                    WHERE m.key = ANY (/*{reserved_metadata_keys}*/ARRAY['dead_letter_reference', 'requeued_at_attempt']/*{end}*/)),
        last_error_message = NULL
    FROM batch
    WHERE d.delivery_id = batch.delivery_id
      AND d.status = CAST(:status AS email.delivery_status)
      AND /*{block:finished_at}*/ < :cutoff
      AND (d.metadata - /*{reserved_metadata_keys}*/ARRAY['dead_letter_reference', 'requeued_at_attempt']/*{end}*/ <> '{}'::jsonb
           OR d.last_error_message IS NOT NULL)
    RETURNING d.delivery_id
), changed_events AS (
    UPDATE email.delivery_events e
    SET error_message = NULL, payload = NULL
    FROM batch
    WHERE e.delivery_id = batch.delivery_id
      AND (e.error_message IS NOT NULL OR e.payload IS NOT NULL)
      AND EXISTS (SELECT FROM email.deliveries d
                  WHERE d.delivery_id = batch.delivery_id
                    AND d.status = CAST(:status AS email.delivery_status)
                    AND /*{block:finished_at}*/ < :cutoff)
    RETURNING 1
), /*{block:batch_report}*/;

-- name: count_candidates
-- Deliveries a prune of one status would delete (the progress bar's total; --dry-run).
SELECT count(*) FROM email.deliveries d
WHERE d.status = CAST(:status AS email.delivery_status) AND d.queued_at < :cutoff
  AND d.status IN /*{terminal_statuses}*/('sent', 'failed', 'dead_letter', 'suppressed')/*{end}*/
  AND (CAST(:only AS text[]) IS NULL OR d.workflow = ANY (CAST(:only AS text[])))
  AND d.workflow <> ALL (CAST(:excluded AS text[]))
  AND /*{block:finished_at}*/ < :cutoff;

-- name: count_candidate_events
SELECT count(*) FROM email.deliveries d JOIN email.delivery_events e USING (delivery_id)
WHERE d.status = CAST(:status AS email.delivery_status) AND d.queued_at < :cutoff
  AND d.status IN /*{terminal_statuses}*/('sent', 'failed', 'dead_letter', 'suppressed')/*{end}*/
  AND (CAST(:only AS text[]) IS NULL OR d.workflow = ANY (CAST(:only AS text[])))
  AND d.workflow <> ALL (CAST(:excluded AS text[]))
  AND /*{block:finished_at}*/ < :cutoff;

-- name: retention_policies
-- Workflows whose policy sets its own retention (and the default row '*').
SELECT workflow, keep_sent_for, keep_failed_for FROM email.workflow_policies
WHERE keep_sent_for IS NOT NULL OR keep_failed_for IS NOT NULL;

-- name: may_delete
-- Retention runs as the table owner: the only role that may delete from schema email.
SELECT has_table_privilege('email.deliveries', 'DELETE')
   AND has_table_privilege('email.delivery_events', 'DELETE')
   AND has_table_privilege('email.delivery_events', 'UPDATE');

-- name: prune_webhook_messages
-- Finished webhook messages (delivered, or given up) of deliveries that are gone or that
-- finished before :before, a batch at a time; their attempts go with them (FK cascade).
-- A message body may hold the recipient and metadata (endpoints that opt in), so it lives
-- no longer than its delivery's audit trail. Pending messages are the sender's.
WITH doomed AS (
    SELECT m.id FROM email.webhook_messages AS m
    WHERE m.state <> 'pending'
      AND (m.finished_at < :before
           OR NOT EXISTS (SELECT FROM email.deliveries AS d WHERE d.delivery_id = m.delivery_id))
    ORDER BY m.id
    LIMIT :batch_size
    FOR UPDATE SKIP LOCKED
)
DELETE FROM email.webhook_messages AS m USING doomed WHERE m.id = doomed.id;

-- name: count_webhook_messages
SELECT count(*) FROM email.webhook_messages AS m
WHERE m.state <> 'pending'
  AND (m.finished_at < :before
       OR NOT EXISTS (SELECT FROM email.deliveries AS d WHERE d.delivery_id = m.delivery_id));

-- name: prune_unmatched_outcome_events
-- Provider outcome events that never found their delivery (another system's mail on a shared
-- provider account, or a delivery pruned before its events came), received before :before,
-- a batch at a time. They hold the provider-reported recipient. Matched events go with
-- their delivery (the purge trigger, email.purge_delivery_events, since revision 0015).
WITH doomed AS (
    SELECT e.id FROM email.outcome_events AS e
    WHERE e.delivery_id IS NULL AND e.received_at < :before
    ORDER BY e.id
    LIMIT :batch_size
    FOR UPDATE SKIP LOCKED
)
DELETE FROM email.outcome_events AS e USING doomed WHERE e.id = doomed.id;

-- name: count_unmatched_outcome_events
SELECT count(*) FROM email.outcome_events AS e
WHERE e.delivery_id IS NULL AND e.received_at < :before;
