"""The one home of every rule both Python and SQL need.

Python uses these values directly (``validation``, ``tracker``, ``queries``, ``retention``);
the SQL files under ``email_delivery/sql`` receive them through the named placeholders of
``PLACEHOLDERS``, rendered here. No rule is written twice: a test fails when a SQL file
carries a stale rendering (``python -m email_delivery.sql --write`` refreshes them), uses an
unknown placeholder, or when a placeholder is used nowhere.

Regular expressions shared by both sides are written once, in PostgreSQL's dialect (POSIX
classes such as ``[[:space:]]``); ``python_regex`` turns that dialect into Python's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import MappingProxyType

from sqlalchemy.dialects import postgresql

from email_delivery.errors import AttemptsDecreased, IllegalTransition, SecretInInput
from email_delivery.models import MAX_ERROR_MESSAGE_LENGTH, MAX_JSON_BYTES, Delivery
from email_delivery.models import DeliveryStatus as S

# ---------------------------------------------------------------------------------------
# Statuses and transitions
# ---------------------------------------------------------------------------------------

TRANSITIONS: MappingProxyType[S, frozenset[S]] = MappingProxyType(
    {
        S.QUEUED: frozenset({S.IN_PROGRESS, S.SENT, S.FAILED, S.DEAD_LETTER}),
        S.IN_PROGRESS: frozenset({S.SENT, S.RETRYING, S.FAILED, S.DEAD_LETTER}),
        S.RETRYING: frozenset({S.IN_PROGRESS, S.SENT, S.FAILED, S.DEAD_LETTER}),
        # A requeue by an operator, or a late success report: nothing else.
        S.FAILED: frozenset({S.QUEUED, S.SENT}),
        S.DEAD_LETTER: frozenset({S.QUEUED, S.SENT}),
        S.SENT: frozenset(),
    }
)
"""Every move between two different statuses that is allowed (staying is always allowed:
a lease takeover, a metadata change). The database's ``email.is_allowed_transition`` is
rendered from it."""

ACTIVE_STATUSES = (S.QUEUED, S.IN_PROGRESS, S.RETRYING)
"""Not finished: the worker still owes these an attempt or a report."""
TERMINAL_STATUSES = (S.SENT, S.FAILED, S.DEAD_LETTER)
"""Statuses the worker never leaves on its own (``failed``/``dead_letter`` only by requeue)."""
FAILED_STATUSES = (S.FAILED, S.DEAD_LETTER)
"""Finished without being sent; an operator's requeue moves these back to ``queued``."""
CLAIMABLE_STATUSES = (S.QUEUED, S.RETRYING)
"""A claim starts an attempt from these (or from an ``in_progress`` whose lease expired)."""


def is_allowed(old: S, new: S) -> bool:
    """Whether a delivery may move from ``old`` to ``new``."""
    return old == new or new in TRANSITIONS[old]


# ---------------------------------------------------------------------------------------
# Names the lifecycle functions and the tracker share
# ---------------------------------------------------------------------------------------

EVENT_PAYLOAD_SETTING = "email.event_payload"
"""Transaction-local setting whose JSON object becomes the payload of the next audit event."""
DEAD_LETTER_REFERENCE_KEY = "dead_letter_reference"
"""Metadata key holding the dead-letter topic's message id (``mark_delivery_dead_letter``)."""
REQUEUED_AT_ATTEMPT_KEY = "requeued_at_attempt"
"""Metadata key set by a requeue: ``attempts`` then; the retry budget counts from there."""
RESERVED_METADATA_KEYS = (DEAD_LETTER_REFERENCE_KEY, REQUEUED_AT_ATTEMPT_KEY)
"""Metadata keys only the lifecycle functions write; a scrub keeps them."""
LEASE_EXPIRED_CODE = "LEASE_EXPIRED"
"""``last_error_code`` written when a reaper takes back an expired claim."""

DELIVERY_ROW_COLUMNS = tuple(column.name for column in Delivery.__table__.columns)
"""The delivery columns every lifecycle function returns first, in table order."""

# ---------------------------------------------------------------------------------------
# Sizes
# ---------------------------------------------------------------------------------------

MAX_REFERENCE_LENGTH = 200
LIFECYCLE_JSON_HEADROOM = 512
"""Bytes of the 16 KiB a caller's object may not use: the lifecycle functions add their own
keys (a dead-letter reference of up to 200 characters, the reported attempt), and what the
API accepted must never be rejected by the table's CHECK after an email went out."""
MAX_CALLER_JSON_BYTES = MAX_JSON_BYTES - LIFECYCLE_JSON_HEADROOM
MAX_REASON_LENGTH = 500
MAX_BATCH = 10_000

# ---------------------------------------------------------------------------------------
# Secret detection (metadata and payload keys and values)
# ---------------------------------------------------------------------------------------

SECRET_WORDS = frozenset(
    {
        "otp",
        "pin",
        "passcode",
        "token",
        "password",
        "passwd",
        "pwd",
        "secret",
        "apikey",
        "credential",
        "credentials",
        "authorization",
        "bearer",
        "cookie",
        "magiclink",
    }
)
"""A key holding one of these words (after splitting camelCase and separators) is a secret."""
# "code" and "key" are common harmless words ("country_code", "idempotency_key"): "code" is
# a secret unless a harmless qualifier precedes it, "key" only after a secret qualifier.
HARMLESS_CODE_QUALIFIERS = frozenset(
    {
        "country", "language", "lang", "locale", "status", "error", "currency", "postal",
        "zip", "region", "template", "reason", "response", "smtp", "http", "reply", "bounce",
        "workflow", "product", "plan", "campaign", "promo", "discount", "color", "area",
    }
)  # fmt: skip
SECRET_KEY_QUALIFIERS = frozenset({"api", "private", "secret", "access", "signing", "encryption"})
HARMLESS_LAST_WORDS = frozenset(
    {"expires", "expiry", "expiration", "at", "ttl", "length", "type", "id", "sent", "count"}
)
"""A key whose last word is one of these describes a secret without holding it."""
HASH_SUFFIXES = ("_sha256", "_sha512", "_hash", "_hmac", "_digest")
"""A key ending in one of these may hold a hash of a secret (not the secret itself)."""

# Written to mean the same in Python's re and PostgreSQL's regular expressions.
HASH_VALUE_PATTERN = r"^((sha256|sha512|sha1|hmac-sha256):)?[0-9a-fA-F]{32,128}$"
SECRET_PARAMETER_PATTERN = (
    r"[?&#;]([a-z0-9_]*_)?(token|code|otp|key|secret|password|sig|signature|auth|jwt)[a-z0-9_]*="
)
LONG_TOKEN_PATTERN = r"(?=[A-Za-z0-9_-]*[0-9])(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z0-9_-]{24,}"
LINK_SECRET_PARAMETER_PATTERN = rf"https?://[^\s]*{SECRET_PARAMETER_PATTERN}"
"""A URL whose query or fragment has a parameter named like a secret."""
LINK_LONG_TOKEN_PATTERN = rf"https?://[^\s?]*{LONG_TOKEN_PATTERN}"
"""A URL whose path (before any ``?``) holds a long token."""
SECRET_PREFILTER_WORDS = frozenset(
    {*SECRET_WORDS, "code", "key", "http", *(suffix.strip("_") for suffix in HASH_SUFFIXES)}
)
"""Every key or value the rules can flag contains one of these (case-insensitively), even
across separators: the database skips its key walk for objects without any."""

# ---------------------------------------------------------------------------------------
# Error messages: the sanitiser's redactions, in order
# ---------------------------------------------------------------------------------------

SANITIZE_RULES: tuple[tuple[str, str, str], ...] = (
    ("[[:cntrl:]]", " ", "g"),
    (r"(https?://[^[:space:]?#]*)\?[^[:space:]#]*", r"\1?[redacted]", "gi"),
    (r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}", "[email]", "g"),
    ("(bearer|basic)[[:space:]]+[^[:space:]]+", r"\1 [redacted]", "gi"),
    (
        "(password|passwd|pwd|secret|token|api[_-]?key|apikey|authorization|code|otp)"
        "([[:space:]]*[:=][[:space:]]*)[^[:space:],;]+",
        r"\1\2[redacted]",
        "gi",
    ),
    (
        "(^|[^A-Za-z0-9_+/=-])(?=[A-Za-z0-9_+/=-]*[0-9])(?=[A-Za-z0-9_+/=-]*[A-Za-z])"
        "[A-Za-z0-9_+/=-]{24,}",
        r"\1[token]",
        "g",
    ),
)
"""``(pattern, replacement, flags)`` in PostgreSQL's ``regexp_replace`` terms, applied in
order (``g``: every match, ``i``: ignoring case); the result is capped at
``MAX_ERROR_MESSAGE_LENGTH`` characters."""

_POSIX_CLASSES = {"[:space:]": r"\s", "[:cntrl:]": r"\x00-\x1f\x7f"}


def python_regex(pattern: str) -> str:
    """A pattern of PostgreSQL's dialect as Python's ``re`` writes it (POSIX classes)."""
    for posix, python in _POSIX_CLASSES.items():
        pattern = pattern.replace(posix, python)
    return pattern


# ---------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------

STATS_BUCKET_ORIGIN = "TIMESTAMPTZ '2000-01-01 00:00:00+00'"
"""Buckets are UTC hours and days whatever the session's TimeZone (``date_bin`` origin)."""
TOP_ERROR_CODES = 3
"""How many error codes ``top_error_codes`` lists per group by default."""

# ---------------------------------------------------------------------------------------
# The placeholders of the SQL files
# ---------------------------------------------------------------------------------------


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _quoted(values: Iterable[str]) -> str:
    return ", ".join(_literal(value) for value in values)


def _sql_list(values: Iterable[str]) -> str:
    return f"({_quoted(values)})"


def _alternation(words: Iterable[str]) -> str:
    return "|".join(sorted(words))


def _wrapped(items: list[str], *, indent: str, width: int) -> str:
    """``items`` joined by ", " in lines of at most ``width`` characters."""
    lines: list[str] = []
    line = ""
    for item in items:
        candidate = f"{line}, {item}" if line else item
        if line and len(indent) + len(candidate) + 1 > width:
            lines.append(line + ",")
            line = item
        else:
            line = candidate
    lines.append(line)
    return f"\n{indent}".join(lines)


def _transition_rows() -> str:
    # One group of lines per source status, in the enum's order.
    groups = [
        [f"('{old.value}', '{new.value}')" for new in S if new in TRANSITIONS[old]]
        for old in S
        if TRANSITIONS[old]
    ]
    indent = " " * 12
    return f",\n{indent}".join(_wrapped(group, indent=indent, width=92) for group in groups)


def _sanitize_expression() -> str:
    # The innermost call first: regexp_replace(regexp_replace(message, rule 1), rule 2) …
    indent = " " * 12
    nested = "\n".join("        regexp_replace(" for _ in SANITIZE_RULES)
    lines = [nested.lstrip() + "message,"]
    for pattern, replacement, flags in SANITIZE_RULES:
        one_line = f"{indent}'{pattern}', '{replacement}', '{flags}'),"
        if len(one_line) <= 100:
            lines.append(one_line)
        else:
            lines += [f"{indent}'{pattern}',", f"{indent}'{replacement}', '{flags}'),"]
    return "\n".join(lines)


def _delivery_row_types() -> str:
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    return ", ".join(
        f"{column.name} {column.type.compile(dialect=dialect).lower()}"
        for column in Delivery.__table__.columns
    )


_RENDERERS: dict[str, Callable[[], str]] = {
    "transitions": _transition_rows,
    "active_statuses": lambda: _sql_list(s.value for s in ACTIVE_STATUSES),
    "claimable_statuses": lambda: _sql_list(s.value for s in CLAIMABLE_STATUSES),
    "failed_statuses": lambda: _sql_list(s.value for s in FAILED_STATUSES),
    "delivery_row": lambda: ", ".join(f"d.{name}" for name in DELIVERY_ROW_COLUMNS),
    "delivery_columns": lambda: ", ".join(DELIVERY_ROW_COLUMNS),
    "delivery_row_types": _delivery_row_types,
    "event_payload_setting": lambda: _literal(EVENT_PAYLOAD_SETTING),
    "dead_letter_reference_key": lambda: _literal(DEAD_LETTER_REFERENCE_KEY),
    "requeued_at_attempt_key": lambda: _literal(REQUEUED_AT_ATTEMPT_KEY),
    "reserved_metadata_keys": lambda: f"ARRAY[{_quoted(RESERVED_METADATA_KEYS)}]",
    "lease_expired_code": lambda: _literal(LEASE_EXPIRED_CODE),
    "max_caller_json_bytes": lambda: str(MAX_CALLER_JSON_BYTES),
    "max_reference_length": lambda: str(MAX_REFERENCE_LENGTH),
    "max_error_message_length": lambda: str(MAX_ERROR_MESSAGE_LENGTH),
    "sqlstate_illegal_transition": lambda: _literal(str(IllegalTransition.sqlstate)),
    "sqlstate_attempts_decreased": lambda: _literal(str(AttemptsDecreased.sqlstate)),
    "sqlstate_secret_in_input": lambda: _literal(str(SecretInInput.sqlstate)),
    "sanitize_expression": _sanitize_expression,
    "secret_prefilter": lambda: _literal(_alternation(SECRET_PREFILTER_WORDS)),
    "secret_words": lambda: _sql_list(sorted(SECRET_WORDS)),
    # The key rules over a key written as _word_word_ (camelCase split, lower-cased).
    "secret_word_pattern": lambda: _literal(f"_({_alternation(SECRET_WORDS)})_"),
    "harmless_last_word_pattern": lambda: _literal(f"_({_alternation(HARMLESS_LAST_WORDS)})_$"),
    "secret_code_pattern": lambda: _literal(
        f"_(?!({_alternation(HARMLESS_CODE_QUALIFIERS)})_)[a-z0-9]+_code_"
    ),
    "secret_key_pattern": lambda: _literal(f"_({_alternation(SECRET_KEY_QUALIFIERS)})_key_"),
    "hash_suffix_pattern": lambda: _literal(f"({'|'.join(HASH_SUFFIXES)})$"),
    "hash_value_pattern": lambda: _literal(HASH_VALUE_PATTERN),
    "link_secret_parameter_pattern": lambda: _literal(LINK_SECRET_PARAMETER_PATTERN),
    "link_long_token_pattern": lambda: _literal(LINK_LONG_TOKEN_PATTERN),
    "stats_bucket_origin": lambda: STATS_BUCKET_ORIGIN,
}


def placeholders() -> dict[str, str]:
    """Every placeholder of the SQL files and its rendering, from the rules above."""
    return {name: render() for name, render in _RENDERERS.items()}


PLACEHOLDER_NAMES = frozenset(_RENDERERS)
"""The fixed set of placeholder names; the SQL files may use no other."""

__all__ = [
    "ACTIVE_STATUSES",
    "CLAIMABLE_STATUSES",
    "PLACEHOLDER_NAMES",
    "SANITIZE_RULES",
    "TERMINAL_STATUSES",
    "TRANSITIONS",
    "is_allowed",
    "placeholders",
    "python_regex",
]
