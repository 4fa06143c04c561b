CREATE POLICY suppressions_email_writer_select ON email.suppressions
    AS PERMISSIVE FOR SELECT TO email_writer USING (true);
