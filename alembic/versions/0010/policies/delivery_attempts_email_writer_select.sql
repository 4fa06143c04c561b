CREATE POLICY delivery_attempts_email_writer_select ON email.delivery_attempts
    AS PERMISSIVE FOR SELECT TO email_writer USING (true);
