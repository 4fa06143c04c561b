CREATE POLICY provider_rollup_deletions_email_writer_select ON email.provider_rollup_deletions
    AS PERMISSIVE FOR SELECT TO email_writer USING (true);
