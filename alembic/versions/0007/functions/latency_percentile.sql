CREATE OR REPLACE FUNCTION email.latency_percentile(p_buckets smallint[], p_counts bigint[], p_fraction double precision)
RETURNS double precision
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    total bigint := 0;
    rank double precision;
    low bigint;
    seen bigint := 0;
    at_low double precision;
    at_high double precision;
    bucket smallint;
BEGIN
    -- percentile_cont over a latency histogram (buckets ascending, with their counts): the
    -- values at ranks floor(r) and floor(r) + 1, r = fraction * (n - 1), each read as its
    -- bucket's estimate, interpolated as percentile_cont interpolates. Each estimate is
    -- within rules.LATENCY_RELATIVE_ERROR of its value, so the result is too.
    SELECT coalesce(sum(c), 0) INTO total FROM unnest(p_counts) AS c;
    IF total = 0 THEN
        RETURN NULL;
    END IF;
    rank := p_fraction * (total - 1);
    low := floor(rank)::bigint;
    FOR i IN 1 .. cardinality(p_buckets) LOOP
        bucket := p_buckets[i];
        seen := seen + p_counts[i];
        IF at_low IS NULL AND low < seen THEN
            at_low := CASE WHEN bucket < -60 THEN 0::double precision WHEN bucket > 120 THEN 1e6::double precision ELSE 2 * power(power(10::double precision, 1.0::double precision / 20), bucket) / (power(10::double precision, 1.0::double precision / 20) + 1) END;
        END IF;
        IF low + 1 < seen THEN
            at_high := CASE WHEN bucket < -60 THEN 0::double precision WHEN bucket > 120 THEN 1e6::double precision ELSE 2 * power(power(10::double precision, 1.0::double precision / 20), bucket) / (power(10::double precision, 1.0::double precision / 20) + 1) END;
            EXIT;
        END IF;
    END LOOP;
    RETURN at_low + (rank - low) * (coalesce(at_high, at_low) - at_low);
END
$$;
