CREATE POLICY delivery_events_email_reader_select ON email.delivery_events
    AS PERMISSIVE FOR SELECT TO email_reader USING (true);
