CREATE OR REPLACE VIEW email.delivery_health WITH (security_invoker = true) AS
SELECT * FROM email.delivery_health();
