DROP FUNCTION email.reap_stale_deliveries(p_lease interval, p_max_attempts integer, p_limit integer);

DROP FUNCTION email.requeue_delivery(p_delivery_id text, p_reason text);

DROP FUNCTION email.mark_delivery_dead_letter(p_delivery_id text, p_reference text);

DROP FUNCTION email.mark_delivery_failed(p_delivery_id text, p_attempt integer, p_error_code text, p_error_message text, p_retryable boolean, p_max_attempts integer, p_payload jsonb);

DROP FUNCTION email.mark_delivery_sent(p_delivery_id text, p_attempt integer, p_payload jsonb);

DROP FUNCTION email.claim_delivery(p_delivery_id text, p_lease interval);

DROP FUNCTION email.enqueue_deliveries(p_delivery_ids text[], p_workflows text[], p_recipients text[], p_metadata jsonb[], p_queued_ats timestamp with time zone[]);

DROP FUNCTION email.enqueue_delivery(p_delivery_id text, p_workflow text, p_recipient text, p_metadata jsonb, p_queued_at timestamp with time zone);

DROP FUNCTION email.find_secret(value jsonb);

DROP FUNCTION email.sanitize_error_message(message text);
