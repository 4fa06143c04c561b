CREATE POLICY delivery_rollups_daily_email_reader_select ON email.delivery_rollups_daily
    AS PERMISSIVE FOR SELECT TO email_reader USING (true);
