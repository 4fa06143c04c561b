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
       OR regexp_replace(value::text, '[^A-Za-z0-9]+', '', 'g') !~* /*{secret_prefilter}*/'apikey|authorization|bearer|code|cookie|credential|credentials|digest|hash|hmac|http|key|magiclink|otp|passcode|passwd|password|pin|pwd|secret|sha256|sha512|token'/*{end}*/ THEN
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
        WHEN lower(k.key) ~ /*{hash_suffix_pattern}*/'(_sha256|_sha512|_hash|_hmac|_digest)$'/*{end}*/ THEN
            NOT (jsonb_typeof(k.val) = 'string'
                 AND k.val #>> '{}' ~ /*{hash_value_pattern}*/'^((sha256|sha512|sha1|hmac-sha256):)?[0-9a-fA-F]{32,128}$'/*{end}*/)
        WHEN k.n = '__' OR k.n ~ /*{harmless_last_word_pattern}*/'_(at|count|expiration|expires|expiry|id|length|sent|ttl|type)_$'/*{end}*/ THEN false
        ELSE replace(k.n, '_', '') IN /*{secret_words}*/('apikey', 'authorization', 'bearer', 'cookie', 'credential', 'credentials', 'magiclink', 'otp', 'passcode', 'passwd', 'password', 'pin', 'pwd', 'secret', 'token')/*{end}*/
            OR k.n ~ /*{secret_word_pattern}*/'_(apikey|authorization|bearer|cookie|credential|credentials|magiclink|otp|passcode|passwd|password|pin|pwd|secret|token)_'/*{end}*/
            OR k.n ~ '^_code_'
            OR k.n ~ /*{secret_code_pattern}*/'_(?!(area|bounce|campaign|color|country|currency|discount|error|http|lang|language|locale|plan|postal|product|promo|reason|region|reply|response|smtp|status|template|workflow|zip)_)[a-z0-9]+_code_'/*{end}*/
            OR k.n ~ /*{secret_key_pattern}*/'_(access|api|encryption|private|secret|signing)_key_'/*{end}*/
    END
    UNION ALL
    SELECT 'a link with a token'
    FROM jsonb_path_query(value, 'strict $.** ? (@.type() == "string")') AS s
    WHERE s #>> '{}' ~* /*{link_secret_parameter_pattern}*/'https?://[^\s]*[?&#;]([a-z0-9_]*_)?(token|code|otp|key|secret|password|sig|signature|auth|jwt)[a-z0-9_]*='/*{end}*/
       OR s #>> '{}' ~* /*{link_long_token_pattern}*/'https?://[^\s?]*(?=[A-Za-z0-9_-]*[0-9])(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z0-9_-]{24,}'/*{end}*/
    LIMIT 1);
END
$$;
