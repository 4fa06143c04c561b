"""Amazon SES sending events, delivered to an HTTPS endpoint by Amazon SNS.

SES publishes either *event publishing* records (a configuration set with an SNS event
destination: ``eventType``, message tags included) or *feedback notifications* set on the
identity (``notificationType``, no tags). SNS posts each one inside its own JSON envelope::

    {"Type": "Notification", "MessageId": "…", "TopicArn": "arn:aws:sns:…",
     "Message": "<the SES record, as a JSON string>", "Timestamp": "…",
     "SignatureVersion": "1", "Signature": "…", "SigningCertURL": "https://sns.…pem"}

:func:`parse` verifies every message's signature before reading it: the RSA signature
(``SignatureVersion`` 1 = SHA1withRSA, 2 = SHA256withRSA) over SNS's canonical string, with
the certificate at ``SigningCertURL``, which must be
``https://sns.<region>.amazonaws.com/….pem`` (anything else is refused before it is
fetched). The certificate is fetched by ``fetch_certificate`` (default
:func:`download_certificate`: an HTTPS GET, cached per URL). Pass ``topic_arns`` — the
topics you subscribed — because anyone can point an SNS topic of their own, validly signed
by AWS, at your endpoint. Use *raw message delivery* off: a raw body carries no signature and is
refused.

``Type: SubscriptionConfirmation`` returns a :class:`SubscriptionConfirmation`; confirm it
with :func:`confirm_subscription` (it GETs ``SubscribeURL`` only when that is an SNS URL of
the topic's region) or in the SNS console. ``UnsubscribeConfirmation`` returns ``[]``.

SNS retries a failed delivery with the same ``MessageId``, ``Timestamp`` and signature, so
``tolerance`` (how old ``Timestamp`` may be) is off by default; the ``MessageId`` makes a
replayed message a duplicate event, not a new one.

Mapping (``eventType``, or ``notificationType`` for feedback notifications):

==================================  ==========  ==========================================
SES type                            kind        notes
==================================  ==========  ==========================================
``Send``                            (ignored)   SES accepted the request
``Delivery``                        delivered   one event per ``delivery.recipients``
``DeliveryDelay``                   deferred    one per ``deliveryDelay.delayedRecipients``
``Bounce``                          bounced     one per ``bounce.bouncedRecipients``;
                                                ``bounceType`` ``Permanent`` -> permanent,
                                                ``Transient`` -> soft, ``Undetermined``
                                                (or another) -> ``None``
``Complaint``                       complained  one per ``complaint.complainedRecipients``
``Reject``                          rejected    SES found a virus and did not send
``Rendering Failure``               rejected    the template did not render; not sent
``Open``                            opened
``Click``                           clicked
``Subscription``                    (ignored)   a subscription-preference change
``AmazonSnsSubscriptionSucceeded``  (ignored)   SES's test notification for a new topic
``Received``                        error       an inbound (receiving) notification
anything else                       error       ``InvalidWebhook`` naming the type field
==================================  ==========  ==========================================

Events that name no recipient (``Reject``, ``Rendering Failure``, ``Open``, ``Click``) carry
the message's destination when it has exactly one, else ``None``.

Fields: ``event_id`` is the SNS ``MessageId`` (unique per notification, the same on SNS
retries); when one notification names several recipients each event's id is
``MessageId:recipient``. ``provider_message_id`` is ``mail.messageId`` (the ``MessageId``
that ``SendEmail``/``SendRawEmail`` returned). ``delivery_id`` is the message tag
``mail.tags.delivery_id[0]`` (event publishing) or the header ``X-Email-Delivery-Id`` in
``mail.headers``; when both are there they must agree. ``occurred_at`` is the event object's
``timestamp`` (bounce, delivery, open…), else the SNS ``Timestamp``. ``reason``: bounces
``bounceType/bounceSubType: diagnosticCode``, complaints ``complaintFeedbackType``, delays
``delayType: diagnosticCode``, rejects ``reject.reason``, rendering failures
``failure.errorMessage``, deliveries ``smtpResponse``. ``smtp_code`` is read from the start
of the diagnostic or SMTP response (``smtp; 550 5.1.1 …`` -> 550).
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
import ssl
import urllib.request
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from email_delivery.errors import InvalidInput
from email_delivery.providers import _crypto
from email_delivery.providers._parsing import (
    Headers,
    JsonObject,
    as_object,
    check_fresh,
    check_tolerance,
    header_value,
    iso_timestamp,
    key_path,
    load_json,
    load_json_text,
    one_delivery_id,
    optional_list,
    optional_object,
    optional_str,
    reason,
    recipient,
    required_list,
    required_object,
    required_str,
    smtp_code_in,
    sole_recipient,
)
from email_delivery.providers.errors import InvalidWebhook, SignatureMismatch
from email_delivery.providers.events import (
    DELIVERY_ID_HEADER,
    DELIVERY_ID_KEY,
    OutcomeKind,
    ProviderEvent,
)

__all__ = [
    "CertificateFetcher",
    "SubscriptionConfirmation",
    "confirm_subscription",
    "download_certificate",
    "is_sns_url",
    "parse",
]

PROVIDER = "ses"

CertificateFetcher = Callable[[str], bytes]
"""Given a checked ``https://sns.<region>.amazonaws.com/….pem`` URL, the PEM it serves."""

_SNS_HOST = re.compile(r"^sns\.([a-z]{2}(?:-[a-z]+)+-[0-9]+)\.amazonaws\.com$")
_MAX_DOWNLOAD = 64 * 1024
_TIMEOUT_SECONDS = 10.0
_TYPES = ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")
# The fields SNS signs, in the order of its canonical string.
_SIGNED_NOTIFICATION = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_SIGNED_CONFIRMATION = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)
# SES's first message to a new event destination is this sentence, not JSON.
_EVENT_PUBLISHING_TEST = "Successfully validated SNS topic for Amazon SES event publishing."


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionConfirmation:
    """SNS asks this endpoint to confirm a subscription (signature verified). Confirm it
    with :func:`confirm_subscription` only if ``topic_arn`` is a topic you subscribed."""

    topic_arn: str
    subscribe_url: str
    token: str
    message_id: str
    timestamp: datetime


def parse(
    body: bytes,
    headers: Mapping[str, str],
    *,
    topic_arns: Collection[str] | None,
    fetch_certificate: CertificateFetcher | None = None,
    tolerance: timedelta | None = None,
) -> list[ProviderEvent] | SubscriptionConfirmation:
    """The events of one SNS message (``[]`` for an ignored one), or the subscription
    confirmation it asks for.

    ``topic_arns``: the topic ARNs this endpoint accepts; ``None`` accepts any topic (only
    when something else authenticates the request). ``fetch_certificate``: see
    :data:`CertificateFetcher` (default :func:`download_certificate`); an error it raises
    propagates (answer 5xx so that SNS retries). ``tolerance``: refuse messages whose
    ``Timestamp`` is further than this from now (off by default, see the module docstring).
    """
    check_tolerance(tolerance, optional=True)
    if topic_arns is not None and (
        isinstance(topic_arns, str) or not all(isinstance(arn, str) for arn in topic_arns)
    ):
        raise InvalidInput("topic_arns", "must be a collection of topic ARNs, or None")
    request_headers = Headers(headers)
    envelope = as_object(load_json(body), "body")
    message_type = required_str(envelope, "Type", "body")
    if message_type not in _TYPES:
        raise InvalidWebhook("body.Type", f"not an SNS HTTP message type: {message_type!r}")
    _check_header(request_headers, "x-amz-sns-message-type", message_type, "Type")
    topic_arn = required_str(envelope, "TopicArn", "body")
    _check_header(request_headers, "x-amz-sns-topic-arn", topic_arn, "TopicArn")
    message_id = required_str(envelope, "MessageId", "body")
    _check_header(request_headers, "x-amz-sns-message-id", message_id, "MessageId")
    if topic_arns is not None and topic_arn not in topic_arns:
        raise InvalidWebhook("body.TopicArn", f"not one of the expected topics: {topic_arn!r}")

    signed_at = iso_timestamp(envelope.get("Timestamp"), "body.Timestamp")
    _verify_signature(envelope, message_type, fetch_certificate or download_certificate)
    if tolerance is not None:
        check_fresh(signed_at, tolerance, "body.Timestamp")

    if message_type == "UnsubscribeConfirmation":
        return []
    if message_type == "SubscriptionConfirmation":
        subscribe_url = required_str(envelope, "SubscribeURL", "body")
        if not is_sns_url(subscribe_url, topic_arn=topic_arn):
            raise InvalidWebhook("body.SubscribeURL", "not an SNS ConfirmSubscription URL")
        return SubscriptionConfirmation(
            topic_arn=topic_arn,
            subscribe_url=subscribe_url,
            token=required_str(envelope, "Token", "body"),
            message_id=message_id,
            timestamp=signed_at,
        )

    text = required_str(envelope, "Message", "body")
    if text.strip() == _EVENT_PUBLISHING_TEST:
        return []
    record = as_object(load_json_text(text, "body.Message"), "body.Message")
    return _events(record, message_id=message_id, published_at=signed_at)


def _check_header(headers: Headers, name: str, expected: str, key: str) -> None:
    value = headers.get(name)
    if value is not None and value != expected:
        raise InvalidWebhook(f"headers.{name}", f"does not match body.{key}")


# -- signatures --------------------------------------------------------------------------------


def is_sns_url(url: str, *, topic_arn: str | None = None, certificate: bool = False) -> bool:
    """Whether ``url`` is an ``https://sns.<region>.amazonaws.com/`` URL: a certificate
    (``certificate=True``: path ending ``.pem``, no query) or a ConfirmSubscription link for
    ``topic_arn`` (its region, ``Action=ConfirmSubscription``, that ``TopicArn``, a token)."""
    if not isinstance(url, str) or any(ch.isspace() or ord(ch) < 32 for ch in url):
        return False
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    host = _SNS_HOST.fullmatch(parts.hostname or "")
    if (
        parts.scheme != "https"
        or host is None
        or port not in (None, 443)
        or parts.username is not None
        or parts.password is not None
        or parts.fragment
        or parts.netloc.lower() not in (host.group(0), f"{host.group(0)}:443")
    ):
        return False
    if certificate:
        return parts.path.endswith(".pem") and not parts.query
    query = parse_qs(parts.query, strict_parsing=False)
    return (
        parts.path in ("", "/")
        and query.get("Action") == ["ConfirmSubscription"]
        and bool(query.get("Token"))
        and (topic_arn is None or query.get("TopicArn") == [topic_arn])
        and (topic_arn is None or _region(topic_arn) == host.group(1))
    )


def _region(topic_arn: str) -> str | None:
    parts = topic_arn.split(":")
    return parts[3] if len(parts) >= 6 and parts[0] == "arn" and parts[2] == "sns" else None


def _verify_signature(envelope: JsonObject, message_type: str, fetch: CertificateFetcher) -> None:
    version = envelope.get("SignatureVersion")
    if version not in ("1", "2"):
        raise SignatureMismatch("body.SignatureVersion", 'must be "1" or "2"')
    url = envelope.get("SigningCertURL")
    if not isinstance(url, str) or not is_sns_url(url, certificate=True):
        raise SignatureMismatch(
            "body.SigningCertURL", "must be an https://sns.<region>.amazonaws.com/….pem URL"
        )
    signature_text = envelope.get("Signature")
    if not isinstance(signature_text, str) or not signature_text:
        raise SignatureMismatch("body.Signature", "missing")
    try:
        signature = base64.b64decode(signature_text, validate=True)
    except binascii.Error:
        raise SignatureMismatch("body.Signature", "not base64") from None

    keys = _SIGNED_NOTIFICATION if message_type == "Notification" else _SIGNED_CONFIRMATION
    canonical = []
    for key in keys:
        value = envelope.get(key)
        if value is None and key == "Subject":
            continue
        if not isinstance(value, str):
            raise InvalidWebhook(f"body.{key}", "must be a string")
        canonical.append(f"{key}\n{value}\n")
    certificate = fetch(url)
    if not isinstance(certificate, bytes):
        raise TypeError("fetch_certificate must return the certificate's PEM bytes")
    _crypto.verify_certificate_signature(
        certificate,
        signature,
        "".join(canonical).encode("utf-8"),
        digest="sha1" if version == "1" else "sha256",
        field="body.Signature",
    )


def _https_get(url: str) -> bytes:
    context = ssl.create_default_context()
    request = urllib.request.Request(url, headers={"User-Agent": "email-delivery"})
    with urllib.request.urlopen(request, timeout=_TIMEOUT_SECONDS, context=context) as response:
        data: bytes = response.read(_MAX_DOWNLOAD + 1)
    if len(data) > _MAX_DOWNLOAD:
        raise OSError(f"{url}: response larger than {_MAX_DOWNLOAD} bytes")
    return data


@functools.lru_cache(maxsize=16)
def _cached_certificate(url: str) -> bytes:
    return _https_get(url)


def download_certificate(url: str) -> bytes:
    """The default :data:`CertificateFetcher`: an HTTPS GET (certificate-checked, 10 s
    timeout, 64 KiB at most), cached per URL for the life of the process."""
    if not is_sns_url(url, certificate=True):
        raise SignatureMismatch("body.SigningCertURL", "not an SNS certificate URL")
    return _cached_certificate(url)


def confirm_subscription(
    confirmation: SubscriptionConfirmation, *, get: Callable[[str], Any] | None = None
) -> None:
    """Confirm the subscription by GETting its ``SubscribeURL`` — only when that is an
    ``https://sns.<region>.amazonaws.com/?Action=ConfirmSubscription&TopicArn=<the topic>…``
    URL in the topic's own region; anything else raises ``InvalidWebhook`` and nothing is
    requested. ``get`` performs the request (default: an HTTPS GET, certificate-checked);
    its errors propagate."""
    if not is_sns_url(confirmation.subscribe_url, topic_arn=confirmation.topic_arn):
        raise InvalidWebhook(
            "subscribe_url", "not an SNS ConfirmSubscription URL for the topic's region"
        )
    (get or _https_get)(confirmation.subscribe_url)


# -- SES records -------------------------------------------------------------------------------


_IGNORED = frozenset({"Send", "Subscription", "AmazonSnsSubscriptionSucceeded"})
_BOUNCE_PERMANENT = {"Permanent": True, "Transient": False}


def _events(record: JsonObject, *, message_id: str, published_at: datetime) -> list[ProviderEvent]:
    path = "body.Message"
    type_key = "eventType" if "eventType" in record else "notificationType"
    event_type = required_str(record, type_key, path)
    type_field = key_path(path, type_key)
    if event_type in _IGNORED:
        return []
    if event_type == "Received":
        raise InvalidWebhook(type_field, "an inbound (receiving) notification, not a sending event")
    if event_type not in _HANDLERS:
        raise InvalidWebhook(type_field, f"unknown SES event type {event_type!r}")

    mail_path = key_path(path, "mail")
    mail = required_object(record, "mail", path)
    common = _Common(
        provider_message_id=required_str(mail, "messageId", mail_path),
        delivery_id=_delivery_id(mail, mail_path),
        destination=optional_list(mail, "destination", mail_path) or [],
        destination_field=key_path(mail_path, "destination"),
        published_at=published_at,
        event_type=event_type,
    )
    drafts = _HANDLERS[event_type](record, path, common)
    many = len(drafts) > 1
    return [
        ProviderEvent(
            provider=PROVIDER,
            event_id=f"{message_id}:{draft.recipient}" if many else message_id,
            kind=draft.kind,
            occurred_at=draft.occurred_at,
            provider_message_id=common.provider_message_id,
            delivery_id=common.delivery_id,
            recipient=draft.recipient,
            permanent=draft.permanent,
            reason=draft.reason,
            smtp_code=draft.smtp_code,
            provider_event_type=event_type,
        )
        for draft in drafts
    ]


@dataclass(frozen=True, slots=True)
class _Common:
    provider_message_id: str
    delivery_id: str | None
    destination: list[Any]
    destination_field: str
    published_at: datetime
    event_type: str

    def sole_destination(self) -> str | None:
        return sole_recipient(self.destination, self.destination_field)


@dataclass(frozen=True, slots=True)
class _Draft:
    kind: OutcomeKind
    occurred_at: datetime
    recipient: str | None
    permanent: bool | None = None
    reason: str | None = None
    smtp_code: int | None = None


def _delivery_id(mail: JsonObject, mail_path: str) -> str | None:
    tags_path = key_path(mail_path, "tags")
    tags = optional_object(mail, "tags", mail_path) or {}
    tag: object = tags.get(DELIVERY_ID_KEY)
    tag_field = key_path(tags_path, DELIVERY_ID_KEY)
    if isinstance(tag, list):
        tag_field = key_path(tag_field, 0)
        tag = tag[0] if tag else None
    headers_field = key_path(mail_path, "headers")
    header = header_value(mail.get("headers"), DELIVERY_ID_HEADER, headers_field)
    return one_delivery_id([(tag_field, tag), (f"{headers_field}[{DELIVERY_ID_HEADER}]", header)])


def _event_time(detail: JsonObject, detail_path: str, common: _Common) -> datetime:
    value = detail.get("timestamp")
    if value is None:
        return common.published_at
    return iso_timestamp(value, key_path(detail_path, "timestamp"))


def _delivery(record: JsonObject, path: str, common: _Common) -> list[_Draft]:
    detail_path = key_path(path, "delivery")
    detail = required_object(record, "delivery", path)
    response = optional_str(detail, "smtpResponse", detail_path)
    occurred_at = _event_time(detail, detail_path, common)
    recipients_path = key_path(detail_path, "recipients")
    recipients = required_list(detail, "recipients", detail_path)
    if not recipients:
        raise InvalidWebhook(recipients_path, "names no recipient")
    return [
        _Draft(
            kind=OutcomeKind.DELIVERED,
            occurred_at=occurred_at,
            recipient=recipient(address, key_path(recipients_path, index)),
            reason=reason(response),
            smtp_code=smtp_code_in(response),
        )
        for index, address in enumerate(recipients)
    ]


def _per_recipient(
    record: JsonObject,
    path: str,
    common: _Common,
    *,
    detail_key: str,
    recipients_key: str,
    kind: OutcomeKind,
    build: Callable[[JsonObject, JsonObject, str], _Draft],
) -> list[_Draft]:
    detail_path = key_path(path, detail_key)
    detail = required_object(record, detail_key, path)
    occurred_at = _event_time(detail, detail_path, common)
    recipients_path = key_path(detail_path, recipients_key)
    entries = optional_list(detail, recipients_key, detail_path)
    if not entries:
        if kind is OutcomeKind.DEFERRED:
            # A delay record may omit its recipients: it concerns the whole message.
            draft = build(detail, {}, detail_path)
            return [_with(draft, occurred_at, common.sole_destination())]
        raise InvalidWebhook(recipients_path, "names no recipient")
    drafts = []
    for index, entry in enumerate(entries):
        entry_path = key_path(recipients_path, index)
        item = as_object(entry, entry_path)
        address = recipient(item.get("emailAddress"), key_path(entry_path, "emailAddress"))
        drafts.append(_with(build(detail, item, entry_path), occurred_at, address))
    return drafts


def _with(draft: _Draft, occurred_at: datetime, address: str | None) -> _Draft:
    return _Draft(
        kind=draft.kind,
        occurred_at=occurred_at,
        recipient=address,
        permanent=draft.permanent,
        reason=draft.reason,
        smtp_code=draft.smtp_code,
    )


def _bounce(record: JsonObject, path: str, common: _Common) -> list[_Draft]:
    def build(detail: JsonObject, item: JsonObject, item_path: str) -> _Draft:
        detail_path = key_path(path, "bounce")
        bounce_type = required_str(detail, "bounceType", detail_path)
        sub_type = optional_str(detail, "bounceSubType", detail_path)
        diagnostic = optional_str(item, "diagnosticCode", item_path)
        label = f"{bounce_type}/{sub_type}" if sub_type else bounce_type
        return _Draft(
            kind=OutcomeKind.BOUNCED,
            occurred_at=common.published_at,
            recipient=None,
            permanent=_BOUNCE_PERMANENT.get(bounce_type),
            reason=reason(label, diagnostic),
            smtp_code=smtp_code_in(diagnostic),
        )

    return _per_recipient(
        record,
        path,
        common,
        detail_key="bounce",
        recipients_key="bouncedRecipients",
        kind=OutcomeKind.BOUNCED,
        build=build,
    )


def _complaint(record: JsonObject, path: str, common: _Common) -> list[_Draft]:
    def build(detail: JsonObject, item: JsonObject, item_path: str) -> _Draft:
        detail_path = key_path(path, "complaint")
        feedback = optional_str(detail, "complaintFeedbackType", detail_path)
        sub_type = optional_str(detail, "complaintSubType", detail_path)
        return _Draft(
            kind=OutcomeKind.COMPLAINED,
            occurred_at=common.published_at,
            recipient=None,
            reason=reason(feedback or sub_type),
        )

    return _per_recipient(
        record,
        path,
        common,
        detail_key="complaint",
        recipients_key="complainedRecipients",
        kind=OutcomeKind.COMPLAINED,
        build=build,
    )


def _delivery_delay(record: JsonObject, path: str, common: _Common) -> list[_Draft]:
    def build(detail: JsonObject, item: JsonObject, item_path: str) -> _Draft:
        detail_path = key_path(path, "deliveryDelay")
        delay_type = optional_str(detail, "delayType", detail_path)
        diagnostic = optional_str(item, "diagnosticCode", item_path) if item else None
        return _Draft(
            kind=OutcomeKind.DEFERRED,
            occurred_at=common.published_at,
            recipient=None,
            reason=reason(delay_type, diagnostic),
            smtp_code=smtp_code_in(diagnostic),
        )

    return _per_recipient(
        record,
        path,
        common,
        detail_key="deliveryDelay",
        recipients_key="delayedRecipients",
        kind=OutcomeKind.DEFERRED,
        build=build,
    )


def _whole_message(
    kind: OutcomeKind, detail_key: str, reason_key: str | None
) -> Callable[[JsonObject, str, _Common], list[_Draft]]:
    def handle(record: JsonObject, path: str, common: _Common) -> list[_Draft]:
        detail_path = key_path(path, detail_key)
        detail = required_object(record, detail_key, path)
        text = optional_str(detail, reason_key, detail_path) if reason_key else None
        return [
            _Draft(
                kind=kind,
                occurred_at=_event_time(detail, detail_path, common),
                recipient=common.sole_destination(),
                reason=reason(text),
            )
        ]

    return handle


_HANDLERS: dict[str, Callable[[JsonObject, str, _Common], list[_Draft]]] = {
    "Delivery": _delivery,
    "DeliveryDelay": _delivery_delay,
    "Bounce": _bounce,
    "Complaint": _complaint,
    "Reject": _whole_message(OutcomeKind.REJECTED, "reject", "reason"),
    "Rendering Failure": _whole_message(OutcomeKind.REJECTED, "failure", "errorMessage"),
    "Open": _whole_message(OutcomeKind.OPENED, "open", None),
    "Click": _whole_message(OutcomeKind.CLICKED, "click", None),
}
