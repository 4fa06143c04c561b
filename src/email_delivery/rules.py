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

import math
from collections.abc import Callable, Iterable
from types import MappingProxyType

from sqlalchemy.dialects import postgresql

from email_delivery.errors import (
    AttemptsDecreased,
    IllegalTransition,
    OwnerOnly,
    ProtectedColumn,
    SecretInInput,
)
from email_delivery.models import (
    MAX_BACKOFF_CAP,
    MAX_ERROR_MESSAGE_LENGTH,
    MAX_JSON_BYTES,
    MAX_LEASE,
    MAX_OUTCOME_REASON_LENGTH,
    Delivery,
)
from email_delivery.models import DeliveryStatus as S

# ---------------------------------------------------------------------------------------
# Statuses and transitions
# ---------------------------------------------------------------------------------------

TRANSITIONS: MappingProxyType[S, frozenset[S]] = MappingProxyType(
    {
        # suppressed: only at enqueue, when the recipient is on the suppression list.
        S.QUEUED: frozenset({S.IN_PROGRESS, S.SENT, S.FAILED, S.DEAD_LETTER, S.SUPPRESSED}),
        S.IN_PROGRESS: frozenset({S.SENT, S.RETRYING, S.FAILED, S.DEAD_LETTER}),
        S.RETRYING: frozenset({S.IN_PROGRESS, S.SENT, S.FAILED, S.DEAD_LETTER}),
        # A requeue by an operator, or a late success report: nothing else.
        S.FAILED: frozenset({S.QUEUED, S.SENT}),
        S.DEAD_LETTER: frozenset({S.QUEUED, S.SENT}),
        S.SENT: frozenset(),
        # Final like sent: a new delivery id is enqueued once the address is cleared.
        S.SUPPRESSED: frozenset(),
    }
)
"""Every move between two different statuses that is allowed (staying is always allowed:
a lease takeover, a metadata change). The database's ``email.is_allowed_transition`` is
rendered from it."""

ACTIVE_STATUSES = (S.QUEUED, S.IN_PROGRESS, S.RETRYING)
"""Not finished: the worker still owes these an attempt or a report."""
TERMINAL_STATUSES = (S.SENT, S.FAILED, S.DEAD_LETTER, S.SUPPRESSED)
"""Statuses the worker never leaves on its own (``failed``/``dead_letter`` only by requeue)."""
FAILED_STATUSES = (S.FAILED, S.DEAD_LETTER)
"""Finished without being sent; an operator's requeue moves these back to ``queued``."""
CLAIMABLE_STATUSES = (S.QUEUED, S.RETRYING)
"""A claim starts an attempt from these (or from an ``in_progress`` whose lease expired)."""


CLAIMABLE_ROW = (
    "((d.status IN {claimable} AND coalesce(d.next_attempt_at, '-infinity') <= now())"
    " OR (d.status = 'in_progress' AND d.lease_expires_at <= now()))"
)
"""Which row ``d`` a claim takes: queued, or retrying once its next attempt has come, or
in_progress whose stored expiry has passed. The one text of the rule for the one-id claim
and the array claim (a placeholder in both files)."""
CLAIM_ASSIGNMENTS = (
    "status = 'in_progress', attempts = d.attempts + 1, last_attempted_at = now(), "
    "lease_expires_at = now() + coalesce(p_lease, (email.workflow_policy(d.workflow)).lease)"
)
"""What a claim writes: the new attempt and its expiry, ``p_lease`` or the workflow's lease."""


SENT_REPORT_SKIPS = (S.SENT, S.SUPPRESSED)
"""What a success report leaves alone: already sent, or suppressed (never claimed, so no
report can be its truth). Shared by mark_delivery_sent and mark_deliveries_sent."""


def is_allowed(old: S, new: S) -> bool:
    """Whether a delivery may move from ``old`` to ``new``."""
    return old == new or new in TRANSITIONS[old]


# ---------------------------------------------------------------------------------------
# Names the lifecycle functions and the tracker share
# ---------------------------------------------------------------------------------------

EVENT_PAYLOAD_SETTING = "email.event_payload"
"""Transaction-local setting whose JSON object becomes the payload of the next audit event."""
PURGED_EVENTS_SETTING = "email.purged_events"
"""Transaction-local count of the events the purge trigger deleted (retention reports it)."""
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
ERROR_CODE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"
"""``last_error_code``: ``SMTP_535``, ``TimeoutError``, ``LEASE_EXPIRED``."""
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

SECRET_SUFFIXES = frozenset(
    {
        "token", "password", "passwd", "pwd", "passcode", "passphrase", "secret", "otp",
        "jwt", "apikey", "credential", "credentials", "authorization", "bearer", "cookie",
        "magiclink",
    }
)  # fmt: skip
"""A key word that is one of these, or ends with one (``resettoken``, ``totp``,
``onetimepassword``), names a secret; so does its plural (``tokens``)."""
SECRET_WORDS = SECRET_SUFFIXES | {"pin"}
"""Secret words as whole words ("pin" only whole: "spin" and "hairpin" are harmless)."""
# "code" and "key" are common harmless words ("country_code", "idempotency_key"): "code" is
# a secret unless a harmless qualifier precedes it (as a word, or inside one word:
# "zipcode"), "key" only after a secret qualifier ("api_key", "privatekey").
HARMLESS_CODE_QUALIFIERS = frozenset(
    {
        "country", "language", "lang", "locale", "status", "error", "currency", "postal",
        "post", "zip", "region", "template", "reason", "response", "smtp", "http", "reply",
        "bounce", "workflow", "product", "plan", "campaign", "promo", "discount", "color",
        "area", "bar", "qr", "uni", "en", "de", "op", "short", "geo", "source", "hash",
    }
)  # fmt: skip
SECRET_KEY_QUALIFIERS = frozenset({"api", "private", "secret", "access", "signing", "encryption"})
HARMLESS_LAST_WORDS = frozenset(
    {"expires", "expiry", "expiration", "at", "ttl", "length", "type", "id", "sent", "count"}
)
"""A key whose last word is one of these describes a secret without holding it."""
HASH_SUFFIXES = ("_sha256", "_sha512", "_hash", "_hmac", "_digest")
"""A key ending in one of these may hold a hash of a secret (not the secret itself)."""
PLURAL_STEMS = (*sorted(SECRET_WORDS), "code", "key")
"""A word ending in one of these plus "s" is read as its singular (``recovery_codes``)."""

# Written to mean the same in Python's re and PostgreSQL's regular expressions.
HASH_VALUE_PATTERN = r"^((sha256|sha512|sha1|hmac-sha256):)?[0-9a-fA-F]{32,128}$"

ALLOWED_LINK_PARAMETERS = frozenset(
    {"utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "utm_id", "lang",
     "locale", "hl", "list"}
)  # fmt: skip
"""The only query (or fragment) parameters a link in metadata may carry. Any other name —
``token``, ``oobCode``, ``u`` (a redirect wrapping another link) — may hold a secret, and a
short allow-list cannot be fooled by a name nobody thought of, as a word list can."""
PERCENT_DECODING: tuple[tuple[str, str, str], ...] = (
    *(
        (f"%{code}", char, "gi")
        for code, char in (
            ("3a", ":"), ("2f", "/"), ("3f", "?"), ("3d", "="), ("26", "&"), ("23", "#"),
            ("3b", ";"),
        )
    ),
    ("%25", "%", "gi"),
) * 2  # fmt: skip
"""The escapes that hide a link's structure, undone twice (double encoding) in this order,
before links are looked at: ``https%3A%2F%2Fapp%2Freset%3Ftoken%3D…``."""
LINK_PATTERN = (
    r"(?:https?:)?//[^[:space:]/?#]+[^[:space:]?#]*(?:\?([^[:space:]#]*))?(?:#([^[:space:]]*))?"
)
"""A link (``https://``, ``http://`` or scheme-relative ``//host``): group 1 its query,
group 2 its fragment (parameters only when it holds a ``=``)."""
LONG_TOKEN_PATTERN = r"(?=[A-Za-z0-9_-]*[0-9])(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z0-9_-]{24,}"
LINK_LONG_TOKEN_PATTERN = rf"(?:https?:)?//[^[:space:]?#]*{LONG_TOKEN_PATTERN}"
"""A link whose path holds a long token (``/invite/3f9a8b7c…``)."""
SECRET_PREFILTER_WORDS = frozenset(
    {*SECRET_WORDS, "code", "key", "http", *(suffix.strip("_") for suffix in HASH_SUFFIXES)}
)
"""Every key or value the key rules can flag contains one of these (case-insensitively), even
across separators; a link contains ``//``. The database skips its walk for objects with
neither."""

# ---------------------------------------------------------------------------------------
# Error messages: the sanitiser's redactions, in order
# ---------------------------------------------------------------------------------------

_KEY_CHARS = "A-Za-z0-9_-"
_HARMLESS_CODES = "|".join(sorted(HARMLESS_CODE_QUALIFIERS))
_ADDRESS_LOCAL = r"""("[^"]*"|[^][[:space:]@<>(),;:"']+)"""
_ADDRESS_LABEL = r"""[^][[:space:]@<>(),;:"'/.]+"""
SANITIZE_RULES: tuple[tuple[str, str, str], ...] = (
    ("[[:cntrl:]]", " ", "g"),
    # Credentials in a URL: smtp://user:password@host.
    ("([a-z][a-z0-9+.-]*://)[^/[:space:]:@]+:[^/[:space:]@]+@", r"\1[redacted]@", "gi"),
    # A link's query string, and a fragment holding parameters.
    (r"((?:https?:)?//[^[:space:]?#]*)\?[^[:space:]#]*", r"\1?[redacted]", "gi"),
    (r"((?:https?:)?//[^[:space:]#]*)#[^[:space:]]*=[^[:space:]]*", r"\1#[redacted]", "gi"),
    # Addresses: quoted and international local parts, IDN domains and address literals.
    (
        rf"{_ADDRESS_LOCAL}@(\[[0-9A-Fa-f.:]+\]|{_ADDRESS_LABEL}(\.{_ADDRESS_LABEL})+)",
        "[email]",
        "g",
    ),
    ("((set-)?cookie[[:space:]]*:[[:space:]]*)[^[:space:];,]+", r"\1[redacted]", "gi"),
    ("(bearer|basic)[[:space:]]+[^[:space:]]+", r"\1 [redacted]", "gi"),
    # key: value, key=value, "key": "value", 'key': 'value' (JSON bodies, Python reprs);
    # not error_code, status_code … (a harmless word before "code").
    (
        f"(^|[^{_KEY_CHARS}])"
        f"(?!(?:{_HARMLESS_CODES})[_ -]?codes?[^{_KEY_CHARS}])"
        f"([{_KEY_CHARS}]*(?:password|passwd|passphrase|pwd|secret|token|api[_-]?key|authorization"
        "|otp|pin|passcode|cookie|jwt|codes?))"
        """(["']?[[:space:]]*[:=][[:space:]]*["']?)[^"'[:space:],;}]+""",
        r"\1\2\3[redacted]",
        "gi",
    ),
    # A number right after a word that names one: "PIN 4821", "code 482193".
    (
        f"(^|[^{_KEY_CHARS}])((?:pin|otp|passcode|code)[[:space:]]+)[0-9]{{4,12}}",
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
order after ``PERCENT_DECODING`` (``g``: every match, ``i``: ignoring case); the result is
capped at ``MAX_ERROR_MESSAGE_LENGTH`` characters."""

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

LATENCY_BUCKETS_PER_DECADE = 20
"""Latency percentiles come from a histogram with this many buckets per factor of ten
(a DDSketch-style log histogram, mergeable across hours): bucket ``i`` holds the latencies
in ``(10**((i-1)/20), 10**(i/20)]`` seconds and reads as ``2*g**i/(g+1)``, g = 10**(1/20),
which is within ``LATENCY_RELATIVE_ERROR`` of every latency in it."""
LATENCY_BUCKET_MIN = -3 * LATENCY_BUCKETS_PER_DECADE
"""The bucket ending at 1 ms; anything faster falls in ``LATENCY_BUCKET_MIN - 1``, read as 0."""
LATENCY_BUCKET_MAX = 6 * LATENCY_BUCKETS_PER_DECADE
"""The bucket ending at 10**6 s (11.6 days); anything slower falls in ``LATENCY_BUCKET_MAX + 1``,
read as 10**6 s."""
_GAMMA = 10 ** (1 / LATENCY_BUCKETS_PER_DECADE)
LATENCY_RELATIVE_ERROR = (_GAMMA - 1) / (_GAMMA + 1)
"""0.0575: a percentile is within 5.75 % of the exact ``percentile_cont`` (between 1 ms and
10**6 s): the estimate of each latency is, and an interpolation keeps the bound."""
ROLLUP_HOUR = "interval '1 hour'"
"""The rollups' granularity: UTC hours (``date_bin`` from ``STATS_BUCKET_ORIGIN``)."""
ROLLUP_DAY = "interval '1 day'"
"""The daily tiers of the rollups (providers' and deliveries'): UTC days (``date_bin`` from
``STATS_BUCKET_ORIGIN``), the statistics' ``day`` bucket."""


def latency_bucket(seconds: float) -> int:
    """The histogram bucket of a latency, as ``email.raw_delivery_rollups`` computes it."""
    if seconds <= 10 ** ((LATENCY_BUCKET_MIN - 1) / LATENCY_BUCKETS_PER_DECADE):
        return LATENCY_BUCKET_MIN - 1
    if seconds > 10 ** (LATENCY_BUCKET_MAX / LATENCY_BUCKETS_PER_DECADE):
        return LATENCY_BUCKET_MAX + 1
    return math.ceil(LATENCY_BUCKETS_PER_DECADE * math.log10(seconds))


def latency_estimate(bucket: int) -> float:
    """What a latency in ``bucket`` reads as (seconds)."""
    if bucket < LATENCY_BUCKET_MIN:
        return 0.0
    if bucket > LATENCY_BUCKET_MAX:
        return float(10 ** (LATENCY_BUCKET_MAX // LATENCY_BUCKETS_PER_DECADE))
    return 2 * _GAMMA**bucket / (_GAMMA + 1)


def _latency_bucket_sql() -> str:
    # Over a column named latency_s (seconds, double precision).
    per_decade = LATENCY_BUCKETS_PER_DECADE
    return (
        "CASE WHEN latency_s IS NULL THEN NULL"
        " WHEN latency_s <= power(10::double precision,"
        f" ({LATENCY_BUCKET_MIN - 1})::double precision / {per_decade})"
        f" THEN {LATENCY_BUCKET_MIN - 1}"
        f" WHEN latency_s > 1e{LATENCY_BUCKET_MAX // per_decade} THEN {LATENCY_BUCKET_MAX + 1}"
        f" ELSE ceil({per_decade} * log(latency_s)) END::smallint"
    )


def _latency_estimate_sql() -> str:
    # Over a column named bucket.
    gamma = f"power(10::double precision, 1.0::double precision / {LATENCY_BUCKETS_PER_DECADE})"
    return (
        f"CASE WHEN bucket < {LATENCY_BUCKET_MIN} THEN 0::double precision"
        f" WHEN bucket > {LATENCY_BUCKET_MAX}"
        f" THEN 1e{LATENCY_BUCKET_MAX // LATENCY_BUCKETS_PER_DECADE}::double precision"
        f" ELSE 2 * power({gamma}, bucket) / ({gamma} + 1) END"
    )


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


def _nested_replace(rules: tuple[tuple[str, str, str], ...], argument: str) -> str:
    """``regexp_replace(regexp_replace(argument, rule 1), rule 2) …``, one rule a line."""
    indent = " " * 12
    nested = "\n".join("        regexp_replace(" for _ in rules)
    lines = [nested.lstrip() + f"{argument},"]
    for pattern, replacement, flags in rules:
        one_line = f"{indent}{_literal(pattern)}, {_literal(replacement)}, '{flags}'),"
        if len(one_line) <= 100:
            lines.append(one_line)
        else:
            lines.append(f"{indent}{_literal(pattern)},")
            lines.append(f"{indent}{_literal(replacement)}, '{flags}'),")
    return "\n".join(lines)


def _changed_columns() -> str:
    # The columns an update changed (its audit event names them); updated_at always changes
    # and delivery_id never does.
    watched = [c for c in DELIVERY_ROW_COLUMNS if c not in ("delivery_id", "updated_at")]
    cases = ",\n            ".join(
        f"CASE WHEN n.{c} IS DISTINCT FROM o.{c} THEN '{c}' END" for c in watched
    )
    return f"array_remove(ARRAY[\n            {cases}], NULL)"


def _delivery_row_types() -> str:
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    return ", ".join(
        f"{column.name} {column.type.compile(dialect=dialect).lower()}"
        for column in Delivery.__table__.columns
    )


_RENDERERS: dict[str, Callable[[], str]] = {
    "transitions": _transition_rows,
    "active_statuses": lambda: _sql_list(s.value for s in ACTIVE_STATUSES),
    "claimable_row": lambda: CLAIMABLE_ROW.format(
        claimable=_sql_list(s.value for s in CLAIMABLE_STATUSES)
    ),
    "claim_assignments": lambda: CLAIM_ASSIGNMENTS,
    "sent_report_skips": lambda: _sql_list(s.value for s in SENT_REPORT_SKIPS),
    "failed_statuses": lambda: _sql_list(s.value for s in FAILED_STATUSES),
    "terminal_statuses": lambda: _sql_list(s.value for s in TERMINAL_STATUSES),
    "delivery_row": lambda: ", ".join(f"d.{name}" for name in DELIVERY_ROW_COLUMNS),
    "delivery_columns": lambda: ", ".join(DELIVERY_ROW_COLUMNS),
    "delivery_row_types": _delivery_row_types,
    "event_payload_setting": lambda: _literal(EVENT_PAYLOAD_SETTING),
    "purged_events_setting": lambda: _literal(PURGED_EVENTS_SETTING),
    "dead_letter_reference_key": lambda: _literal(DEAD_LETTER_REFERENCE_KEY),
    "requeued_at_attempt_key": lambda: _literal(REQUEUED_AT_ATTEMPT_KEY),
    "reserved_metadata_keys": lambda: f"ARRAY[{_quoted(RESERVED_METADATA_KEYS)}]",
    "lease_expired_code": lambda: _literal(LEASE_EXPIRED_CODE),
    "max_caller_json_bytes": lambda: str(MAX_CALLER_JSON_BYTES),
    "max_outcome_reason": lambda: str(MAX_OUTCOME_REASON_LENGTH),
    "max_batch": lambda: str(MAX_BATCH),
    "max_lease": lambda: _literal(MAX_LEASE),
    "max_backoff_cap": lambda: _literal(MAX_BACKOFF_CAP),
    "max_reference_length": lambda: str(MAX_REFERENCE_LENGTH),
    "max_error_message_length": lambda: str(MAX_ERROR_MESSAGE_LENGTH),
    "sqlstate_illegal_transition": lambda: _literal(str(IllegalTransition.sqlstate)),
    "sqlstate_attempts_decreased": lambda: _literal(str(AttemptsDecreased.sqlstate)),
    "sqlstate_secret_in_input": lambda: _literal(str(SecretInInput.sqlstate)),
    "sqlstate_protected_column": lambda: _literal(str(ProtectedColumn.sqlstate)),
    "sqlstate_owner_only": lambda: _literal(str(OwnerOnly.sqlstate)),
    "error_code_pattern": lambda: _literal(ERROR_CODE_PATTERN),
    "changed_columns": _changed_columns,
    "sanitize_expression": lambda: _nested_replace(SANITIZE_RULES, "message"),
    "percent_decoding": lambda: _nested_replace(PERCENT_DECODING, "value").removesuffix(","),
    "secret_prefilter": lambda: _literal(_alternation(SECRET_PREFILTER_WORDS)),
    "secret_words": lambda: _sql_list(sorted(SECRET_WORDS)),
    # The key rules over a key written as _word_word_ (camelCase split, lower-cased), a plural
    # read as its singular: the same decisions as validation._names_secret.
    "secret_word_pattern": lambda: _literal(
        f"_(pins?|[a-z0-9]*({_alternation(SECRET_SUFFIXES)})s?)_"
    ),
    "harmless_last_word_pattern": lambda: _literal(f"_({_alternation(HARMLESS_LAST_WORDS)})_$"),
    "code_after_word_pattern": lambda: _literal(
        f"_(?!(?:{_alternation(HARMLESS_CODE_QUALIFIERS)})_)[a-z0-9]+_codes?_"
    ),
    "compound_code_pattern": lambda: _literal(
        f"_(?!(?:{_alternation(HARMLESS_CODE_QUALIFIERS)})codes?_)[a-z0-9]+codes?_"
    ),
    "secret_key_pattern": lambda: _literal(f"_(?:{_alternation(SECRET_KEY_QUALIFIERS)})_?keys?_"),
    "hash_suffix_pattern": lambda: _literal(f"({'|'.join(HASH_SUFFIXES)})$"),
    "hash_value_pattern": lambda: _literal(HASH_VALUE_PATTERN),
    "link_pattern": lambda: _literal(LINK_PATTERN),
    "link_long_token_pattern": lambda: _literal(LINK_LONG_TOKEN_PATTERN),
    "allowed_link_parameters": lambda: _sql_list(sorted(ALLOWED_LINK_PARAMETERS)),
    "stats_bucket_origin": lambda: STATS_BUCKET_ORIGIN,
    "rollup_hour": lambda: ROLLUP_HOUR,
    "rollup_day": lambda: ROLLUP_DAY,
    "latency_bucket": _latency_bucket_sql,
    "latency_estimate": _latency_estimate_sql,
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
