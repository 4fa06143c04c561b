CREATE POLICY workflow_policies_email_reader_select ON email.workflow_policies
    AS PERMISSIVE FOR SELECT TO email_reader USING (true);
