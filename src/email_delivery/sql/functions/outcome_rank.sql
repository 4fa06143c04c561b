CREATE OR REPLACE FUNCTION email.outcome_rank(p_outcome text, p_permanent boolean)
RETURNS integer
LANGUAGE sql
IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    -- The precedence of outcomes (email_delivery.providers.events.OutcomeKind): a delivery's
    -- outcome is its event of highest rank and never falls. A permanent bounce outranks a
    -- transient (or undetermined) one.
    SELECT CASE p_outcome
        WHEN 'deferred' THEN 10
        WHEN 'delivered' THEN 20
        WHEN 'opened' THEN 30
        WHEN 'clicked' THEN 40
        WHEN 'bounced' THEN CASE WHEN p_permanent THEN 51 ELSE 50 END
        WHEN 'rejected' THEN 60
        WHEN 'complained' THEN 70
    END
$$;
