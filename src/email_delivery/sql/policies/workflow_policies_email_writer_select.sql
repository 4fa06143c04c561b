CREATE POLICY workflow_policies_email_writer_select ON email.workflow_policies
    AS PERMISSIVE FOR SELECT TO email_writer USING (true);
