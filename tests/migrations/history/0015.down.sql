SET LOCAL lock_timeout = '5s';

SET LOCAL statement_timeout = '60s';

ALTER TABLE email.delivery_attempts ADD CONSTRAINT fk_delivery_attempts_delivery_id_deliveries FOREIGN KEY(delivery_id) REFERENCES email.deliveries (delivery_id) ON DELETE CASCADE;

ALTER TABLE email.delivery_outcomes ADD CONSTRAINT fk_delivery_outcomes_delivery_id_deliveries FOREIGN KEY(delivery_id) REFERENCES email.deliveries (delivery_id) ON DELETE CASCADE;

ALTER TABLE email.outcome_events ADD CONSTRAINT fk_outcome_events_delivery_id_deliveries FOREIGN KEY(delivery_id) REFERENCES email.deliveries (delivery_id) ON DELETE CASCADE;

DROP TRIGGER outcome_events_reference_update ON email.outcome_events;

DROP TRIGGER outcome_events_reference_insert ON email.outcome_events;

DROP TRIGGER delivery_outcomes_reference_update ON email.delivery_outcomes;

DROP TRIGGER delivery_outcomes_reference_insert ON email.delivery_outcomes;

DROP TRIGGER delivery_attempts_reference_update ON email.delivery_attempts;

DROP TRIGGER delivery_attempts_reference_insert ON email.delivery_attempts;

CREATE OR REPLACE FUNCTION email.record_provider_rollup_deletions()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- Attempts go only with their delivery (retention, or the owner's DELETE; the foreign
    -- key's cascade fires this once per statement, with every cascaded row). A deletion
    -- writes no xact_id anywhere, so the provider hours it changed are recorded for the
    -- provider rollups' next refresh (and read from the attempts until then).
    INSERT INTO email.provider_rollup_deletions (hour, provider, workflow)
    SELECT DISTINCT date_bin(interval '1 hour', d.reported_at, TIMESTAMPTZ '2000-01-01 00:00:00+00'), d.provider, d.workflow
    FROM deleted_attempts AS d
    WHERE d.provider IS NOT NULL
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;;

CREATE OR REPLACE FUNCTION email.purge_delivery_events()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    purged bigint;
BEGIN
    -- A purged delivery's events go with it (the seed's ON DELETE CASCADE), set-based, once
    -- per statement. Each event is stamped with its delivery's created_at (insert) or
    -- updated_at (change), so only the partitions of the purged deliveries' span are
    -- searched: retention's old deliveries touch old partitions only.
    DELETE FROM email.delivery_events AS e
    USING purged_rows AS d
    WHERE e.delivery_id = d.delivery_id
      AND e.created_at >= (SELECT min(p.created_at) FROM purged_rows AS p)
      AND e.created_at <= (SELECT max(greatest(p.created_at, p.updated_at)) FROM purged_rows AS p);
    -- How many, for retention's report: summed over the transaction's statements.
    GET DIAGNOSTICS purged = ROW_COUNT;
    PERFORM set_config('email.purged_events',
        (coalesce(nullif(current_setting('email.purged_events', true), ''), '0')::bigint
         + purged)::text, true);
    -- A deletion writes no audit event: the hours it changed are recorded for the rollups'
    -- next refresh (and read from the deliveries until then).
    INSERT INTO email.delivery_rollup_deletions (hour, workflow)
    SELECT DISTINCT date_bin(interval '1 hour', p.queued_at, TIMESTAMPTZ '2000-01-01 00:00:00+00'), p.workflow
    FROM purged_rows AS p
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;;

DROP FUNCTION email.check_delivery_reference();
