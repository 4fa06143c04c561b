CREATE POLICY provider_rollups_email_writer_select ON email.provider_rollups
    AS PERMISSIVE FOR SELECT TO email_writer USING (true);
