-- The statements of maintenance (email_delivery.maintenance), run as the table owner through
-- SQLAlchemy (named :parameters).

-- name: maintain
-- Partitions ahead, then the rollups (see functions/maintain.sql).
SELECT * FROM email.maintain(CAST(CAST(:ahead AS text) AS interval),
                            CAST(CAST(:partition_interval AS text) AS interval));

-- name: state
-- What the warnings are about: how far the audit log's partitions reach, events in the
-- default partition, how far the rollups reach (and the database's clock).
SELECT (SELECT max(p.upper_bound) FROM email.event_partitions() AS p) AS covered_until,
       (SELECT count(*) FROM email.delivery_events_default) AS default_partition_rows,
       (SELECT nullif(s.rolled_until, '-infinity') FROM email.delivery_rollup_state AS s)
           AS rolled_until,
       now() AS now;
