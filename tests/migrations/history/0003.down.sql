DROP VIEW email.pending_deliveries;

DROP VIEW email.delivery_stats_daily;

DROP VIEW email.delivery_stats_hourly;

DROP VIEW email.delivery_stats_24h;

DROP INDEX email.ix_deliveries_status_queued_at;

DROP INDEX email.ix_deliveries_recipient_queued_at_delivery_id;

DROP INDEX email.ix_deliveries_queued_at;
