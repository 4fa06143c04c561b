CREATE OR REPLACE FUNCTION email.event_partitions()
RETURNS TABLE(name text, lower_bound timestamp with time zone, upper_bound timestamp with time zone, is_default boolean, rows_estimate bigint)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- The partitions of email.delivery_events with their range (lower NULL: from the
    -- beginning; both NULL: the default partition), oldest first.
    SELECT c.relname::text,
           (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \(''([^'']+)''\)'))[1]::timestamptz,
           (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz,
           pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT',
           greatest(c.reltuples, 0)::bigint
    FROM pg_inherits AS i
    JOIN pg_class AS c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'email.delivery_events'::regclass
    ORDER BY 4, 3 NULLS FIRST
$$;
