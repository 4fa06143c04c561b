CREATE OR REPLACE TRIGGER workflow_policies_audit
    AFTER INSERT OR UPDATE OR DELETE ON email.workflow_policies
    FOR EACH ROW
    EXECUTE FUNCTION email.audit_workflow_policy();
