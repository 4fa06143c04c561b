CREATE OR REPLACE FUNCTION email.find_secret(value jsonb)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- The rules of email_delivery.rules, as Python's validation.find_secret applies them: the
    -- first key holding a secret, or 'a link with a secret', or NULL.
    -- Most objects hold neither a word the key rules look for (even across separators, as
    -- in "pass-word") nor a link ("//", or an escaped one): skip the walk.
    IF value IS NULL
       OR (value::text !~* '//|%2f|%25'
           AND regexp_replace(value::text, '[^A-Za-z0-9]+', '', 'g')
               !~* 'apikey|authorization|bearer|code|cookie|credential|credentials|digest|hash|hmac|http|jwt|key|magiclink|otp|passcode|passphrase|passwd|password|pin|pwd|secret|sha256|sha512|token') THEN
        RETURN NULL;
    END IF;
    RETURN (
    SELECT k.key FROM (
        -- Each key as _word_word_ (camelCase split, lower-cased).
        SELECT kv->>'key' AS key, kv->'value' AS val,
               '_' || btrim(regexp_replace(
                   lower(regexp_replace(kv->>'key', '([a-z0-9])([A-Z])', '\1_\2', 'g')),
                   '[^a-z0-9]+', '_', 'g'), '_') || '_' AS n
        FROM jsonb_path_query(value, 'strict $.** ? (@.type() == "object").keyvalue()') AS kv
    ) AS k
    WHERE CASE
        WHEN lower(k.key) ~ '(_sha256|_sha512|_hash|_hmac|_digest)$' THEN
            NOT (jsonb_typeof(k.val) = 'string'
                 AND k.val #>> '{}' ~ '^((sha256|sha512|sha1|hmac-sha256):)?[0-9a-fA-F]{32,128}$')
        WHEN k.n = '__' OR k.n ~ '_(at|count|expiration|expires|expiry|id|length|sent|ttl|type)_$' THEN false
        ELSE replace(k.n, '_', '') IN ('apikey', 'authorization', 'bearer', 'cookie', 'credential', 'credentials', 'jwt', 'magiclink', 'otp', 'passcode', 'passphrase', 'passwd', 'password', 'pin', 'pwd', 'secret', 'token')
            OR regexp_replace(replace(k.n, '_', ''), 's$', '') IN ('apikey', 'authorization', 'bearer', 'cookie', 'credential', 'credentials', 'jwt', 'magiclink', 'otp', 'passcode', 'passphrase', 'passwd', 'password', 'pin', 'pwd', 'secret', 'token')
            OR k.n ~ '_(pins?|[a-z0-9]*(apikey|authorization|bearer|cookie|credential|credentials|jwt|magiclink|otp|passcode|passphrase|passwd|password|pwd|secret|token)s?)_'
            OR k.n ~ '^_codes?_'
            OR k.n ~ '_(?!(?:area|bar|bounce|campaign|color|country|currency|de|discount|en|error|geo|hash|http|lang|language|locale|op|plan|post|postal|product|promo|qr|reason|region|reply|response|short|smtp|source|status|template|uni|workflow|zip)_)[a-z0-9]+_codes?_'
            OR k.n ~ '_(?!(?:area|bar|bounce|campaign|color|country|currency|de|discount|en|error|geo|hash|http|lang|language|locale|op|plan|post|postal|product|promo|qr|reason|region|reply|response|short|smtp|source|status|template|uni|workflow|zip)codes?_)[a-z0-9]+codes?_'
            OR k.n ~ '_(?:access|api|encryption|private|secret|signing)_?keys?_'
    END
    UNION ALL
    -- A link whose query (or fragment) has a parameter off the allow-list, or whose path
    -- holds a long token, percent-encoded or not.
    SELECT 'a link with a secret'
    FROM jsonb_path_query(value, 'strict $.** ? (@.type() == "string")') AS s
    CROSS JOIN LATERAL email.percent_decoded(s #>> '{}') AS t(text)
    WHERE t.text ~* '(?:https?:)?//[^[:space:]?#]*(?=[A-Za-z0-9_-]*[0-9])(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z0-9_-]{24,}'
       OR EXISTS (
           SELECT FROM regexp_matches(t.text, '(?:https?:)?//[^[:space:]/?#]+[^[:space:]?#]*(?:\?([^[:space:]#]*))?(?:#([^[:space:]]*))?', 'gi') AS m
           CROSS JOIN LATERAL regexp_split_to_table(
               coalesce(m[1], '') || CASE WHEN m[2] LIKE '%=%' THEN '&' || m[2] ELSE '' END,
               '[&;]') AS p(part)
           WHERE p.part <> ''
             AND lower(split_part(p.part, '=', 1)) NOT IN ('hl', 'lang', 'list', 'locale', 'utm_campaign', 'utm_content', 'utm_id', 'utm_medium', 'utm_source', 'utm_term'))
    LIMIT 1);
END
$$;
