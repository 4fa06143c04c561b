CREATE POLICY deliveries_email_writer_update ON email.deliveries
    AS PERMISSIVE FOR UPDATE TO email_writer USING (true) WITH CHECK (true);
