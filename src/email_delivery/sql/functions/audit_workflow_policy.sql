CREATE OR REPLACE FUNCTION email.audit_workflow_policy()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- One row of email.workflow_policy_changes per changed policy: before and after.
    INSERT INTO email.workflow_policy_changes (workflow, action, before, after)
    VALUES (coalesce(NEW.workflow, OLD.workflow), lower(TG_OP),
            CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END,
            CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END);
    RETURN NULL;
END
$$;
