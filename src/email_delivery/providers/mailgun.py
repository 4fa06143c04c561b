"""Mailgun webhooks: one JSON object per request, ``{"signature": {…}, "event-data": {…}}``.

Signature: ``signature.signature`` is the hex HMAC-SHA256, keyed with the domain's (or
account's) *HTTP webhook signing key*, of ``signature.timestamp`` followed by
``signature.token``. The timestamp must be within ``tolerance`` (5 minutes) of now, either
way. The signature covers the timestamp and token only, not ``event-data``: within the
tolerance a captured signature block could be replayed with other event data. Mailgun
recommends refusing a token seen before; that needs a store, which this stateless parser
leaves to the caller (``body["signature"]["token"]``).

Mapping (``event-data.event``):

==================  ==========  =========================================================
Mailgun event       kind        notes
==================  ==========  =========================================================
``accepted``        (ignored)   Mailgun queued the message
``delivered``       delivered   ``delivery-status``
``failed``          deferred    ``severity`` ``temporary``: Mailgun keeps retrying
``failed``          bounced     ``severity`` ``permanent``; ``permanent`` is ``True``
``failed``          rejected    ``severity`` ``permanent`` with ``reason``
                                ``suppress-bounce`` / ``suppress-unsubscribe`` /
                                ``suppress-complaint`` (not sent: on a suppression list)
``rejected``        rejected    Mailgun refused the message (``reject.reason``)
``opened``          opened
``clicked``         clicked
``complained``      complained
``unsubscribed``    (ignored)   a subscription change, not a delivery outcome
anything else       error       ``InvalidWebhook("body.event-data.event")``; so is a
                                ``failed`` event whose ``severity`` is neither of the two
==================  ==========  =========================================================

Fields: ``event_id`` is ``event-data.id``, Mailgun's id of the event, the same on every
retry (Mailgun calls it unique within a day, not forever: an idempotency store should keep
it with ``occurred_at``); the SHA-256 of ``event-data``'s canonical JSON when absent.
``provider_message_id`` is ``event-data.message.headers.message-id`` without ``<>`` (the
``id`` of Mailgun's send response is the same value inside ``<>``). ``delivery_id`` is the
user variable ``delivery_id`` (``event-data.user-variables``, sent as ``v:delivery_id``).
``recipient`` is ``event-data.recipient`` (else the single ``To`` address).
``occurred_at`` is ``event-data.timestamp``. ``reason`` is ``reason: description or
message`` of ``delivery-status`` (``reject.reason`` for rejections); ``smtp_code`` is
``delivery-status.code`` when it is 200-599 (Mailgun's own 6xx codes are dropped), else
read from the message.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import timedelta
from email.utils import getaddresses

from email_delivery.errors import InvalidInput
from email_delivery.providers._parsing import (
    DEFAULT_TOLERANCE,
    Headers,
    JsonObject,
    as_object,
    canonical_sha256,
    check_fresh,
    check_tolerance,
    epoch_timestamp,
    key_path,
    load_json,
    one_delivery_id,
    optional_object,
    optional_str,
    reason,
    recipient,
    required,
    required_object,
    required_str,
    smtp_code,
    smtp_code_in,
    unix_seconds,
)
from email_delivery.providers.errors import InvalidWebhook, SignatureMismatch
from email_delivery.providers.events import DELIVERY_ID_KEY, OutcomeKind, ProviderEvent

__all__ = ["parse", "verify_signature"]

PROVIDER = "mailgun"

_KINDS = {
    "delivered": OutcomeKind.DELIVERED,
    "failed": OutcomeKind.BOUNCED,
    "rejected": OutcomeKind.REJECTED,
    "opened": OutcomeKind.OPENED,
    "clicked": OutcomeKind.CLICKED,
    "complained": OutcomeKind.COMPLAINED,
}
_IGNORED = frozenset({"accepted", "unsubscribed"})
_SUPPRESSED = frozenset({"suppress-bounce", "suppress-unsubscribe", "suppress-complaint"})


def parse(
    body: bytes,
    headers: Mapping[str, str],
    *,
    signing_key: str,
    tolerance: timedelta = DEFAULT_TOLERANCE,
) -> list[ProviderEvent]:
    """The event of one Mailgun webhook request (``[]`` when it is ignored), after checking
    its signature with ``signing_key``."""
    Headers(headers)  # nothing to read from them; the signature is in the body
    payload = as_object(load_json(body), "body")
    verify_signature(payload, signing_key=signing_key, tolerance=tolerance)

    path = "body.event-data"
    data = required_object(payload, "event-data", "body")
    event_type = required_str(data, "event", path)
    if event_type in _IGNORED:
        return []
    kind = _KINDS.get(event_type)
    if kind is None:
        raise InvalidWebhook(key_path(path, "event"), f"unknown Mailgun event {event_type!r}")

    status_path = key_path(path, "delivery-status")
    status = optional_object(data, "delivery-status", path) or {}
    detail = optional_str(status, "description", status_path) or optional_str(
        status, "message", status_path
    )
    cause = optional_str(data, "reason", path)
    permanent: bool | None = None
    if event_type == "failed":
        severity = data.get("severity")
        if severity == "temporary":
            kind = OutcomeKind.DEFERRED
        elif severity == "permanent":
            if cause in _SUPPRESSED:
                kind = OutcomeKind.REJECTED
            else:
                permanent = True
        else:
            raise InvalidWebhook(key_path(path, "severity"), 'must be "permanent" or "temporary"')
    text = reason(cause, detail)
    if event_type == "rejected":
        reject = optional_object(data, "reject", path) or {}
        text = reason(optional_str(reject, "reason", key_path(path, "reject")) or cause)

    message = optional_object(data, "message", path) or {}
    message_headers = optional_object(message, "headers", key_path(path, "message")) or {}
    headers_path = key_path(key_path(path, "message"), "headers")
    message_id = optional_str(message_headers, "message-id", headers_path)
    user_variables = optional_object(data, "user-variables", path) or {}
    return [
        ProviderEvent(
            provider=PROVIDER,
            event_id=optional_str(data, "id", path) or canonical_sha256(data),
            kind=kind,
            occurred_at=epoch_timestamp(required(data, "timestamp", path), f"{path}.timestamp"),
            provider_message_id=(message_id.strip().strip("<>") or None) if message_id else None,
            delivery_id=one_delivery_id(
                [
                    (
                        f"{path}.user-variables.{DELIVERY_ID_KEY}",
                        user_variables.get(DELIVERY_ID_KEY),
                    )
                ]
            ),
            recipient=_recipient(data, message_headers, path, headers_path),
            permanent=permanent,
            reason=text,
            smtp_code=smtp_code(status.get("code")) or smtp_code_in(detail),
            provider_event_type=event_type,
        )
    ]


def _recipient(
    data: JsonObject, message_headers: JsonObject, path: str, headers_path: str
) -> str | None:
    if data.get("recipient") is not None:
        return recipient(data["recipient"], key_path(path, "recipient"))
    to = optional_str(message_headers, "to", headers_path)
    addresses = [address for _, address in getaddresses([to])] if to else []
    if len(addresses) != 1:
        return None
    return recipient(addresses[0], key_path(headers_path, "to"))


def verify_signature(
    payload: JsonObject,
    *,
    signing_key: str,
    tolerance: timedelta = DEFAULT_TOLERANCE,
) -> None:
    """Check the ``signature`` block of a parsed Mailgun webhook body; ``SignatureMismatch``
    names the field at fault."""
    check_tolerance(tolerance)
    if not isinstance(signing_key, str) or not signing_key.strip():
        raise InvalidInput("signing_key", "must be the HTTP webhook signing key")
    block = payload.get("signature")
    if not isinstance(block, dict):
        raise SignatureMismatch("body.signature", "missing")
    values = {}
    for key in ("timestamp", "token", "signature"):
        value = block.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and key == "timestamp":
            value = str(value)
        if not isinstance(value, str) or not value:
            raise SignatureMismatch(f"body.signature.{key}", "missing")
        values[key] = value
    signed_at = unix_seconds(values["timestamp"], "body.signature.timestamp")
    check_fresh(signed_at, tolerance, "body.signature.timestamp")
    expected = hmac.new(
        signing_key.strip().encode("utf-8"),
        (values["timestamp"] + values["token"]).encode("utf-8"),
        hashlib.sha256,
    ).hexdigest()
    supplied = values["signature"].strip().lower().encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(expected.encode("ascii"), supplied):
        raise SignatureMismatch("body.signature.signature", "does not match")
