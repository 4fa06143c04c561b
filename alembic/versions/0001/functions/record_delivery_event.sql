CREATE OR REPLACE FUNCTION email.record_delivery_event()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    attached text := current_setting('email.event_payload', true);
BEGIN
    IF attached <> '' THEN
        -- A payload belongs to one event: consume it so the next change does not reuse it.
        PERFORM set_config('email.event_payload', '', true);
    END IF;
    INSERT INTO email.delivery_events
        (delivery_id, status, attempt, error_code, error_message, payload)
    VALUES
        (NEW.delivery_id, NEW.status, NEW.attempts, NEW.last_error_code,
         NEW.last_error_message, nullif(attached, '')::jsonb);
    RETURN NULL;
END
$$;
