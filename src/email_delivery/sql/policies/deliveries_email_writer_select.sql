CREATE POLICY deliveries_email_writer_select ON email.deliveries
    AS PERMISSIVE FOR SELECT TO email_writer USING (true);
