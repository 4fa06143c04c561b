CREATE OR REPLACE FUNCTION email.drop_expired_event_partitions(p_before timestamp with time zone)
RETURNS TABLE(name text, rows_estimate bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    expired record;
    oldest_in_flight timestamp with time zone;
BEGIN
    -- Retention of the audit log by whole partitions: a partition whose range ends before
    -- p_before (the sent-retention cutoff) is detached and dropped, unless a delivery
    -- still in flight began in its range (its history stays). What remains of the other
    -- deliveries of that range is kept only as their row, until retention deletes it.
    -- Read once, not per partition: the in-flight deliveries are found through the
    -- (status, updated_at) index but not ordered by created_at, so each check reads them all.
    SELECT min(d.created_at) INTO oldest_in_flight
    FROM email.deliveries AS d
    WHERE d.status IN /*{active_statuses}*/('queued', 'in_progress', 'retrying')/*{end}*/;
    FOR expired IN
        SELECT p.name, p.upper_bound, p.rows_estimate FROM email.event_partitions() AS p
        WHERE NOT p.is_default AND p.upper_bound <= p_before
        ORDER BY p.upper_bound
    LOOP
        EXIT WHEN oldest_in_flight < expired.upper_bound;
        EXECUTE format('ALTER TABLE email.delivery_events DETACH PARTITION email.%I', expired.name);
        EXECUTE format('DROP TABLE email.%I', expired.name);
        name := expired.name;
        rows_estimate := expired.rows_estimate;
        RETURN NEXT;
    END LOOP;
END
$$;
