CREATE POLICY provider_rollups_email_reader_select ON email.provider_rollups
    AS PERMISSIVE FOR SELECT TO email_reader USING (true);
