-- Every health check with its threshold (see email.delivery_health), for Grafana and Metabase.
CREATE OR REPLACE VIEW email.delivery_health WITH (security_invoker = true) AS
SELECT * FROM email.delivery_health();
