CREATE POLICY deliveries_email_writer_insert ON email.deliveries
    AS PERMISSIVE FOR INSERT TO email_writer WITH CHECK (true);
