CREATE OR REPLACE FUNCTION email.find_secret(value jsonb)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE PARALLEL SAFE
SET search_path = ''
AS $$
BEGIN
    -- The database's copy of email_delivery.validation.find_secret (the key rules and the
    -- link-with-a-token rule): the first key holding a secret, or NULL.
    -- Most objects mention none of the words the rules look for (even across separators,
    -- as in "pass-word"): skip the walk.
    IF value IS NULL
       OR regexp_replace(value::text, '[^A-Za-z0-9]+', '', 'g') !~* 'apikey|authorization|bearer|code|cookie|credential|credentials|digest|hash|hmac|http|key|magiclink|otp|passcode|passwd|password|pin|pwd|secret|sha256|sha512|token' THEN
        RETURN NULL;
    END IF;
    -- Each key as _word_word_ (camelCase split, lower-cased), tested with regular
    -- expressions equivalent to the word rules.
    RETURN (
    SELECT k.key FROM (
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
        ELSE replace(k.n, '_', '') IN ('apikey', 'authorization', 'bearer', 'cookie', 'credential', 'credentials', 'magiclink', 'otp', 'passcode', 'passwd', 'password', 'pin', 'pwd', 'secret', 'token')
            OR k.n ~ '_(apikey|authorization|bearer|cookie|credential|credentials|magiclink|otp|passcode|passwd|password|pin|pwd|secret|token)_'
            OR k.n ~ '^_code_'
            OR k.n ~ '_(?!(area|bounce|campaign|color|country|currency|discount|error|http|lang|language|locale|plan|postal|product|promo|reason|region|reply|response|smtp|status|template|workflow|zip)_)[a-z0-9]+_code_'
            OR k.n ~ '_(access|api|encryption|private|secret|signing)_key_'
    END
    UNION ALL
    SELECT 'a link with a token'
    FROM jsonb_path_query(value, 'strict $.** ? (@.type() == "string")') AS s
    WHERE s #>> '{}' ~* 'https?://[^\s]*[?&#;]([a-z0-9_]*_)?(token|code|otp|key|secret|password|sig|signature|auth|jwt)[a-z0-9_]*='
       OR s #>> '{}' ~* 'https?://[^\s?]*(?=[A-Za-z0-9_-]*[0-9])(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z0-9_-]{24,}'
    LIMIT 1);
END
$$;
