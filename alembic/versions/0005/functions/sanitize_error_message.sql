CREATE OR REPLACE FUNCTION email.sanitize_error_message(message text)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- The redactions of email_delivery.rules.SANITIZE_RULES, in order, after the link
    -- escapes are undone: Python's validation.sanitize_error_message runs the same. The
    -- guard trigger applies it to every stored message, whoever writes it.
    -- PL/pgSQL, not SQL: a SQL function with a SET clause is planned anew on every call.
    message := email.percent_decoded(message);
    RETURN left(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(message,
            '[[:cntrl:]]', ' ', 'g'),
            '([a-z][a-z0-9+.-]*://)[^/[:space:]:@]+:[^/[:space:]@]+@', '\1[redacted]@', 'gi'),
            '((?:https?:)?//[^[:space:]?#]*)\?[^[:space:]#]*', '\1?[redacted]', 'gi'),
            '((?:https?:)?//[^[:space:]#]*)#[^[:space:]]*=[^[:space:]]*', '\1#[redacted]', 'gi'),
            '("[^"]*"|[^][[:space:]@<>(),;:"'']+)@(\[[0-9A-Fa-f.:]+\]|[^][[:space:]@<>(),;:"''/.]+(\.[^][[:space:]@<>(),;:"''/.]+)+)',
            '[email]', 'g'),
            '((set-)?cookie[[:space:]]*:[[:space:]]*)[^[:space:];,]+', '\1[redacted]', 'gi'),
            '(bearer|basic)[[:space:]]+[^[:space:]]+', '\1 [redacted]', 'gi'),
            '(^|[^A-Za-z0-9_-])(?!(?:area|bar|bounce|campaign|color|country|currency|de|discount|en|error|geo|hash|http|lang|language|locale|op|plan|post|postal|product|promo|qr|reason|region|reply|response|short|smtp|source|status|template|uni|workflow|zip)[_ -]?codes?[^A-Za-z0-9_-])([A-Za-z0-9_-]*(?:password|passwd|passphrase|pwd|secret|token|api[_-]?key|authorization|otp|pin|passcode|cookie|jwt|codes?))(["'']?[[:space:]]*[:=][[:space:]]*["'']?)[^"''[:space:],;}]+',
            '\1\2\3[redacted]', 'gi'),
            '(^|[^A-Za-z0-9_-])((?:pin|otp|passcode|code)[[:space:]]+)[0-9]{4,12}',
            '\1\2[redacted]', 'gi'),
            '(^|[^A-Za-z0-9_+/=-])(?=[A-Za-z0-9_+/=-]*[0-9])(?=[A-Za-z0-9_+/=-]*[A-Za-z])[A-Za-z0-9_+/=-]{24,}',
            '\1[token]', 'g'),
        2000);
END
$$;
