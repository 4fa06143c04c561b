"""Twilio SendGrid Event Webhook: a JSON array of events per request (a batch).

Signature (the *Signed Event Webhook*, enable it in the mail settings): header
``X-Twilio-Email-Event-Webhook-Signature`` is the base64 ECDSA (P-256, SHA-256) signature
of header ``X-Twilio-Email-Event-Webhook-Timestamp`` (Unix seconds) followed by the raw
body, verified with the verification key SendGrid shows (base64 DER; PEM works too). The
timestamp must be within ``tolerance`` (5 minutes) of now, either way. Pass
``public_key=None`` only when the endpoint is authenticated otherwise (OAuth, basic auth):
nothing is verified then.

Mapping (``event``):

=========================  ==========  ================================================
SendGrid event             kind        notes
=========================  ==========  ================================================
``processed``              (ignored)   SendGrid accepted the message
``deferred``               deferred    SendGrid keeps retrying (``response``)
``delivered``              delivered   ``response``
``bounce``                 bounced     ``type`` ``bounce`` -> permanent, ``blocked``
                                       -> soft, absent -> ``None``
``dropped``                rejected    not sent (``reason``: "Bounced Address",
                                       "Unsubscribed Address", "Invalid", …)
``open``                   opened
``click``                  clicked
``spamreport``             complained
``unsubscribe``,           (ignored)   subscription changes, not delivery outcomes
``group_unsubscribe``,
``group_resubscribe``
``account_status_change``  (ignored)   about the account, not a message
anything else              error       ``InvalidWebhook("body[i].event")``
=========================  ==========  ================================================

One bad event refuses the whole batch (nothing is returned half-parsed); SendGrid then
retries the batch. Duplicates are returned as they come: the same event twice has the same
``event_id``.

Fields: ``event_id`` is ``sg_event_id`` (SHA-256 of the event's canonical JSON if absent).
``provider_message_id`` is ``sg_message_id`` up to its first ``.`` — the ``X-Message-Id``
header SendGrid's v3 send API returns (``sg_message_id`` appends a filter suffix).
``delivery_id`` is the custom argument ``delivery_id`` (``custom_args`` come back as
top-level keys of each event). ``recipient`` is ``email``; ``occurred_at`` is ``timestamp``.
``reason`` is ``response`` (delivered, deferred) or ``bounce_classification: reason``
(bounce, dropped); ``smtp_code`` is read from the start of it (``550 5.1.1 …``).
"""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING

from email_delivery.providers import _crypto
from email_delivery.providers._parsing import (
    DEFAULT_TOLERANCE,
    Headers,
    JsonObject,
    as_list,
    as_object,
    canonical_sha256,
    check_fresh,
    check_tolerance,
    epoch_timestamp,
    key_path,
    load_json,
    one_delivery_id,
    optional_str,
    reason,
    recipient,
    required,
    required_str,
    smtp_code_in,
    unix_seconds,
)
from email_delivery.providers.errors import InvalidWebhook, SignatureMismatch
from email_delivery.providers.events import DELIVERY_ID_KEY, OutcomeKind, ProviderEvent

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "parse", "verify_signature"]

PROVIDER = "sendgrid"
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

_KINDS = {
    "deferred": OutcomeKind.DEFERRED,
    "delivered": OutcomeKind.DELIVERED,
    "bounce": OutcomeKind.BOUNCED,
    "dropped": OutcomeKind.REJECTED,
    "open": OutcomeKind.OPENED,
    "click": OutcomeKind.CLICKED,
    "spamreport": OutcomeKind.COMPLAINED,
}
_IGNORED = frozenset(
    {
        "processed",
        "unsubscribe",
        "group_unsubscribe",
        "group_resubscribe",
        "account_status_change",
    }
)
_BOUNCE_PERMANENT = {"bounce": True, "blocked": False}


def parse(
    body: bytes,
    headers: Mapping[str, str],
    *,
    public_key: str | None,
    tolerance: timedelta = DEFAULT_TOLERANCE,
) -> list[ProviderEvent]:
    """The events of one SendGrid batch, in body order, ignored ones left out; the
    signature is checked first unless ``public_key`` is ``None``."""
    if public_key is not None:
        verify_signature(body, headers, public_key=public_key, tolerance=tolerance)
    batch = as_list(load_json(body), "body")
    events: list[ProviderEvent] = []
    for index, item in enumerate(batch):
        path = key_path("body", index)
        event = _event(as_object(item, path), path)
        if event is not None:
            events.append(event)
    return events


def _event(item: JsonObject, path: str) -> ProviderEvent | None:
    event_type = required_str(item, "event", path)
    if event_type in _IGNORED:
        return None
    kind = _KINDS.get(event_type)
    if kind is None:
        raise InvalidWebhook(key_path(path, "event"), f"unknown SendGrid event {event_type!r}")

    permanent: bool | None = None
    if kind is OutcomeKind.BOUNCED:
        permanent = _BOUNCE_PERMANENT.get(optional_str(item, "type", path) or "")
    if kind in (OutcomeKind.BOUNCED, OutcomeKind.REJECTED):
        cause = optional_str(item, "reason", path)
        text = reason(optional_str(item, "bounce_classification", path), cause)
        code = smtp_code_in(cause)
    else:
        response = optional_str(item, "response", path)
        text = reason(response)
        code = smtp_code_in(response)

    event_id = optional_str(item, "sg_event_id", path) or canonical_sha256(item)
    message_id = optional_str(item, "sg_message_id", path)
    return ProviderEvent(
        provider=PROVIDER,
        event_id=event_id,
        kind=kind,
        occurred_at=epoch_timestamp(required(item, "timestamp", path), key_path(path, "timestamp")),
        provider_message_id=message_id.split(".", 1)[0] if message_id else None,
        delivery_id=one_delivery_id([(key_path(path, DELIVERY_ID_KEY), item.get(DELIVERY_ID_KEY))]),
        recipient=recipient(item.get("email"), key_path(path, "email")),
        permanent=permanent,
        reason=text,
        smtp_code=code,
        provider_event_type=event_type,
    )


@functools.lru_cache(maxsize=8)
def _public_key(public_key: str) -> EllipticCurvePublicKey:
    return _crypto.load_ecdsa_public_key(public_key)


def verify_signature(
    body: bytes,
    headers: Mapping[str, str],
    *,
    public_key: str,
    tolerance: timedelta = DEFAULT_TOLERANCE,
) -> None:
    """Check the Signed Event Webhook signature; ``SignatureMismatch`` names the header at
    fault. ``public_key`` is the verification key (base64 DER, or PEM)."""
    check_tolerance(tolerance)
    key = _public_key(public_key)
    request_headers = Headers(headers)
    signature_text = request_headers.require_for_signature(SIGNATURE_HEADER)
    timestamp = request_headers.require_for_signature(TIMESTAMP_HEADER)
    if not isinstance(body, bytes | bytearray | memoryview):
        raise InvalidWebhook("body", "must be the raw request body (bytes)")
    signature_field = f"headers.{SIGNATURE_HEADER.lower()}"
    try:
        signature = base64.b64decode(signature_text, validate=True)
    except binascii.Error:
        raise SignatureMismatch(signature_field, "not base64") from None
    timestamp_field = f"headers.{TIMESTAMP_HEADER.lower()}"
    signed_at = unix_seconds(timestamp, timestamp_field)
    check_fresh(signed_at, tolerance, timestamp_field)
    _crypto.verify_ecdsa_sha256(
        key, signature, timestamp.encode("ascii") + bytes(body), field=signature_field
    )
