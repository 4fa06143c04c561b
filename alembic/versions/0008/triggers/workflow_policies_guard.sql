CREATE OR REPLACE TRIGGER workflow_policies_guard
    BEFORE INSERT OR UPDATE OR DELETE ON email.workflow_policies
    FOR EACH ROW
    EXECUTE FUNCTION email.guard_workflow_policy();
