SET LOCAL lock_timeout = '5s';

SET LOCAL statement_timeout = '60s';

CREATE OR REPLACE FUNCTION email.check_truncated_deliveries()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    child text;
BEGIN
    -- TRUNCATE fires no DELETE trigger, so email.purge_delivery_events cannot follow it:
    -- the foreign keys revision 0015 dropped refused "TRUNCATE email.deliveries" unless
    -- their tables were truncated with it (or CASCADE). This keeps that refusal. An AFTER
    -- TRUNCATE trigger fires once every table of the statement is empty, so any child row
    -- still naming a delivery now names none. Unmatched outcome events (delivery_id NULL)
    -- may stay. CASCADE no longer reaches the children: name them in the statement.
    IF EXISTS (SELECT FROM email.delivery_attempts) THEN
        child := 'delivery_attempts';
    ELSIF EXISTS (SELECT FROM email.delivery_outcomes) THEN
        child := 'delivery_outcomes';
    ELSIF EXISTS (SELECT FROM email.outcome_events AS e WHERE e.delivery_id IS NOT NULL) THEN
        child := 'outcome_events';
    END IF;
    IF child IS NOT NULL THEN
        RAISE EXCEPTION 'cannot truncate table "deliveries": table "%" names its deliveries', child
            USING ERRCODE = 'foreign_key_violation',
                  HINT = format('Truncate table "email.%s" at the same time (CASCADE does not reach it since revision 0015).', child),
                  SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME;
    END IF;
    RETURN NULL;
END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.check_truncated_deliveries() FROM PUBLIC;
END
$$;

CREATE OR REPLACE TRIGGER deliveries_reference_truncate
    AFTER TRUNCATE ON email.deliveries
    FOR EACH STATEMENT
    EXECUTE FUNCTION email.check_truncated_deliveries();;
