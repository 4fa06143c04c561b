CREATE POLICY outcome_events_email_reader_select ON email.outcome_events
    AS PERMISSIVE FOR SELECT TO email_reader USING (true);
