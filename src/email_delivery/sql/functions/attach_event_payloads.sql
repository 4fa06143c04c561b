CREATE OR REPLACE FUNCTION email.attach_event_payloads(payloads jsonb)
RETURNS void
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    -- Hand the audit trigger payloads for the events of the next statement on
    -- email.deliveries in this transaction: a JSON object of payloads by delivery_id (NULL
    -- clears). Stamped with the transaction id, so a value can never reach another
    -- transaction's events: not a later statement of a pooled connection, not a session-level
    -- SET of email.event_payload.
    SELECT set_config(/*{event_payload_setting}*/'email.event_payload'/*{end}*/,
        CASE WHEN payloads IS NULL THEN '' ELSE pg_current_xact_id()::text || ':' || payloads::text END,
        true)
$$;
