CREATE OR REPLACE TRIGGER delivery_attempts_rollup_deletions
    AFTER DELETE ON email.delivery_attempts
    REFERENCING OLD TABLE AS deleted_attempts
    FOR EACH STATEMENT
    EXECUTE FUNCTION email.record_provider_rollup_deletions();
