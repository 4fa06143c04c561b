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
$$;
