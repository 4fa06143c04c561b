"""Input rules of the lifecycle API, checked in Python before anything is written.

The database rejects the same values through its CHECK constraints, and its
``email.sanitize_error_message`` redacts stored messages for clients in any language; this
module gives a Python caller a typed error naming the field instead of a constraint name.

Secrets: a metadata or payload key that names a secret is rejected with its path, e.g.
``metadata.invite.token``. Keys are split into words (``inviteToken`` -> invite, token) and
a key is a secret when a word is ``token``, ``password``, ``secret``, ``otp``, ``pin``,
``passcode``, ``credential(s)``, ``authorization``, ``bearer``, ``cookie``, ``magiclink`` or
``apikey``; ``code`` unless a harmless word precedes it (``country_code``, ``error_code``);
``key`` only after ``api``/``private``/``secret``/``access``/``signing``/``encryption``. A
last word like ``expires_at``, ``ttl``, ``id``, ``type`` describes a secret without holding
it (``token_expires_at`` is fine). A key ending in one of ``HASH_SUFFIXES`` (``code_sha256``,
``token_hash``) is allowed when its value is a hash: 32-128 hex digits, optionally after
``sha256:``. Whatever the key, a string holding a link with a token is rejected: a URL whose
query or fragment has a parameter named like a secret (``?token=``, ``&sig=``) or whose path
holds a long token (24+ letters and digits, as in ``/invite/3f9a…``).

Recipients are stored trimmed and lower-cased, the whole address: ``" Ada@Example.COM "`` is
``ada@example.com``. (Local parts are case-sensitive by the RFC, but no mail provider in use
treats them so, and support tools search by the lower-cased form.)
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from email_delivery import rules
from email_delivery.errors import InvalidInput, SecretInInput
from email_delivery.models import (
    DELIVERY_ID_PATTERN,
    MAX_ERROR_CODE_LENGTH,
    MAX_ERROR_MESSAGE_LENGTH,
    MAX_RECIPIENT_LENGTH,
    WORKFLOW_PATTERN,
)

__all__ = [
    "error_code_and_message",
    "normalize_recipient",
    "sanitize_error_message",
]


_DELIVERY_ID = re.compile(DELIVERY_ID_PATTERN)
_WORKFLOW = re.compile(WORKFLOW_PATTERN)
# The database's CHECK: no whitespace, exactly one @, something on both sides.
_RECIPIENT = re.compile(r"^[^@\s]+@[^@\s]+$")
_ERROR_CODE = re.compile(rules.ERROR_CODE_PATTERN)
_REFERENCE = re.compile(rf"^[^\s\x00-\x1f]{{1,{rules.MAX_REFERENCE_LENGTH}}}$")


def check_delivery_id(value: object, field: str = "delivery_id") -> str:
    if not isinstance(value, str) or not _DELIVERY_ID.fullmatch(value):
        raise InvalidInput(
            field, "1-200 characters of A-Z a-z 0-9 . _ : / @ + = -, starting alphanumeric"
        )
    return value


def check_workflow(value: object, field: str = "workflow") -> str:
    if not isinstance(value, str) or not _WORKFLOW.fullmatch(value):
        raise InvalidInput(field, "lower-case kebab-case, e.g. 'verification-code'")
    return value


def normalize_recipient(value: object, field: str = "recipient") -> str:
    """Trimmed and lower-cased; one ``@`` with something on both sides, no whitespace."""
    if not isinstance(value, str):
        raise InvalidInput(field, "must be a string")
    normalized = value.strip().lower()
    if len(normalized) > MAX_RECIPIENT_LENGTH or not _RECIPIENT.fullmatch(normalized):
        raise InvalidInput(field, "not an email address (local@domain, no spaces)")
    return normalized


def check_aware(value: object, field: str) -> datetime:
    if not isinstance(value, datetime):
        raise InvalidInput(field, "must be a datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(field, "naive datetime: give a timezone (e.g. UTC)")
    return value


def check_positive_interval(value: object, field: str) -> timedelta:
    if not isinstance(value, timedelta) or value <= timedelta(0):
        raise InvalidInput(field, "must be a positive timedelta")
    return value


def check_int(value: object, field: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInput(field, f"must be an integer >= {minimum}")
    if value > 2**31 - 1:
        raise InvalidInput(field, "out of range")
    return value


def check_reference(value: object, field: str = "reference") -> str:
    if not isinstance(value, str) or not _REFERENCE.fullmatch(value):
        raise InvalidInput(
            field, f"1-{rules.MAX_REFERENCE_LENGTH} printable characters without spaces"
        )
    return value


def check_reason(value: object, field: str = "reason") -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(field, "an operator's reason is required")
    return sanitize_error_message(value.strip(), limit=rules.MAX_REASON_LENGTH)


# ---------------------------------------------------------------------------------------
# Secret detection
# ---------------------------------------------------------------------------------------

_WORD_SPLIT = re.compile(r"[^a-z0-9]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_HASH_VALUE = re.compile(rules.HASH_VALUE_PATTERN)
_PLURAL = re.compile(f"({'|'.join(rules.PLURAL_STEMS)})s$")
_SECRET_SUFFIX = re.compile(f"({'|'.join(sorted(rules.SECRET_SUFFIXES))})$")
_PERCENT_DECODING = tuple(
    (re.compile(pattern, re.IGNORECASE), replacement)
    for pattern, replacement, _ in rules.PERCENT_DECODING
)
_LINK = re.compile(rules.python_regex(rules.LINK_PATTERN), re.IGNORECASE)
_LINK_LONG_TOKEN = re.compile(rules.python_regex(rules.LINK_LONG_TOKEN_PATTERN), re.IGNORECASE)


def _words(key: str) -> list[str]:
    return [w for w in _WORD_SPLIT.split(_CAMEL.sub("_", key).lower()) if w]


def _singular(word: str) -> str:
    return word[:-1] if _PLURAL.search(word) else word


def _names_secret(key: str) -> bool:
    """The key rules of ``rules`` (the database's ``email.find_secret`` applies the same)."""
    words = _words(key)
    if not words or words[-1] in rules.HARMLESS_LAST_WORDS:
        return False
    joined = "".join(words)
    if joined in rules.SECRET_WORDS or _singular(joined) in rules.SECRET_WORDS:
        return True
    for i, raw in enumerate(words):
        word = _singular(raw)
        previous = words[i - 1] if i > 0 else None
        if word == "pin" or _SECRET_SUFFIX.search(word):
            return True
        if word == "code" and previous not in rules.HARMLESS_CODE_QUALIFIERS:
            return True
        if word.endswith("code") and word[:-4] and word[:-4] not in rules.HARMLESS_CODE_QUALIFIERS:
            return True
        if word == "key" and previous in rules.SECRET_KEY_QUALIFIERS:
            return True
        if word.endswith("key") and word[:-3] in rules.SECRET_KEY_QUALIFIERS:
            return True
    return False


def percent_decoded(text: str) -> str:
    """``text`` with the escapes that hide a link's structure undone (``rules``)."""
    if "%" not in text:
        return text
    for pattern, replacement in _PERCENT_DECODING:
        text = pattern.sub(replacement, text)
    return text


def _parameters(part: str) -> list[str]:
    return [p.split("=", 1)[0].lower() for p in re.split("[&;]", part) if p]


def _link_with_secret(text: str) -> bool:
    """A link with a query or fragment parameter off the allow-list, or a long token in its
    path, percent-encoded or not."""
    text = percent_decoded(text)
    for match in _LINK.finditer(text):
        query, fragment = match.group(1) or "", match.group(2) or ""
        names = _parameters(query) + (_parameters(fragment) if "=" in fragment else [])
        if any(name not in rules.ALLOWED_LINK_PARAMETERS for name in names):
            return True
    return bool(_LINK_LONG_TOKEN.search(text))


def _hash_suffixed(key: str) -> bool:
    return key.lower().endswith(rules.HASH_SUFFIXES)


def find_secret(value: object, path: str) -> str | None:
    """The path of the first key or value carrying a secret, or ``None``."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            child = f"{path}.{key}"
            if not isinstance(key, str):
                continue
            if _hash_suffixed(key):
                if isinstance(item, str) and _HASH_VALUE.fullmatch(item):
                    continue
                return child
            if _names_secret(key):
                return child
            found = find_secret(item, child)
            if found:
                return found
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = find_secret(item, f"{path}[{index}]")
            if found:
                return found
    elif isinstance(value, str) and _link_with_secret(value):
        return path
    return None


def check_json_object(value: object, field: str, *, optional: bool) -> str | None:
    """The object as compact JSON text (what is sent to the database), or ``None``.

    Size is measured as the database does: ``octet_length(jsonb::text)``, i.e. the UTF-8
    length of PostgreSQL's rendering (``", "`` and ``": "`` separators, raw non-ASCII).
    """
    if value is None:
        if optional:
            return None
        value = {}
    if not isinstance(value, Mapping):
        raise InvalidInput(field, "must be a JSON object (a dict)")
    secret = find_secret(value, field)
    if secret:
        raise SecretInInput(
            secret,
            "looks like a secret (token, code, password, link with a token); store a hash "
            f"under a key ending in {rules.HASH_SUFFIXES[0]!r} or leave it out",
        )
    try:
        _check_finite(value, field)
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(field, f"not JSON-serialisable: {exc}") from None
    if "\\u0000" in text:
        raise InvalidInput(field, "contains a NUL character, which PostgreSQL rejects")
    rendered = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    if len(rendered.encode()) > rules.MAX_CALLER_JSON_BYTES:
        raise InvalidInput(field, f"larger than {rules.MAX_CALLER_JSON_BYTES} bytes as JSON")
    return text


def _check_finite(value: object, path: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{path} is not a finite number")
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"key {key!r} of {path} is not a string")
            _check_finite(item, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for item in value:
            _check_finite(item, path)


# ---------------------------------------------------------------------------------------
# Error messages
# ---------------------------------------------------------------------------------------

_REDACTIONS = tuple(
    (
        re.compile(rules.python_regex(pattern), re.IGNORECASE if "i" in flags else 0),
        replacement,
    )
    for pattern, replacement, flags in rules.SANITIZE_RULES
)
"""``rules.SANITIZE_RULES`` compiled for Python: the database's sanitiser runs the same."""


def sanitize_error_message(message: str, *, limit: int = MAX_ERROR_MESSAGE_LENGTH) -> str:
    """Redact addresses, credentials, long tokens and URL query strings; cap the length."""
    message = percent_decoded(message)
    for pattern, replacement in _REDACTIONS:
        message = pattern.sub(replacement, message)
    return message[:limit]


_SMTP_CODE_ATTRS = ("smtp_code", "code")


def _smtp_reply(error: BaseException) -> tuple[int, str] | None:
    """(code, text) of an smtplib or aiosmtplib exception, else ``None``."""
    module = type(error).__module__
    if not (module.startswith("smtplib") or module.startswith("aiosmtplib")):
        return None
    recipients = getattr(error, "recipients", None)
    if isinstance(recipients, Mapping) and recipients:
        first = next(iter(recipients.values()))
        if isinstance(first, tuple) and len(first) == 2 and isinstance(first[0], int):
            text = first[1].decode(errors="replace") if isinstance(first[1], bytes) else first[1]
            return first[0], str(text)
    for attr in _SMTP_CODE_ATTRS:
        code = getattr(error, attr, None)
        if isinstance(code, int) and not isinstance(code, bool) and code > 0:
            text = getattr(error, "smtp_error", None) or getattr(error, "message", None) or ""
            if isinstance(text, bytes):
                text = text.decode(errors="replace")
            return code, str(text)
    return None


def error_code_and_message(error: object, field: str = "error") -> tuple[str, str]:
    """``(code, sanitised message)`` from an exception or a ``(code, message)`` pair.

    SMTP replies become ``SMTP_<reply code>`` (``SMTP_535``); other exceptions their class
    name (``TimeoutError``).
    """
    if isinstance(error, BaseException):
        reply = _smtp_reply(error)
        if reply is not None:
            code, text = f"SMTP_{reply[0]}", reply[1] or str(error)
        else:
            code, text = type(error).__name__, str(error) or type(error).__name__
        return code[:MAX_ERROR_CODE_LENGTH], sanitize_error_message(text)
    if (
        isinstance(error, tuple)
        and len(error) == 2
        and isinstance(error[0], str)
        and isinstance(error[1], str)
    ):
        code, text = error
        if len(code) > MAX_ERROR_CODE_LENGTH or not _ERROR_CODE.fullmatch(code):
            raise InvalidInput(
                f"{field}.code", f"1-{MAX_ERROR_CODE_LENGTH} characters of A-Z a-z 0-9 _ . : -"
            )
        return code, sanitize_error_message(text)
    raise InvalidInput(field, "an exception or a (code, message) pair of strings")


def smtp_retryable(error: BaseException) -> bool:
    """The usual retry decision: SMTP 4xx and network trouble are transient, 5xx permanent."""
    reply = _smtp_reply(error)
    if reply is not None:
        return 400 <= reply[0] < 500
    return isinstance(error, OSError | TimeoutError)


def next_status_after_failure(
    *, attempts: int, retryable: bool, max_attempts: int, requeued_at_attempt: int = 0
) -> str:
    """What ``mark_failed`` moves an ``in_progress`` delivery to (the SQL does the same)."""
    if not retryable:
        return "failed"
    if attempts - requeued_at_attempt >= max_attempts:
        return "dead_letter"
    return "retrying"


def json_object_or_none(value: Any) -> dict[str, Any] | None:
    """A jsonb value as the driver returned it (text without codecs, dict with them)."""
    if value is None or isinstance(value, dict):
        return value
    loaded: dict[str, Any] = json.loads(value)
    return loaded
