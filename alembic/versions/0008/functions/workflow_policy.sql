CREATE OR REPLACE FUNCTION email.workflow_policy(p_workflow text)
RETURNS email.workflow_policies
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    policy email.workflow_policies;
BEGIN
    -- The policy a workflow runs under: its own row, else the default row '*' (which its
    -- guard trigger keeps from being deleted; a clear error if it is gone all the same).
    SELECT p.* INTO policy FROM email.workflow_policies AS p
    WHERE p.workflow IN (p_workflow, '*')
    ORDER BY p.workflow = '*'
    LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no workflow policy for % and no default row ''*''', p_workflow
            USING ERRCODE = '22023', COLUMN = 'workflow',
                  HINT = 'restore it: email-delivery policy reset ''*''';
    END IF;
    RETURN policy;
END
$$;
