CREATE POLICY delivery_events_email_writer_insert ON email.delivery_events
    AS PERMISSIVE FOR INSERT TO email_writer WITH CHECK (true);
