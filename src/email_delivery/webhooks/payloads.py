"""The webhook payload, version 1: one audit event of a delivery, for one endpoint.

``render(endpoint_id=…, event=…, delivery=…, options=…)`` builds it from plain dicts keyed
as the tables name their columns (``email.delivery_events``, ``email.deliveries``) and
returns the message id and the exact body bytes to sign and send. ``PAYLOAD_SCHEMA`` is the
same description as a JSON Schema (draft 2020-12).

Example (``include_recipient`` and ``include_metadata`` on)::

    {"delivery":{"attempts":1,"delivery_id":"01HZX3Q7K9VYB8W2N4M6P5R1TA",
     "last_attempted_at":"2025-03-04T10:15:05.000000Z","last_error_code":null,
     "last_error_message":null,"metadata":{"locale":"fr"},
     "queued_at":"2025-03-04T10:15:04.000000Z","recipient":"ada@example.com",
     "sent_at":"2025-03-04T10:15:06.101000Z","status":"sent",
     "updated_at":"2025-03-04T10:15:06.101000Z","workflow":"verification-code"},
     "event":{"attempt":1,"changed_columns":["status","sent_at"],"error_code":null,
     "error_message":null,"id":4711,"payload":{"smtp_reply":"250 2.0.0 OK"},
     "status":"sent"},
     "id":"msg_5c0e…","occurred_at":"2025-03-04T10:15:06.101000Z",
     "type":"delivery.status_changed","version":1}

Top level:

=================  ========================  ================================================
key                type                      meaning
=================  ========================  ================================================
``version``        integer, ``1``            this layout; a change that removes or renames a
                                             field or changes its meaning bumps it. New
                                             fields may appear within a version: receivers
                                             must ignore keys they do not know
``type``           ``"delivery.status_``     the only type so far
                   ``changed"``
``id``             string ``msg_`` + 32 hex  the message id, equal to the ``webhook-id``
                                             header; the same for every retry of this event
                                             to this endpoint (``message_id``): the
                                             receiver's idempotency key
``occurred_at``    string, RFC 3339 UTC      when the event was recorded (its
                                             ``created_at``), not when it is sent
``delivery``       object                    the delivery, as read when the message was built
``event``          object                    the audit event this message is about
=================  ========================  ================================================

``delivery``:

=======================  =====================  ==========================================
key                      type                   meaning
=======================  =====================  ==========================================
``delivery_id``          string                 the caller's id of the delivery
``workflow``             string                 e.g. ``verification-code``
``status``               string (enum)          ``queued``, ``in_progress``, ``sent``,
                                                ``retrying``, ``failed``, ``dead_letter``
``attempts``             integer ≥ 0            attempts so far
``queued_at``            string, RFC 3339 UTC
``sent_at``              string or null         set exactly when ``status`` is ``sent``
``last_attempted_at``    string or null
``last_error_code``      string or null         e.g. ``SMTP_550``
``last_error_message``   string or null         sanitised; email addresses redacted unless
                                                ``include_recipient``
``updated_at``           string or null
``recipient``            string, **optional**   only with ``include_recipient``; absent
                                                otherwise (never null)
``metadata``             object, **optional**   only with ``include_metadata``; absent
                                                otherwise (never null)
=======================  =====================  ==========================================

``event``:

====================  =====================  =============================================
key                   type                   meaning
====================  =====================  =============================================
``id``                integer ≥ 1            the event's id; it grows with each event, so a
                                             receiver can ignore a message older than one
                                             it has already applied for the same delivery
``status``            string (enum)          the delivery's status after this event: the
                                             change this message reports
``attempt``           integer ≥ 0 or null    the delivery's ``attempts`` after the event
``error_code``        string or null
``error_message``     string or null         as ``last_error_message``
``changed_columns``   array of strings or    the delivery's columns the change touched;
                      null                   null for the event of the delivery's creation
``payload``           object or null,        only with ``include_metadata`` (the SMTP
                      **optional**           reply, a dead-letter reference…); absent
                                             otherwise
====================  =====================  =============================================

Times are always ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC, microseconds), whatever the input's
zone. Serialisation is canonical: keys sorted, no whitespace, ASCII only (``\\uXXXX``
escapes), no NaN. So the same event always yields the same bytes, a retry is byte for
byte the first attempt, and only the signing timestamp differs.

Personal data: the recipient's address appears only with ``include_recipient``; without
it, anything that looks like an email address in the error messages is replaced by
``[redacted]`` (SMTP replies often quote the address). ``metadata`` and the event's
``payload`` hold whatever the caller stored: sent only with ``include_metadata``. The
``delivery_id`` is always sent: it is the caller's id, and the caller chooses it (it may
contain ``@``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple
from uuid import UUID

from email_delivery.errors import InvalidInput
from email_delivery.models import DeliveryStatus

__all__ = [
    "EVENT_TYPE",
    "NOTHING_EXTRA",
    "PAYLOAD_SCHEMA",
    "PAYLOAD_VERSION",
    "REDACTED",
    "EndpointOptions",
    "Rendered",
    "build",
    "message_id",
    "render",
    "serialize",
]

PAYLOAD_VERSION = 1
EVENT_TYPE = "delivery.status_changed"
REDACTED = "[redacted]"

_MESSAGE_ID_DOMAIN = b"email-delivery webhook message v1\x00"
_EMAIL_LIKE = re.compile(r"[^\s<>()\[\]{}\"',;:@]+@[^\s<>()\[\]{}\"',;:@]+\.[A-Za-z0-9-]+")
_STATUSES = [status.value for status in DeliveryStatus]

_TIME = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$"}
_NULLABLE_TIME = {"anyOf": [_TIME, {"type": "null"}]}
_NULLABLE_STRING = {"type": ["string", "null"]}

PAYLOAD_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://email-delivery/webhooks/delivery.status_changed/v1.json",
    "title": "delivery.status_changed, version 1",
    "type": "object",
    "additionalProperties": False,
    "required": ["version", "type", "id", "occurred_at", "delivery", "event"],
    "properties": {
        "version": {"const": PAYLOAD_VERSION},
        "type": {"const": EVENT_TYPE},
        "id": {"type": "string", "pattern": "^msg_[0-9a-f]{32}$"},
        "occurred_at": _TIME,
        "delivery": {
            "type": "object",
            "additionalProperties": False,
            "required": [
                "delivery_id",
                "workflow",
                "status",
                "attempts",
                "queued_at",
                "sent_at",
                "last_attempted_at",
                "last_error_code",
                "last_error_message",
                "updated_at",
            ],
            "properties": {
                "delivery_id": {"type": "string", "minLength": 1},
                "workflow": {"type": "string", "minLength": 1},
                "status": {"enum": _STATUSES},
                "attempts": {"type": "integer", "minimum": 0},
                "queued_at": _TIME,
                "sent_at": _NULLABLE_TIME,
                "last_attempted_at": _NULLABLE_TIME,
                "last_error_code": _NULLABLE_STRING,
                "last_error_message": _NULLABLE_STRING,
                "updated_at": _NULLABLE_TIME,
                "recipient": {"type": "string", "minLength": 3},
                "metadata": {"type": "object"},
            },
        },
        "event": {
            "type": "object",
            "additionalProperties": False,
            "required": [
                "id",
                "status",
                "attempt",
                "error_code",
                "error_message",
                "changed_columns",
            ],
            "properties": {
                "id": {"type": "integer", "minimum": 1},
                "status": {"enum": _STATUSES},
                "attempt": {"type": ["integer", "null"], "minimum": 0},
                "error_code": _NULLABLE_STRING,
                "error_message": _NULLABLE_STRING,
                "changed_columns": {
                    "anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]
                },
                "payload": {"type": ["object", "null"]},
            },
        },
    },
}
"""Version 1 as JSON Schema (draft 2020-12). Strict (no unknown keys) because it describes
exactly what this code sends; receivers should be lenient (see ``version``)."""


@dataclass(frozen=True, slots=True)
class EndpointOptions:
    """What an endpoint may receive beyond the delivery's status. Both off by default."""

    include_recipient: bool = False
    """Send ``delivery.recipient`` (the email address), and error messages unredacted."""
    include_metadata: bool = False
    """Send ``delivery.metadata`` and ``event.payload``."""


NOTHING_EXTRA = EndpointOptions()
"""The default: neither the recipient nor metadata."""


class Rendered(NamedTuple):
    """One message for one endpoint: its id (the ``webhook-id``), the payload, and the
    exact bytes to sign and send."""

    message_id: str
    payload: dict[str, Any]
    body: bytes


def message_id(*, endpoint_id: str | int | UUID, event_id: int) -> str:
    """The stable id of the message carrying event ``event_id`` to endpoint
    ``endpoint_id``: ``msg_`` + the first 32 hex digits of SHA-256 over both (with a domain
    prefix and separators, so no two pairs collide by concatenation). Every retry of the
    message, and a re-render after a crash, gets the same id."""
    if isinstance(endpoint_id, bool) or not isinstance(endpoint_id, str | int | UUID):
        raise InvalidInput("endpoint_id", "must be a string, an integer or a UUID")
    endpoint = str(endpoint_id)
    if not endpoint or "\x00" in endpoint:
        raise InvalidInput("endpoint_id", "must be non-empty, without NUL")
    event = _positive_int(event_id, "event.id")
    digest = hashlib.sha256(
        _MESSAGE_ID_DOMAIN + endpoint.encode() + b"\x00" + str(event).encode()
    ).hexdigest()
    return f"msg_{digest[:32]}"


def _positive_int(value: object, field: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInput(field, f"must be an integer >= {minimum}")
    return value


def _time(value: object, field: str, *, nullable: bool = False) -> str | None:
    if value is None and nullable:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidInput(field, "must be an ISO 8601 timestamp") from None
    if not isinstance(value, datetime):
        raise InvalidInput(field, "must be a timestamp (datetime or ISO 8601 string)")
    if value.tzinfo is None:
        raise InvalidInput(field, "must carry its time zone")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _text(value: object, field: str, *, nullable: bool = False) -> str | None:
    if value is None and nullable:
        return None
    if not isinstance(value, str) or (not nullable and not value):
        raise InvalidInput(field, "must be a string" if nullable else "must be a non-empty string")
    return value


def _status(value: object, field: str) -> str:
    if not isinstance(value, str) or value not in _STATUSES:
        raise InvalidInput(field, f"must be one of {', '.join(_STATUSES)}")
    return value


def _json_object(value: object, field: str, *, nullable: bool = False) -> dict[str, Any] | None:
    if value is None and nullable:
        return None
    if isinstance(value, str):  # a json/jsonb column read as text
        try:
            value = json.loads(value)
        except ValueError:
            raise InvalidInput(field, "must be a JSON object") from None
    if not isinstance(value, Mapping):
        raise InvalidInput(field, "must be a JSON object")
    return dict(value)


def _redact(text: str | None, recipient: object) -> str | None:
    if text is None:
        return None
    if isinstance(recipient, str) and recipient:
        text = re.sub(re.escape(recipient), REDACTED, text, flags=re.IGNORECASE)
    return _EMAIL_LIKE.sub(REDACTED, text)


def _required(row: Mapping[str, Any], key: str, field: str) -> Any:
    if key not in row:
        raise InvalidInput(f"{field}.{key}", "missing")
    return row[key]


def build(
    *,
    endpoint_id: str | int | UUID,
    event: Mapping[str, Any],
    delivery: Mapping[str, Any],
    options: EndpointOptions = NOTHING_EXTRA,
) -> dict[str, Any]:
    """The payload (a dict) of ``event`` of ``delivery`` for one endpoint; see the module
    docstring. Raises ``InvalidInput`` naming the offending input (``event.status``,
    ``delivery.queued_at``)."""
    if not isinstance(event, Mapping):
        raise InvalidInput("event", "must be a mapping of the event's columns")
    if not isinstance(delivery, Mapping):
        raise InvalidInput("delivery", "must be a mapping of the delivery's columns")
    if not isinstance(options, EndpointOptions):
        raise InvalidInput("options", "must be EndpointOptions")

    delivery_id = _text(_required(delivery, "delivery_id", "delivery"), "delivery.delivery_id")
    if "delivery_id" in event and event["delivery_id"] != delivery_id:
        raise InvalidInput("event.delivery_id", "is not the delivery's id")
    event_id = _positive_int(_required(event, "id", "event"), "event.id")
    recipient = delivery.get("recipient")
    redact = not options.include_recipient

    def message(value: object, field: str) -> str | None:
        text = _text(value, field, nullable=True)
        return _redact(text, recipient) if redact else text

    changed = event.get("changed_columns")
    if changed is not None and (
        not isinstance(changed, list | tuple) or not all(isinstance(c, str) for c in changed)
    ):
        raise InvalidInput("event.changed_columns", "must be a list of column names or null")
    attempt = event.get("attempt")
    if attempt is not None:
        attempt = _positive_int(attempt, "event.attempt", minimum=0)

    delivery_out: dict[str, Any] = {
        "delivery_id": delivery_id,
        "workflow": _text(_required(delivery, "workflow", "delivery"), "delivery.workflow"),
        "status": _status(_required(delivery, "status", "delivery"), "delivery.status"),
        "attempts": _positive_int(
            _required(delivery, "attempts", "delivery"), "delivery.attempts", minimum=0
        ),
        "queued_at": _time(_required(delivery, "queued_at", "delivery"), "delivery.queued_at"),
        "sent_at": _time(delivery.get("sent_at"), "delivery.sent_at", nullable=True),
        "last_attempted_at": _time(
            delivery.get("last_attempted_at"), "delivery.last_attempted_at", nullable=True
        ),
        "last_error_code": _text(
            delivery.get("last_error_code"), "delivery.last_error_code", nullable=True
        ),
        "last_error_message": message(
            delivery.get("last_error_message"), "delivery.last_error_message"
        ),
        "updated_at": _time(delivery.get("updated_at"), "delivery.updated_at", nullable=True),
    }
    event_out: dict[str, Any] = {
        "id": event_id,
        "status": _status(_required(event, "status", "event"), "event.status"),
        "attempt": attempt,
        "error_code": _text(event.get("error_code"), "event.error_code", nullable=True),
        "error_message": message(event.get("error_message"), "event.error_message"),
        "changed_columns": list(changed) if changed is not None else None,
    }
    if options.include_recipient:
        delivery_out["recipient"] = _text(
            _required(delivery, "recipient", "delivery"), "delivery.recipient"
        )
    if options.include_metadata:
        delivery_out["metadata"] = _json_object(
            _required(delivery, "metadata", "delivery"), "delivery.metadata"
        )
        event_out["payload"] = _json_object(event.get("payload"), "event.payload", nullable=True)

    return {
        "version": PAYLOAD_VERSION,
        "type": EVENT_TYPE,
        "id": message_id(endpoint_id=endpoint_id, event_id=event_id),
        "occurred_at": _time(_required(event, "created_at", "event"), "event.created_at"),
        "delivery": delivery_out,
        "event": event_out,
    }


def serialize(payload: Mapping[str, Any]) -> bytes:
    """Canonical JSON bytes: sorted keys, no whitespace, ASCII only, no NaN/Infinity."""
    try:
        text = json.dumps(
            payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise InvalidInput("payload", f"not serialisable as JSON ({exc})") from None
    return text.encode("ascii")


def render(
    *,
    endpoint_id: str | int | UUID,
    event: Mapping[str, Any],
    delivery: Mapping[str, Any],
    options: EndpointOptions = NOTHING_EXTRA,
) -> Rendered:
    """``build`` then ``serialize``: the message id, the payload and the body to sign."""
    payload = build(endpoint_id=endpoint_id, event=event, delivery=delivery, options=options)
    return Rendered(message_id=payload["id"], payload=payload, body=serialize(payload))
