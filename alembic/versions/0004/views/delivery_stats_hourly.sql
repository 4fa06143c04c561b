CREATE OR REPLACE VIEW email.delivery_stats_hourly WITH (security_invoker = true) AS
SELECT * FROM email.delivery_stats(now() - interval '7 days', p_bucket => 'hour');
