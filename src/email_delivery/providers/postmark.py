"""Postmark webhooks: one JSON object per request, ``RecordType`` saying which.

Postmark does not sign its webhooks. Protect the endpoint with HTTP basic auth — put the
credentials in the webhook URL (``https://user:password@example.com/webhooks/postmark``)
and pass ``basic_auth=("user", "password")`` to :func:`parse`, which then refuses a request
without them — and/or allow only Postmark's webhook source IPs at your load balancer
(https://postmarkapp.com/support/article/800-ips-for-firewalls#webhooks). A secret path
segment is the weakest of the three.

Mapping (``RecordType``; for ``Bounce`` records the bounce ``Type``):

=========================================  ==========  =====================================
Postmark                                   kind        ``permanent`` / notes
=========================================  ==========  =====================================
``Delivery``                               delivered
``Open``                                   opened
``Click``                                  clicked
``SpamComplaint``                          complained
``SubscriptionChange``                     (ignored)   a suppression-list change
``Bounce`` ``HardBounce``                  bounced     ``True``
``Bounce`` ``SoftBounce``                  bounced     ``False``
``Bounce`` ``Blocked``                     bounced     ``False`` (the ISP blocked it)
``Bounce`` ``SpamNotification``            bounced     ``False`` (a filter called it spam)
``Bounce`` ``VirusNotification``           bounced     ``False``
``Bounce`` ``DMARCPolicy``                 bounced     ``True`` (refused: sender's DMARC)
``Bounce`` ``Unknown``, or a type not      bounced     ``None``
listed here
``Bounce`` ``Transient``                   deferred    message delayed; Postmark retries
``Bounce`` ``DnsError``                    deferred    a temporary DNS error
``Bounce`` ``SpamComplaint``               complained
``Bounce`` ``BadEmailAddress``             rejected    Postmark refused to send
``Bounce`` ``ManuallyDeactivated``         rejected
``Bounce`` ``Unconfirmed``                 rejected    sender signature not confirmed
``Bounce`` ``SMTPApiError``                rejected
``Bounce`` ``TemplateRenderingFailed``     rejected
``Bounce`` ``Unsubscribe``, ``Subscribe``, (ignored)   replies and tests, not outcomes
``AutoResponder``, ``AddressChange``,
``OpenRelayTest``,
``ChallengeVerification``, ``InboundError``
``Inbound`` (or no ``RecordType``)         error       the inbound webhook points here
any other ``RecordType``                   error       ``InvalidWebhook("body.RecordType")``
=========================================  ==========  =====================================

Fields: ``event_id`` is the bounce ``ID`` (bounce and spam-complaint records); Delivery,
Open and Click records have no id, so theirs is the SHA-256 of the record's canonical JSON
(each open and click has its own ``ReceivedAt``, so two of them differ, and Postmark's
retry of the same record hashes the same). ``provider_message_id`` is ``MessageID`` (the
``MessageID`` of Postmark's send response). ``delivery_id`` is ``Metadata.delivery_id``.
``recipient`` is ``Email`` (bounces, complaints) or ``Recipient``. ``occurred_at`` is
``BouncedAt``, ``DeliveredAt`` or ``ReceivedAt``. ``reason`` is ``Details`` (the remote
server's answer), else ``Description``; ``smtp_code`` is read from the start of
``Details`` (``smtp;550 5.1.1 …``). ``provider_event_type`` is the bounce ``Type`` for
bounce records (``HardBounce``) and the ``RecordType`` otherwise.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Mapping

from email_delivery.errors import InvalidInput
from email_delivery.providers._parsing import (
    Headers,
    as_object,
    canonical_sha256,
    iso_timestamp,
    key_path,
    load_json,
    one_delivery_id,
    optional_object,
    optional_str,
    reason,
    recipient,
    required,
    required_str,
    smtp_code_in,
)
from email_delivery.providers.errors import InvalidWebhook, SignatureMismatch
from email_delivery.providers.events import DELIVERY_ID_KEY, OutcomeKind, ProviderEvent

__all__ = ["BOUNCE_TYPES", "parse"]

PROVIDER = "postmark"

BOUNCE_TYPES: Mapping[str, tuple[OutcomeKind, bool | None] | None] = {
    "HardBounce": (OutcomeKind.BOUNCED, True),
    "SoftBounce": (OutcomeKind.BOUNCED, False),
    "Blocked": (OutcomeKind.BOUNCED, False),
    "SpamNotification": (OutcomeKind.BOUNCED, False),
    "VirusNotification": (OutcomeKind.BOUNCED, False),
    "DMARCPolicy": (OutcomeKind.BOUNCED, True),
    "Unknown": (OutcomeKind.BOUNCED, None),
    "Transient": (OutcomeKind.DEFERRED, None),
    "DnsError": (OutcomeKind.DEFERRED, None),
    "SpamComplaint": (OutcomeKind.COMPLAINED, None),
    "BadEmailAddress": (OutcomeKind.REJECTED, None),
    "ManuallyDeactivated": (OutcomeKind.REJECTED, None),
    "Unconfirmed": (OutcomeKind.REJECTED, None),
    "SMTPApiError": (OutcomeKind.REJECTED, None),
    "TemplateRenderingFailed": (OutcomeKind.REJECTED, None),
    "Unsubscribe": None,
    "Subscribe": None,
    "AutoResponder": None,
    "AddressChange": None,
    "OpenRelayTest": None,
    "ChallengeVerification": None,
    "InboundError": None,
}
"""Bounce ``Type`` -> (kind, permanent), or ``None`` when the record is ignored. A type not
listed is a bounce of undetermined permanence."""

_RECORDS = {
    # RecordType: (kind, recipient key, timestamp key)
    "Delivery": (OutcomeKind.DELIVERED, "Recipient", "DeliveredAt"),
    "Open": (OutcomeKind.OPENED, "Recipient", "ReceivedAt"),
    "Click": (OutcomeKind.CLICKED, "Recipient", "ReceivedAt"),
    "SpamComplaint": (OutcomeKind.COMPLAINED, "Email", "BouncedAt"),
    "Bounce": (OutcomeKind.BOUNCED, "Email", "BouncedAt"),
}
_IGNORED_RECORDS = frozenset({"SubscriptionChange"})


def parse(
    body: bytes,
    headers: Mapping[str, str],
    *,
    basic_auth: tuple[str, str] | None = None,
) -> list[ProviderEvent]:
    """The event of one Postmark webhook request (``[]`` when it is ignored).

    ``basic_auth``: ``(user, password)`` the request's ``Authorization`` header must carry;
    ``None`` checks nothing (then restrict the endpoint otherwise, see the module docstring).
    """
    request_headers = Headers(headers)
    if basic_auth is not None:
        _check_basic_auth(request_headers, basic_auth)
    record = as_object(load_json(body), "body")
    path = "body"
    record_type = record.get("RecordType")
    if record_type is None or record_type == "Inbound":
        if record_type == "Inbound" or "FromFull" in record:
            raise InvalidWebhook(
                "body.RecordType", "an inbound message: Postmark's inbound webhook points here"
            )
        raise InvalidWebhook("body.RecordType", "is required")
    record_type = required_str(record, "RecordType", path)
    if record_type in _IGNORED_RECORDS:
        return []
    if record_type not in _RECORDS:
        raise InvalidWebhook("body.RecordType", f"unknown Postmark record type {record_type!r}")
    kind, recipient_key, time_key = _RECORDS[record_type]

    permanent: bool | None = None
    provider_event_type = record_type
    if record_type == "Bounce":
        provider_event_type = required_str(record, "Type", path)
        if provider_event_type in BOUNCE_TYPES:
            mapped = BOUNCE_TYPES[provider_event_type]
            if mapped is None:
                return []
            kind, permanent = mapped
        else:
            kind, permanent = OutcomeKind.BOUNCED, None

    if record_type in ("Bounce", "SpamComplaint"):
        event_id = _record_id(required(record, "ID", path))
    else:
        event_id = canonical_sha256(record)
    details = optional_str(record, "Details", path)
    description = optional_str(record, "Description", path)
    metadata = optional_object(record, "Metadata", path) or {}
    return [
        ProviderEvent(
            provider=PROVIDER,
            event_id=event_id,
            kind=kind,
            occurred_at=iso_timestamp(record.get(time_key), key_path(path, time_key)),
            provider_message_id=required_str(record, "MessageID", path),
            delivery_id=one_delivery_id(
                [(f"body.Metadata.{DELIVERY_ID_KEY}", metadata.get(DELIVERY_ID_KEY))]
            ),
            recipient=recipient(record.get(recipient_key), key_path(path, recipient_key)),
            permanent=permanent,
            reason=reason(details or description),
            smtp_code=smtp_code_in(details),
            provider_event_type=provider_event_type,
        )
    ]


def _record_id(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).strip():
        raise InvalidWebhook("body.ID", "must be a number or a non-empty string")
    return str(value).strip()


def _check_basic_auth(headers: Headers, credentials: tuple[str, str]) -> None:
    if (
        not isinstance(credentials, tuple)
        or len(credentials) != 2
        or not all(isinstance(part, str) and part for part in credentials)
        or ":" in credentials[0]
    ):
        raise InvalidInput("basic_auth", "must be a (user, password) pair of non-empty strings")
    supplied = headers.require_for_signature("Authorization")
    scheme, _, token = supplied.partition(" ")
    user, password = credentials
    expected = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    if scheme.lower() != "basic" or not hmac.compare_digest(
        token.strip().encode("utf-8", "surrogateescape"), expected.encode("ascii")
    ):
        raise SignatureMismatch("headers.authorization", "wrong credentials")
