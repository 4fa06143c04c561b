CREATE POLICY suppressions_email_reader_select ON email.suppressions
    AS PERMISSIVE FOR SELECT TO email_reader USING (true);
