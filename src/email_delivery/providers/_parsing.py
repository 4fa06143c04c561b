"""Shared, provider-neutral pieces of the webhook parsers: reading JSON with field paths in
every error, timestamps, recipients, reasons, SMTP codes, our delivery id, headers, the
canonical-JSON event id, and timestamp freshness."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr
from typing import Any

from email_delivery.errors import InvalidInput
from email_delivery.models import DELIVERY_ID_PATTERN, MAX_RECIPIENT_LENGTH
from email_delivery.providers.errors import InvalidWebhook, SignatureMismatch
from email_delivery.providers.events import MAX_REASON_LENGTH

DEFAULT_TOLERANCE = timedelta(minutes=5)
"""How far a signed timestamp may be from now, either way, unless the caller says otherwise."""

MAX_BODY_BYTES = 10 * 1024 * 1024
"""A webhook body larger than this is refused before it is parsed (SendGrid batches are the
largest: a few hundred events, well under a megabyte)."""

JsonObject = dict[str, Any]

_DELIVERY_ID = re.compile(DELIVERY_ID_PATTERN)
_RECIPIENT = re.compile(r"^[^@\s]+@[^@\s]+$")
_SMTP_CODE_AT_START = re.compile(r"^\s*(?:smtp\s*;\s*)?([2-5][0-9][0-9])(?![0-9])", re.IGNORECASE)
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_LATEST = datetime(2100, 1, 1, tzinfo=UTC)


def key_path(path: str, key: str | int) -> str:
    """``body`` + ``event`` -> ``body.event``; ``body`` + 2 -> ``body[2]``."""
    return f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}"


# -- JSON ------------------------------------------------------------------------------------


def load_json(body: bytes, field: str = "body") -> Any:
    """The body as JSON; ``InvalidWebhook(field)`` when it is not UTF-8 JSON."""
    if not isinstance(body, bytes | bytearray | memoryview):
        raise InvalidWebhook(field, "must be the raw request body (bytes)")
    if len(body) > MAX_BODY_BYTES:
        raise InvalidWebhook(field, f"larger than {MAX_BODY_BYTES} bytes")
    try:
        return json.loads(bytes(body).decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidWebhook(field, f"not UTF-8 JSON ({exc})") from None


def load_json_text(text: str, field: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise InvalidWebhook(field, f"not JSON ({exc})") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def as_object(value: object, field: str) -> JsonObject:
    if not isinstance(value, dict):
        raise InvalidWebhook(field, f"must be a JSON object, not {_json_type(value)}")
    return value


def as_list(value: object, field: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidWebhook(field, f"must be a JSON array, not {_json_type(value)}")
    return value


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def required(obj: JsonObject, key: str, path: str) -> Any:
    """``obj[key]``, which must be present and not null."""
    value = obj.get(key)
    if value is None:
        raise InvalidWebhook(key_path(path, key), "is required")
    return value


def required_str(obj: JsonObject, key: str, path: str) -> str:
    value = required(obj, key, path)
    if not isinstance(value, str) or not value.strip():
        raise InvalidWebhook(key_path(path, key), "must be a non-empty string")
    return value


def optional_str(obj: JsonObject, key: str, path: str) -> str | None:
    """``obj[key]`` when it is a string; ``None`` when absent, null or empty."""
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidWebhook(key_path(path, key), f"must be a string, not {_json_type(value)}")
    return value if value.strip() else None


def required_object(obj: JsonObject, key: str, path: str) -> JsonObject:
    return as_object(required(obj, key, path), key_path(path, key))


def optional_object(obj: JsonObject, key: str, path: str) -> JsonObject | None:
    value = obj.get(key)
    return None if value is None else as_object(value, key_path(path, key))


def required_list(obj: JsonObject, key: str, path: str) -> list[Any]:
    return as_list(required(obj, key, path), key_path(path, key))


def optional_list(obj: JsonObject, key: str, path: str) -> list[Any] | None:
    value = obj.get(key)
    return None if value is None else as_list(value, key_path(path, key))


# -- values ----------------------------------------------------------------------------------


def iso_timestamp(value: object, field: str) -> datetime:
    """An ISO 8601 timestamp with a zone (``Z`` or an offset; any number of fractional
    digits), as UTC."""
    if not isinstance(value, str):
        raise InvalidWebhook(field, "must be an ISO 8601 timestamp string")
    text = value.strip()
    # Postmark writes 7 fractional digits; datetime keeps 6.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidWebhook(field, f"not an ISO 8601 timestamp: {value[:40]!r}") from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise InvalidWebhook(field, "timestamp has no time zone")
    return _in_range(parsed.astimezone(UTC), field)


def epoch_timestamp(value: object, field: str) -> datetime:
    """Seconds since the epoch (a number, or a string of one), as UTC."""
    if isinstance(value, bool):
        raise InvalidWebhook(field, "must be a Unix timestamp")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise InvalidWebhook(field, "must be a Unix timestamp") from None
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidWebhook(field, "must be a Unix timestamp")
    try:
        parsed = datetime.fromtimestamp(value, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise InvalidWebhook(field, "Unix timestamp out of range") from None
    return _in_range(parsed, field)


def _in_range(moment: datetime, field: str) -> datetime:
    if not _EARLIEST <= moment < _LATEST:
        raise InvalidWebhook(field, "timestamp out of range (2000-2099)")
    return moment


def recipient(value: object, field: str) -> str:
    """An address, trimmed and lower-cased (``Name <addr>`` gives ``addr``)."""
    if not isinstance(value, str):
        raise InvalidWebhook(field, "must be an email address string")
    text = value.strip()
    if "<" in text:
        text = parseaddr(text)[1].strip()
    text = text.lower()
    if len(text) > MAX_RECIPIENT_LENGTH or not _RECIPIENT.fullmatch(text):
        raise InvalidWebhook(field, "not an email address")
    return text


def sole_recipient(values: Iterable[object], field: str) -> str | None:
    """The one address of a list, or ``None`` when it names none or several."""
    addresses = list(values)
    if len(addresses) != 1:
        return None
    return recipient(addresses[0], key_path(field, 0))


def reason(*parts: str | None) -> str | None:
    """The non-empty parts joined with ``": "``, whitespace collapsed, cut to 500 chars."""
    texts = [" ".join(part.split()) for part in parts if part is not None]
    joined = ": ".join(text for text in texts if text)
    if not joined:
        return None
    if len(joined) > MAX_REASON_LENGTH:
        joined = joined[: MAX_REASON_LENGTH - 1] + "…"
    return joined


def smtp_code_in(text: str | None) -> int | None:
    """The reply code a diagnostic starts with: ``smtp; 550 5.1.1 …`` -> 550."""
    if text is None:
        return None
    match = _SMTP_CODE_AT_START.match(text)
    return int(match.group(1)) if match else None


def smtp_code(value: object) -> int | None:
    """A numeric reply code when it is one (200-599), else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int) and 200 <= value <= 599:
        return value
    return None


def delivery_id(value: object, field: str) -> str:
    """Our id as echoed back: it must be one we could have sent."""
    if not isinstance(value, str) or not _DELIVERY_ID.fullmatch(value.strip()):
        raise InvalidWebhook(
            field, "not a delivery id (1-200 of A-Z a-z 0-9 . _ : / @ + = -, alphanumeric first)"
        )
    return value.strip()


def one_delivery_id(found: Iterable[tuple[str, object]]) -> str | None:
    """Our id from the places a provider echoes it (``(field, value)`` pairs, ``value``
    ``None`` where absent); they must agree."""
    result: tuple[str, str] | None = None
    for field, value in found:
        if value is None:
            continue
        current = delivery_id(value, field)
        if result is not None and result[1] != current:
            raise InvalidWebhook(field, f"disagrees with {result[0]} ({result[1]!r})")
        result = (field, current)
    return None if result is None else result[1]


def header_value(headers: object, name: str, field: str) -> object:
    """The value of header ``name`` in a ``[{"name": …, "value": …}]`` list (SES, Resend)."""
    if headers is None:
        return None
    for index, entry in enumerate(as_list(headers, field)):
        item = as_object(entry, key_path(field, index))
        if str(item.get("name", "")).lower() == name.lower():
            return item.get("value")
    return None


def canonical_sha256(value: object) -> str:
    """SHA-256 (hex) of the value's canonical JSON: keys sorted, no whitespace, UTF-8."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# -- headers and signatures ------------------------------------------------------------------


class Headers:
    """Case-insensitive read access to request headers; error fields are ``headers.<name>``
    in lower case."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        if not isinstance(headers, Mapping):
            raise InvalidInput("headers", "must be a mapping of header names to values")
        self._headers = {str(name).lower(): value for name, value in headers.items()}

    def get(self, name: str) -> str | None:
        value = self._headers.get(name.lower())
        if value is None:
            return None
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        if not isinstance(value, str):
            raise InvalidWebhook(f"headers.{name.lower()}", "must be a string")
        return value.strip() or None

    def require_for_signature(self, name: str) -> str:
        """A signature header: missing is a ``SignatureMismatch``."""
        value = self.get(name)
        if value is None:
            raise SignatureMismatch(f"headers.{name.lower()}", "missing")
        return value


def check_tolerance(tolerance: timedelta | None, *, optional: bool = False) -> None:
    if tolerance is None and optional:
        return
    if not isinstance(tolerance, timedelta) or tolerance <= timedelta(0):
        raise InvalidInput("tolerance", "must be a positive timedelta")


def unix_seconds(value: str, field: str) -> datetime:
    """A signed timestamp (whole seconds since the epoch) from a header or signature block;
    malformed is a ``SignatureMismatch``."""
    text = value.strip()
    if not text.isdigit() or len(text) > 12:
        raise SignatureMismatch(field, "not a Unix timestamp in seconds")
    return datetime.fromtimestamp(int(text), tz=UTC)


def check_fresh(signed_at: datetime, tolerance: timedelta, field: str) -> None:
    """The signed timestamp must be within ``tolerance`` of now, either way (a replay or a
    clock far off)."""
    skew = datetime.now(UTC) - signed_at
    if abs(skew) > tolerance:
        direction = "old" if skew > timedelta(0) else "in the future"
        raise SignatureMismatch(
            field,
            f"timestamp is {abs(int(skew.total_seconds()))} s {direction}; "
            f"tolerance is {int(tolerance.total_seconds())} s",
        )
