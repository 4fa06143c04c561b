-- The statement of email_delivery.health (see functions/delivery_health.sql).

-- name: health
SELECT * FROM email.delivery_health(
    CAST(:queued_age AS interval), CAST(:retrying_age AS interval),
    CAST(:expired_claim_age AS interval), CAST(:dead_letters_per_hour AS integer),
    CAST(:failure_rate AS double precision));
