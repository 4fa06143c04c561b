"""Resend webhooks: one JSON event per request, signed by Svix (Standard Webhooks).

Signature: headers ``svix-id``, ``svix-timestamp`` (Unix seconds) and ``svix-signature``
(space-separated ``v1,<base64>`` entries; any one may match); the ``webhook-*`` names of the
Standard Webhooks specification are accepted too. The signature is HMAC-SHA256, keyed with
the base64 part of the endpoint's ``whsec_…`` secret, over ``<id>.<timestamp>.<raw body>``.
The timestamp must be within ``tolerance`` (5 minutes) of now, either way; Svix signs each
retry afresh, so a retry is never stale. This is implemented here with the standard library
and tested against the ``standardwebhooks`` reference package.

Mapping (``type``):

===========================  ==========  ===============================================
Resend type                  kind        notes
===========================  ==========  ===============================================
``email.sent``               (ignored)   Resend accepted the request
``email.scheduled``          (ignored)
``email.delivered``          delivered
``email.delivery_delayed``   deferred
``email.bounced``            bounced     ``data.bounce.type`` ``Permanent`` -> permanent,
                                         ``Transient`` -> soft, other/absent -> ``None``
``email.complained``         complained
``email.opened``             opened
``email.clicked``            clicked
``email.failed``             rejected    not sent (``data.failed.reason``)
``email.suppressed``         rejected    not sent: the address is on the suppression list
``email.received``           (ignored)   inbound mail, not an outcome of ours
``contact.*``, ``domain.*``, (ignored)   events about other resources
``suppression.*``,
``inbox.*``
other ``email.*``            error       ``InvalidWebhook("body.type")``
===========================  ==========  ===============================================

Fields: ``event_id`` is the ``svix-id`` header (``msg_…``: unique per event, the same on
every retry). ``provider_message_id`` is ``data.email_id`` (the ``id`` Resend's send API
returns). ``delivery_id`` is the tag ``delivery_id`` in ``data.tags`` (an object, or a list
of ``{"name", "value"}``) or the header ``X-Email-Delivery-Id`` in ``data.headers`` when
Resend includes headers; both present must agree. ``recipient`` is ``data.to`` when it has
exactly one address (Resend does not say which recipient of several an event is about).
``occurred_at`` is the top-level ``created_at``. ``reason``: bounces
``type/subType: message``, failures ``failed.reason``, suppressions
``suppressed.type: message``. Resend gives no SMTP code.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from datetime import timedelta

from email_delivery.errors import InvalidInput
from email_delivery.providers._parsing import (
    DEFAULT_TOLERANCE,
    Headers,
    JsonObject,
    as_list,
    as_object,
    check_fresh,
    check_tolerance,
    header_value,
    iso_timestamp,
    key_path,
    load_json,
    one_delivery_id,
    optional_object,
    optional_str,
    reason,
    required_object,
    required_str,
    smtp_code_in,
    sole_recipient,
    unix_seconds,
)
from email_delivery.providers.errors import InvalidWebhook, SignatureMismatch
from email_delivery.providers.events import (
    DELIVERY_ID_HEADER,
    DELIVERY_ID_KEY,
    OutcomeKind,
    ProviderEvent,
)

__all__ = ["parse", "verify_signature"]

PROVIDER = "resend"

_KINDS = {
    "email.delivered": OutcomeKind.DELIVERED,
    "email.delivery_delayed": OutcomeKind.DEFERRED,
    "email.bounced": OutcomeKind.BOUNCED,
    "email.complained": OutcomeKind.COMPLAINED,
    "email.opened": OutcomeKind.OPENED,
    "email.clicked": OutcomeKind.CLICKED,
    "email.failed": OutcomeKind.REJECTED,
    "email.suppressed": OutcomeKind.REJECTED,
}
_IGNORED = frozenset({"email.sent", "email.scheduled", "email.received"})
_BOUNCE_PERMANENT = {"Permanent": True, "Transient": False}


def parse(
    body: bytes,
    headers: Mapping[str, str],
    *,
    secret: str,
    tolerance: timedelta = DEFAULT_TOLERANCE,
) -> list[ProviderEvent]:
    """The event of one Resend webhook request (``[]`` when it is ignored), after
    :func:`verify_signature`."""
    event_id = verify_signature(body, headers, secret=secret, tolerance=tolerance)
    event = as_object(load_json(body), "body")
    event_type = required_str(event, "type", "body")
    if event_type in _IGNORED or not event_type.startswith("email."):
        return []
    kind = _KINDS.get(event_type)
    if kind is None:
        raise InvalidWebhook("body.type", f"unknown Resend event type {event_type!r}")

    path = "body.data"
    data = required_object(event, "data", "body")
    permanent: bool | None = None
    text: str | None = None
    if event_type == "email.bounced":
        bounce_path = key_path(path, "bounce")
        bounce = optional_object(data, "bounce", path) or {}
        bounce_type = optional_str(bounce, "type", bounce_path)
        sub_type = optional_str(bounce, "subType", bounce_path)
        permanent = _BOUNCE_PERMANENT.get(bounce_type or "")
        label = f"{bounce_type}/{sub_type}" if bounce_type and sub_type else bounce_type
        text = reason(label, optional_str(bounce, "message", bounce_path))
    elif event_type == "email.failed":
        failed = optional_object(data, "failed", path) or {}
        text = reason(optional_str(failed, "reason", key_path(path, "failed")))
    elif event_type == "email.suppressed":
        suppressed_path = key_path(path, "suppressed")
        suppressed = optional_object(data, "suppressed", path) or {}
        text = reason(
            optional_str(suppressed, "type", suppressed_path),
            optional_str(suppressed, "message", suppressed_path),
        )

    return [
        ProviderEvent(
            provider=PROVIDER,
            event_id=event_id,
            kind=kind,
            occurred_at=iso_timestamp(event.get("created_at"), "body.created_at"),
            provider_message_id=required_str(data, "email_id", path),
            delivery_id=_delivery_id(data, path),
            recipient=_recipient(data, path),
            permanent=permanent,
            reason=text,
            smtp_code=smtp_code_in(text),
            provider_event_type=event_type,
        )
    ]


def _recipient(data: JsonObject, path: str) -> str | None:
    to = data.get("to")
    field = key_path(path, "to")
    if to is None:
        return None
    if isinstance(to, str):
        to = [to]
    return sole_recipient(as_list(to, field), field)


def _delivery_id(data: JsonObject, path: str) -> str | None:
    tags_field = key_path(path, "tags")
    tags = data.get("tags")
    tag: object = None
    if isinstance(tags, dict):
        tag = tags.get(DELIVERY_ID_KEY)
        tags_field = key_path(tags_field, DELIVERY_ID_KEY)
    elif tags is not None:
        # The send API's form: [{"name": "delivery_id", "value": "…"}].
        tag = header_value(tags, DELIVERY_ID_KEY, tags_field)
        tags_field = f"{tags_field}[{DELIVERY_ID_KEY}]"
    headers_field = key_path(path, "headers")
    header = header_value(data.get("headers"), DELIVERY_ID_HEADER, headers_field)
    return one_delivery_id([(tags_field, tag), (f"{headers_field}[{DELIVERY_ID_HEADER}]", header)])


def _secret_key(secret: str) -> bytes:
    if not isinstance(secret, str) or not secret.strip():
        raise InvalidInput("secret", "must be the endpoint's signing secret (whsec_…)")
    text = secret.strip().removeprefix("whsec_")
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raise InvalidInput("secret", "not a whsec_ secret (base64 after the prefix)") from None
    if not key:
        raise InvalidInput("secret", "may not be empty")
    return key


def verify_signature(
    body: bytes,
    headers: Mapping[str, str],
    *,
    secret: str,
    tolerance: timedelta = DEFAULT_TOLERANCE,
) -> str:
    """Check the Svix / Standard Webhooks signature of a request; return its message id
    (``svix-id``). Raises ``SignatureMismatch`` naming the header at fault."""
    check_tolerance(tolerance)
    key = _secret_key(secret)
    request_headers = Headers(headers)
    prefix = (
        "webhook"
        if request_headers.get("svix-id") is None
        and (request_headers.get("webhook-id") is not None)
        else "svix"
    )
    message_id = request_headers.require_for_signature(f"{prefix}-id")
    timestamp = request_headers.require_for_signature(f"{prefix}-timestamp")
    signatures = request_headers.require_for_signature(f"{prefix}-signature")
    if not isinstance(body, bytes | bytearray | memoryview):
        raise InvalidWebhook("body", "must be the raw request body (bytes)")
    signed_at = unix_seconds(timestamp, f"headers.{prefix}-timestamp")
    check_fresh(signed_at, tolerance, f"headers.{prefix}-timestamp")

    expected = hmac.new(
        key, f"{message_id}.{timestamp}.".encode() + bytes(body), hashlib.sha256
    ).digest()
    for entry in signatures.split():
        version, _, encoded = entry.partition(",")
        if version != "v1":
            continue
        try:
            candidate = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            continue
        if hmac.compare_digest(candidate, expected):
            return message_id
    raise SignatureMismatch(f"headers.{prefix}-signature", "no v1 signature matches the body")
