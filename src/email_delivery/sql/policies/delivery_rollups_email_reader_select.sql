CREATE POLICY delivery_rollups_email_reader_select ON email.delivery_rollups
    AS PERMISSIVE FOR SELECT TO email_reader USING (true);
