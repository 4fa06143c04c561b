CREATE OR REPLACE FUNCTION email.percent_decoded(value text)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- The escapes that hide a link's structure (email_delivery.rules.PERCENT_DECODING), undone
    -- twice for double encoding, before links are looked at; most text has no '%' at all.
    IF strpos(value, '%') = 0 THEN
        RETURN value;
    END IF;
    RETURN regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(value,
            '%3a', ':', 'gi'),
            '%2f', '/', 'gi'),
            '%3f', '?', 'gi'),
            '%3d', '=', 'gi'),
            '%26', '&', 'gi'),
            '%23', '#', 'gi'),
            '%3b', ';', 'gi'),
            '%25', '%', 'gi'),
            '%3a', ':', 'gi'),
            '%2f', '/', 'gi'),
            '%3f', '?', 'gi'),
            '%3d', '=', 'gi'),
            '%26', '&', 'gi'),
            '%23', '#', 'gi'),
            '%3b', ';', 'gi'),
            '%25', '%', 'gi');
END
$$;
