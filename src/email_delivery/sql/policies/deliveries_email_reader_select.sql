CREATE POLICY deliveries_email_reader_select ON email.deliveries
    AS PERMISSIVE FOR SELECT TO email_reader USING (true);
