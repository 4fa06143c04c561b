CREATE POLICY delivery_outcomes_email_reader_select ON email.delivery_outcomes
    AS PERMISSIVE FOR SELECT TO email_reader USING (true);
