CREATE OR REPLACE FUNCTION email.record_provider_rollup_deletions()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- Attempts go only with their delivery (retention, or the owner's DELETE; the purge
    -- trigger email.purge_delivery_events deletes them once per statement, so this fires
    -- once per statement, with every purged delivery's attempts). A deletion
    -- writes no xact_id anywhere, so the provider hours it changed are recorded for the
    -- provider rollups' next refresh (and read from the attempts until then).
    INSERT INTO email.provider_rollup_deletions (hour, provider, workflow)
    SELECT DISTINCT date_bin(interval '1 hour', d.reported_at, TIMESTAMPTZ '2000-01-01 00:00:00+00'), d.provider, d.workflow
    FROM deleted_attempts AS d
    WHERE d.provider IS NOT NULL
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;
