CREATE POLICY provider_rollup_deletions_email_reader_select ON email.provider_rollup_deletions
    AS PERMISSIVE FOR SELECT TO email_reader USING (true);
