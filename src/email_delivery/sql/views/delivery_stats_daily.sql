-- Per workflow and UTC day, the last 90 days (see email.delivery_stats).
CREATE OR REPLACE VIEW email.delivery_stats_daily WITH (security_invoker = true) AS
SELECT * FROM email.delivery_stats(now() - interval '90 days', p_bucket => 'day');
