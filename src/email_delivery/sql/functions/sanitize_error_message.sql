CREATE OR REPLACE FUNCTION email.sanitize_error_message(message text)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE PARALLEL SAFE
SET search_path = ''
AS $$
BEGIN
    -- The database's copy of email_delivery.validation.sanitize_error_message, applied to
    -- every stored message so a client in any language cannot store an address or a token.
    -- PL/pgSQL, not SQL: a SQL function with a SET clause is planned anew on every call.
    RETURN left(
        /*{sanitize_expression}*/regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(message,
            '[[:cntrl:]]', ' ', 'g'),
            '(https?://[^[:space:]?#]*)\?[^[:space:]#]*', '\1?[redacted]', 'gi'),
            '[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}', '[email]', 'g'),
            '(bearer|basic)[[:space:]]+[^[:space:]]+', '\1 [redacted]', 'gi'),
            '(password|passwd|pwd|secret|token|api[_-]?key|apikey|authorization|code|otp)([[:space:]]*[:=][[:space:]]*)[^[:space:],;]+',
            '\1\2[redacted]', 'gi'),
            '(^|[^A-Za-z0-9_+/=-])(?=[A-Za-z0-9_+/=-]*[0-9])(?=[A-Za-z0-9_+/=-]*[A-Za-z])[A-Za-z0-9_+/=-]{24,}',
            '\1[token]', 'g'),/*{end}*/
        /*{max_error_message_length}*/2000/*{end}*/);
END
$$;
