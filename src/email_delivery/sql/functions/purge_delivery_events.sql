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
    -- The children are found with this statement's snapshot. In READ COMMITTED that sees
    -- every child committed before the delivery's row lock was granted (a writer holds KEY
    -- SHARE on its delivery, email.check_delivery_reference, so the delete waited for it).
    -- A REPEATABLE READ or SERIALIZABLE transaction keeps an older snapshot and would
    -- leave such a child behind (where the foreign key raised a serialization error), so
    -- deliveries are deleted in READ COMMITTED only, as retention does.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'deliveries can be deleted only in a READ COMMITTED transaction, not %',
                        upper(current_setting('transaction_isolation'))
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Delete them in a READ COMMITTED transaction (retention does).',
                  SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME;
    END IF;
    SELECT array_agg(p.delivery_id), min(p.created_at), max(greatest(p.created_at, p.updated_at))
    INTO ids, oldest, newest
    FROM purged_rows AS p;
    DELETE FROM email.delivery_events AS e
    WHERE e.delivery_id = ANY (ids) AND e.created_at >= oldest AND e.created_at <= newest;
    -- How many, for retention's report: summed over the transaction's statements.
    GET DIAGNOSTICS purged = ROW_COUNT;
    PERFORM set_config(/*{purged_events_setting}*/'email.purged_events'/*{end}*/,
        (coalesce(nullif(current_setting(/*{purged_events_setting}*/'email.purged_events'/*{end}*/, true), ''), '0')::bigint
         + purged)::text, true);
    DELETE FROM email.delivery_attempts AS a WHERE a.delivery_id = ANY (ids);
    DELETE FROM email.delivery_outcomes AS o WHERE o.delivery_id = ANY (ids);
    DELETE FROM email.outcome_events AS o WHERE o.delivery_id = ANY (ids);
    -- A deletion writes no audit event: the hours it changed are recorded for the rollups'
    -- next refresh (and read from the deliveries until then).
    INSERT INTO email.delivery_rollup_deletions (hour, workflow)
    SELECT DISTINCT date_bin(/*{rollup_hour}*/interval '1 hour'/*{end}*/, p.queued_at, /*{stats_bucket_origin}*/TIMESTAMPTZ '2000-01-01 00:00:00+00'/*{end}*/), p.workflow
    FROM purged_rows AS p
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;
