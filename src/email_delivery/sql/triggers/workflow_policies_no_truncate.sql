CREATE OR REPLACE TRIGGER workflow_policies_no_truncate
    BEFORE TRUNCATE ON email.workflow_policies
    FOR EACH STATEMENT
    EXECUTE FUNCTION email.guard_workflow_policy();
