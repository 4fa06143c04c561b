-- Provider events that matched no delivery yet (their message id or echoed delivery id has
-- not arrived): kept, matched by mark_sent or email.match_outcome_events, reported here.
CREATE OR REPLACE VIEW email.unmatched_outcome_events WITH (security_invoker = true) AS
SELECT id, provider, event_id, kind, permanent, provider_message_id, echoed_delivery_id,
       occurred_at, received_at
FROM email.outcome_events
WHERE delivery_id IS NULL;
