SET LOCAL lock_timeout = '5s';

SET LOCAL statement_timeout = '60s';

CREATE OR REPLACE FUNCTION email.check_delivery_reference()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    wanted bigint;
    found bigint;
    missing text;
BEGIN
    -- The children's half of the foreign keys to email.deliveries that revision 0015
    -- replaced (delivery_attempts, delivery_outcomes, outcome_events): every delivery_id
    -- written must name a delivery. As the foreign key's check does, the deliveries are
    -- locked FOR KEY SHARE (in key order): a delivery being deleted is waited for and then
    -- found gone, and one locked here cannot be deleted until this transaction ends, so
    -- the purge trigger (email.purge_delivery_events) always sees the rows written here.
    SELECT count(DISTINCT n.delivery_id) INTO wanted FROM new_rows AS n;
    IF wanted = 0 THEN
        RETURN NULL;
    END IF;
    PERFORM FROM email.deliveries AS d
    WHERE d.delivery_id IN (SELECT n.delivery_id FROM new_rows AS n)
    ORDER BY d.delivery_id
    FOR KEY SHARE OF d;
    GET DIAGNOSTICS found = ROW_COUNT;
    IF found < wanted THEN
        SELECT n.delivery_id INTO missing FROM new_rows AS n
        WHERE n.delivery_id IS NOT NULL
          AND NOT EXISTS (SELECT FROM email.deliveries AS d WHERE d.delivery_id = n.delivery_id)
        LIMIT 1;
        RAISE EXCEPTION 'insert or update on table "%" violates its reference to email.deliveries', TG_TABLE_NAME
            USING ERRCODE = 'foreign_key_violation',
                  DETAIL = format('Key (delivery_id)=(%s) is not present in table "deliveries".', missing),
                  SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME, COLUMN = 'delivery_id';
    END IF;
    RETURN NULL;
END
$$;;

DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION email.check_delivery_reference() FROM PUBLIC;
END
$$;

CREATE OR REPLACE FUNCTION email.purge_delivery_events()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
SET enable_seqscan = off
AS $$
DECLARE
    purged bigint;
    ids text[];
    oldest timestamp with time zone;
    newest timestamp with time zone;
BEGIN
    -- A purged delivery's events, attempts and outcomes go with it (the seed's ON DELETE
    -- CASCADE), set-based, once per statement: no foreign key fires a query per deleted
    -- delivery (revision 0015; email.check_delivery_reference keeps the children's side).
    -- Each event is stamped with its delivery's created_at (insert) or updated_at (change),
    -- so only the partitions of the purged deliveries' span are searched: retention's old
    -- deliveries touch old partitions only, and those it already dropped whole not at all.
    -- The ids are looked up in the (delivery_id, id) index of each partition left: a
    -- batch is a few thousand deliveries in a partition of millions of events, which the
    -- planner, blind to the transition table's contents, would scan whole (hence
    -- enable_seqscan off; and no JIT: compiling costs more than the statement).
    SELECT array_agg(p.delivery_id), min(p.created_at), max(greatest(p.created_at, p.updated_at))
    INTO ids, oldest, newest
    FROM purged_rows AS p;
    DELETE FROM email.delivery_events AS e
    WHERE e.delivery_id = ANY (ids) AND e.created_at >= oldest AND e.created_at <= newest;
    -- How many, for retention's report: summed over the transaction's statements.
    GET DIAGNOSTICS purged = ROW_COUNT;
    PERFORM set_config('email.purged_events',
        (coalesce(nullif(current_setting('email.purged_events', true), ''), '0')::bigint
         + purged)::text, true);
    DELETE FROM email.delivery_attempts AS a WHERE a.delivery_id = ANY (ids);
    DELETE FROM email.delivery_outcomes AS o WHERE o.delivery_id = ANY (ids);
    DELETE FROM email.outcome_events AS o WHERE o.delivery_id = ANY (ids);
    -- A deletion writes no audit event: the hours it changed are recorded for the rollups'
    -- next refresh (and read from the deliveries until then).
    INSERT INTO email.delivery_rollup_deletions (hour, workflow)
    SELECT DISTINCT date_bin(interval '1 hour', p.queued_at, TIMESTAMPTZ '2000-01-01 00:00:00+00'), p.workflow
    FROM purged_rows AS p
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;;

CREATE OR REPLACE FUNCTION email.record_provider_rollup_deletions()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- Attempts go only with their delivery (retention, or the owner's DELETE; the purge
    -- trigger email.purge_delivery_events deletes them once per statement, so this fires
    -- once per statement, with every purged delivery's attempts). A deletion
    -- writes no xact_id anywhere, so the provider hours it changed are recorded for the
    -- provider rollups' next refresh (and read from the attempts until then).
    INSERT INTO email.provider_rollup_deletions (hour, provider, workflow)
    SELECT DISTINCT date_bin(interval '1 hour', d.reported_at, TIMESTAMPTZ '2000-01-01 00:00:00+00'), d.provider, d.workflow
    FROM deleted_attempts AS d
    WHERE d.provider IS NOT NULL
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;;

CREATE OR REPLACE TRIGGER delivery_attempts_reference_insert
    AFTER INSERT ON email.delivery_attempts
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT
    EXECUTE FUNCTION email.check_delivery_reference();;

CREATE OR REPLACE TRIGGER delivery_attempts_reference_update
    AFTER UPDATE ON email.delivery_attempts
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT
    EXECUTE FUNCTION email.check_delivery_reference();;

CREATE OR REPLACE TRIGGER delivery_outcomes_reference_insert
    AFTER INSERT ON email.delivery_outcomes
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT
    EXECUTE FUNCTION email.check_delivery_reference();;

CREATE OR REPLACE TRIGGER delivery_outcomes_reference_update
    AFTER UPDATE ON email.delivery_outcomes
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT
    EXECUTE FUNCTION email.check_delivery_reference();;

CREATE OR REPLACE TRIGGER outcome_events_reference_insert
    AFTER INSERT ON email.outcome_events
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT
    EXECUTE FUNCTION email.check_delivery_reference();;

CREATE OR REPLACE TRIGGER outcome_events_reference_update
    AFTER UPDATE ON email.outcome_events
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT
    EXECUTE FUNCTION email.check_delivery_reference();;

ALTER TABLE email.delivery_attempts DROP CONSTRAINT fk_delivery_attempts_delivery_id_deliveries;

ALTER TABLE email.delivery_outcomes DROP CONSTRAINT fk_delivery_outcomes_delivery_id_deliveries;

ALTER TABLE email.outcome_events DROP CONSTRAINT fk_outcome_events_delivery_id_deliveries;
