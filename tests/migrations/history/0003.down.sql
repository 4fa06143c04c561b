CREATE SCHEMA IF NOT EXISTS email;

BEGIN;

-- Running downgrade 0003 -> 0002

DROP VIEW email.pending_deliveries;

DROP VIEW email.delivery_stats_daily;

DROP VIEW email.delivery_stats_hourly;

DROP VIEW email.delivery_stats_24h;

DROP INDEX email.ix_deliveries_status_queued_at;

DROP INDEX email.ix_deliveries_recipient_queued_at_delivery_id;

DROP INDEX email.ix_deliveries_queued_at;

UPDATE email.alembic_version SET version_num='0002' WHERE email.alembic_version.version_num = '0003';

COMMIT;

