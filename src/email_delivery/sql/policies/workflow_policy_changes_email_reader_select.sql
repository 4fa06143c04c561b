CREATE POLICY workflow_policy_changes_email_reader_select ON email.workflow_policy_changes
    AS PERMISSIVE FOR SELECT TO email_reader USING (true);
