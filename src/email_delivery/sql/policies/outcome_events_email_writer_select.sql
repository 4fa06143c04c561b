CREATE POLICY outcome_events_email_writer_select ON email.outcome_events
    AS PERMISSIVE FOR SELECT TO email_writer USING (true);
