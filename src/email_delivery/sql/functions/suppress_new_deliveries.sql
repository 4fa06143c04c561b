CREATE OR REPLACE FUNCTION email.suppress_new_deliveries(p_delivery_ids text[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    hits jsonb;
BEGIN
    -- The owner's internal step of the enqueue functions (revision 0012), for the deliveries
    -- they just created: one whose recipient is on the suppression list (an entry not
    -- expired) ends at once in 'suppressed', unless its workflow's policy sends despite
    -- the entry's reason (send_despite_suppression: a password reset may still go to an
    -- address suppressed for a hard bounce, or the user is locked out). The caller learns
    -- why from last_error_code (SUPPRESSED_HARD_BOUNCE, SUPPRESSED_COMPLAINT,
    -- SUPPRESSED_MANUAL); the audit event carries the entry.
    SELECT jsonb_object_agg(d.delivery_id, jsonb_build_object('suppression', jsonb_build_object(
               'reason', s.reason, 'since', s.created_at, 'expires_at', s.expires_at,
               'source_delivery_id', s.source_delivery_id)))
    INTO hits
    FROM email.deliveries AS d
    JOIN email.suppressions AS s ON s.address = d.recipient
    WHERE d.delivery_id = ANY (p_delivery_ids) AND d.status = 'queued' AND d.attempts = 0
      AND (s.expires_at IS NULL OR s.expires_at > now())
      AND NOT s.reason = ANY ((email.workflow_policy(d.workflow)).send_despite_suppression);
    IF hits IS NULL THEN
        RETURN;
    END IF;
    PERFORM email.attach_event_payloads(hits);
    UPDATE email.deliveries AS d
    SET status = 'suppressed',
        last_error_code = 'SUPPRESSED_' || upper(hits->d.delivery_id->'suppression'->>'reason'),
        last_error_message = format('the recipient is on the suppression list (%s) since %s',
            hits->d.delivery_id->'suppression'->>'reason',
            hits->d.delivery_id->'suppression'->>'since')
    WHERE d.delivery_id IN (SELECT jsonb_object_keys(hits));
END
$$;
