CREATE POLICY delivery_outcomes_email_writer_select ON email.delivery_outcomes
    AS PERMISSIVE FOR SELECT TO email_writer USING (true);
