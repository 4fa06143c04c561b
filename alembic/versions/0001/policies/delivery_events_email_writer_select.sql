CREATE POLICY delivery_events_email_writer_select ON email.delivery_events
    AS PERMISSIVE FOR SELECT TO email_writer USING (true);
