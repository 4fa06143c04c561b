CREATE POLICY delivery_attempts_email_reader_select ON email.delivery_attempts
    AS PERMISSIVE FOR SELECT TO email_reader USING (true);
