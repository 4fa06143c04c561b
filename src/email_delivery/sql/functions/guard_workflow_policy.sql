CREATE OR REPLACE FUNCTION email.guard_workflow_policy()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- The default row '*' is every other workflow's policy: it may change, never go. Every
    -- change says who made it and when (the audit trigger keeps the history).
    IF TG_OP = 'TRUNCATE' THEN
        RAISE EXCEPTION 'the default policy ''*'' may be changed, not deleted: delete the '
                        'workflows'' own rows instead of truncating'
            USING ERRCODE = '22023', COLUMN = 'workflow';
    END IF;
    IF TG_OP = 'DELETE' THEN
        IF OLD.workflow = '*' THEN
            RAISE EXCEPTION 'the default policy ''*'' may be changed, not deleted'
                USING ERRCODE = '22023', COLUMN = 'workflow';
        END IF;
        RETURN OLD;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.workflow IS DISTINCT FROM OLD.workflow THEN
        RAISE EXCEPTION 'a policy''s workflow never changes; insert a new row instead'
            USING ERRCODE = '22023', COLUMN = 'workflow';
    END IF;
    NEW.updated_at := now();
    NEW.updated_by := session_user;
    RETURN NEW;
END
$$;
