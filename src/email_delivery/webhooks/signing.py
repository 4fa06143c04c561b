"""Standard Webhooks signatures (https://www.standardwebhooks.com, the scheme of Svix and
Resend), with the standard library only.

Every request carries three headers:

======================  ==================================================================
``webhook-id``          the message id: the same on every retry of one message, so the
                        receiver can deduplicate (``msg_…``, see ``payloads.message_id``)
``webhook-timestamp``   when this attempt was signed, integer Unix seconds
``webhook-signature``   ``v1,<base64 HMAC-SHA256>`` over ``{id}.{timestamp}.{body}``; several
                        space-separated entries while a secret is rotated (old and new key),
                        any one of which may match
======================  ==================================================================

Secrets are ``whsec_`` followed by the base64 of 24 to 64 random bytes (the specification:
"at least 24 bytes"; 64 is Svix's and our upper bound). The HMAC key is the decoded bytes,
not the text. ``generate_secret()`` makes one of 32 bytes, as Svix does.

Every attempt is signed afresh with the time of the attempt, so a retry hours later is never
stale; a receiver refuses timestamps more than ``tolerance`` (5 minutes) away from its clock,
either way, which bounds replays. The message id may not contain ``.`` (the specification:
the signed content would become ambiguous) nor anything that is not a printable,
non-space ASCII character (it travels in a header).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

from email_delivery.errors import InvalidInput
from email_delivery.webhooks.errors import InvalidWebhookSignature

__all__ = [
    "DEFAULT_TOLERANCE",
    "ID_HEADER",
    "MAX_SECRET_BYTES",
    "MIN_SECRET_BYTES",
    "SECRET_PREFIX",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "InvalidWebhookSignature",
    "generate_secret",
    "headers",
    "sign",
    "verify",
]

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64
DEFAULT_SECRET_BYTES = 32
DEFAULT_TOLERANCE = timedelta(minutes=5)
SIGNATURE_VERSION = "v1"

_MESSAGE_ID = re.compile(r"^[!-~]{1,256}$")  # printable ASCII, no space
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")
_BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
_MAX_SIGNATURE_HEADER = 8192


def generate_secret(nbytes: int = DEFAULT_SECRET_BYTES) -> str:
    """A new endpoint secret: ``whsec_`` + base64 of ``nbytes`` random bytes (24 to 64)."""
    if isinstance(nbytes, bool) or not isinstance(nbytes, int):
        raise InvalidInput("nbytes", "must be an integer")
    if not MIN_SECRET_BYTES <= nbytes <= MAX_SECRET_BYTES:
        raise InvalidInput(
            "nbytes", f"must be between {MIN_SECRET_BYTES} and {MAX_SECRET_BYTES}, not {nbytes}"
        )
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(nbytes)).decode("ascii")


def _key(secret: object, field: str = "secret") -> bytes:
    """The HMAC key of a ``whsec_`` secret; ``InvalidInput(field)`` for anything else. The
    message never repeats the secret."""
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise InvalidInput(field, f"must be a {SECRET_PREFIX}… secret")
    text = secret.removeprefix(SECRET_PREFIX)
    if not _BASE64.match(text):
        raise InvalidInput(field, f"not base64 after the {SECRET_PREFIX} prefix")
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raise InvalidInput(field, f"not base64 after the {SECRET_PREFIX} prefix") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise InvalidInput(
            field,
            f"must decode to {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, not {len(key)}",
        )
    return key


def _keys(secret: str | Sequence[str]) -> list[bytes]:
    if isinstance(secret, str):
        return [_key(secret)]
    if not isinstance(secret, Sequence) or not secret:
        raise InvalidInput("secret", "must be a whsec_… secret or a non-empty list of them")
    return [_key(one, f"secret[{index}]") for index, one in enumerate(secret)]


def _message_id(message_id: object) -> str:
    if not isinstance(message_id, str) or not _MESSAGE_ID.match(message_id):
        raise InvalidInput(
            "message_id", "must be 1 to 256 printable ASCII characters without spaces"
        )
    if "." in message_id:
        raise InvalidInput("message_id", "may not contain '.' (the signed content's separator)")
    return message_id


def _unix_seconds(timestamp: object) -> int:
    if isinstance(timestamp, datetime):
        if timestamp.tzinfo is None:
            raise InvalidInput("timestamp", "must be timezone-aware")
        seconds = int(timestamp.timestamp() // 1)
    elif isinstance(timestamp, int) and not isinstance(timestamp, bool):
        seconds = timestamp
    else:
        raise InvalidInput("timestamp", "must be Unix seconds (int) or an aware datetime")
    if seconds < 0:
        raise InvalidInput("timestamp", "may not be before 1970")
    return seconds


def _body(body: object) -> bytes:
    if not isinstance(body, bytes | bytearray | memoryview):
        raise InvalidInput("body", "must be the exact bytes sent (not str, not a dict)")
    return bytes(body)


def _digest(key: bytes, message_id: str, timestamp: int, body: bytes) -> bytes:
    return hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()


def sign(
    secret: str | Sequence[str],
    *,
    message_id: str,
    timestamp: int | datetime,
    body: bytes,
) -> str:
    """The ``webhook-signature`` value: ``v1,<base64>``, or one entry per secret, space
    separated, when given several (during a rotation: the new secret and the old one)."""
    keys = _keys(secret)
    content = (_message_id(message_id), _unix_seconds(timestamp), _body(body))
    return " ".join(
        f"{SIGNATURE_VERSION},{base64.b64encode(_digest(key, *content)).decode('ascii')}"
        for key in keys
    )


def headers(
    secret: str | Sequence[str],
    *,
    message_id: str,
    timestamp: int | datetime,
    body: bytes,
) -> dict[str, str]:
    """The three ``webhook-*`` headers of one attempt (add ``Content-Type`` yourself, or let
    the transport do it)."""
    return {
        ID_HEADER: _message_id(message_id),
        TIMESTAMP_HEADER: str(_unix_seconds(timestamp)),
        SIGNATURE_HEADER: sign(secret, message_id=message_id, timestamp=timestamp, body=body),
    }


def _header(request_headers: Mapping[str, str], name: str) -> str:
    found = [value for key, value in request_headers.items() if key.lower() == name]
    if not found or not isinstance(found[0], str) or not found[0].strip():
        raise InvalidWebhookSignature(f"headers.{name}", "missing")
    if len(found) > 1:
        raise InvalidWebhookSignature(f"headers.{name}", "given more than once")
    return found[0].strip()


def verify(
    secret: str | Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance: timedelta = DEFAULT_TOLERANCE,
    now: datetime | None = None,
) -> str:
    """Check a received webhook; return its message id (the idempotency key).

    ``headers`` is any mapping (names in any case); ``body`` the raw bytes received.
    ``secret`` may be a list (the receiver's side of a rotation). Raises
    ``InvalidWebhookSignature`` naming the header at fault; a bad ``secret``, ``tolerance``
    or ``now`` is a plain ``InvalidInput`` (a configuration error, not the sender's).
    """
    keys = _keys(secret)
    if not isinstance(tolerance, timedelta) or tolerance <= timedelta(0):
        raise InvalidInput("tolerance", "must be a positive timedelta")
    if now is None:
        now = datetime.now(UTC)
    elif not isinstance(now, datetime) or now.tzinfo is None:
        raise InvalidInput("now", "must be a timezone-aware datetime")
    if not isinstance(headers, Mapping):
        raise InvalidInput("headers", "must be a mapping of header names to values")
    received = _body(body)

    message_id = _header(headers, ID_HEADER)
    if not _MESSAGE_ID.match(message_id) or "." in message_id:
        raise InvalidWebhookSignature(f"headers.{ID_HEADER}", "not a valid message id")
    timestamp = _header(headers, TIMESTAMP_HEADER)
    if not _TIMESTAMP.match(timestamp):
        raise InvalidWebhookSignature(f"headers.{TIMESTAMP_HEADER}", "must be integer Unix seconds")
    # Compared as numbers: a far-future timestamp (999999999999) is past datetime's range.
    skew = int(timestamp) - now.timestamp()
    if skew < -tolerance.total_seconds():
        raise InvalidWebhookSignature(
            f"headers.{TIMESTAMP_HEADER}", f"too old (more than {tolerance} before now)"
        )
    if skew > tolerance.total_seconds():
        raise InvalidWebhookSignature(
            f"headers.{TIMESTAMP_HEADER}", f"too new (more than {tolerance} after now)"
        )
    signatures = _header(headers, SIGNATURE_HEADER)
    if len(signatures) > _MAX_SIGNATURE_HEADER:
        raise InvalidWebhookSignature(f"headers.{SIGNATURE_HEADER}", "too long")

    expected = [_digest(key, message_id, int(timestamp), received) for key in keys]
    for entry in signatures.split():
        version, _, encoded = entry.partition(",")
        if version != SIGNATURE_VERSION or not _BASE64.match(encoded):
            continue  # another scheme (v1a: ed25519) or garbage: not ours to judge
        try:
            candidate = base64.b64decode(encoded + "=" * (-len(encoded) % 4))
        except binascii.Error:
            continue
        matched = False
        for digest in expected:  # every key, each compared in constant time
            matched |= hmac.compare_digest(candidate, digest)
        if matched:
            return message_id
    raise InvalidWebhookSignature(f"headers.{SIGNATURE_HEADER}", "no v1 signature matches the body")
