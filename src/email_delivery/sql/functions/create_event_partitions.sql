CREATE OR REPLACE FUNCTION email.create_event_partitions(p_ahead interval DEFAULT '3 mons'::interval, p_interval interval DEFAULT '1 mon'::interval)
RETURNS SETOF text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    lower_bound timestamptz;
    upper_bound timestamptz;
    partition text;
BEGIN
    -- Partitions of email.delivery_events from where the last one ends until now() +
    -- p_ahead, p_interval each (the schema owner runs it: `email-delivery maintain`, or
    -- email.maintain() from pg_cron). An event whose partition is missing lands in the
    -- default partition and is moved into its partition here, so none is ever lost.
    IF p_interval IS NULL OR p_interval < interval '1 day' THEN
        RAISE EXCEPTION 'a partition spans at least a day, not %', p_interval
            USING ERRCODE = '22023', COLUMN = 'interval';
    END IF;
    IF p_ahead IS NULL OR p_ahead < interval '0' THEN
        RAISE EXCEPTION 'ahead must not be negative, not %', p_ahead
            USING ERRCODE = '22023', COLUMN = 'ahead';
    END IF;
    SELECT max(p.upper_bound) INTO upper_bound FROM email.event_partitions() AS p;
    upper_bound := coalesce(upper_bound, date_trunc('month', now(), 'UTC'));
    WHILE upper_bound < now() + p_ahead LOOP
        lower_bound := upper_bound;
        upper_bound := lower_bound + p_interval;
        partition := 'delivery_events_p' || to_char(lower_bound AT TIME ZONE 'UTC', 'YYYYMMDD');
        EXECUTE format('CREATE TABLE email.%I (LIKE email.delivery_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                       partition);
        -- Events that arrived before their partition existed wait in the default one.
        EXECUTE format(
            'WITH moved AS (DELETE FROM email.delivery_events_default
                            WHERE created_at >= %L AND created_at < %L RETURNING *)
             INSERT INTO email.%I SELECT * FROM moved',
            lower_bound, upper_bound, partition);
        EXECUTE format(
            'ALTER TABLE email.delivery_events ATTACH PARTITION email.%I FOR VALUES FROM (%L) TO (%L)',
            partition, lower_bound, upper_bound);
        RETURN NEXT partition;
    END LOOP;
END
$$;
