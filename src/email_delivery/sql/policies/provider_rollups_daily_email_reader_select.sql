CREATE POLICY provider_rollups_daily_email_reader_select ON email.provider_rollups_daily
    AS PERMISSIVE FOR SELECT TO email_reader USING (true);
