"""The version-1 payload: built from rows as the tables name their columns, validated
against ``PAYLOAD_SCHEMA`` (with ``jsonschema``), personal data only when the endpoint's
options say so, a stable message id, canonical bytes."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import jsonschema
import pytest

from email_delivery.errors import InvalidInput
from email_delivery.models import DeliveryStatus
from email_delivery.webhooks import payloads
from email_delivery.webhooks.payloads import (
    PAYLOAD_SCHEMA,
    EndpointOptions,
    build,
    message_id,
    render,
    serialize,
)

ENDPOINT = "ep_01J0Q8Z4R6C2M7V9X3B5N1K8TD"
RECIPIENT = "ada.lovelace@example.com"
QUEUED = datetime(2025, 3, 4, 10, 15, 4, tzinfo=UTC)
SENT = datetime(2025, 3, 4, 10, 15, 6, 101000, tzinfo=UTC)
ALL = EndpointOptions(include_recipient=True, include_metadata=True)

VALIDATOR = jsonschema.Draft202012Validator(PAYLOAD_SCHEMA)


def delivery(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "delivery_id": "01HZX3Q7K9VYB8W2N4M6P5R1TA",
        "workflow": "verification-code",
        "recipient": RECIPIENT,
        "status": "sent",
        "attempts": 1,
        "last_error_code": None,
        "last_error_message": None,
        "last_attempted_at": QUEUED + timedelta(seconds=1),
        "queued_at": QUEUED,
        "sent_at": SENT,
        "metadata": {"locale": "fr", "invite": {"team": "t-42"}},
        "created_at": QUEUED,
        "updated_at": SENT,
    }
    row.update(changes)
    return row


def event(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": 4711,
        "delivery_id": "01HZX3Q7K9VYB8W2N4M6P5R1TA",
        "status": "sent",
        "attempt": 1,
        "error_code": None,
        "error_message": None,
        "created_at": SENT,
        "changed_columns": ["status", "sent_at"],
        "payload": {"smtp_reply": "250 2.0.0 OK"},
    }
    row.update(changes)
    return row


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(PAYLOAD_SCHEMA)


def test_a_full_payload_as_documented() -> None:
    payload = build(endpoint_id=ENDPOINT, event=event(), delivery=delivery(), options=ALL)
    VALIDATOR.validate(payload)
    assert payload == {
        "version": 1,
        "type": "delivery.status_changed",
        "id": message_id(endpoint_id=ENDPOINT, event_id=4711),
        "occurred_at": "2025-03-04T10:15:06.101000Z",
        "delivery": {
            "delivery_id": "01HZX3Q7K9VYB8W2N4M6P5R1TA",
            "workflow": "verification-code",
            "status": "sent",
            "attempts": 1,
            "queued_at": "2025-03-04T10:15:04.000000Z",
            "sent_at": "2025-03-04T10:15:06.101000Z",
            "last_attempted_at": "2025-03-04T10:15:05.000000Z",
            "last_error_code": None,
            "last_error_message": None,
            "updated_at": "2025-03-04T10:15:06.101000Z",
            "recipient": RECIPIENT,
            "metadata": {"locale": "fr", "invite": {"team": "t-42"}},
        },
        "event": {
            "id": 4711,
            "status": "sent",
            "attempt": 1,
            "error_code": None,
            "error_message": None,
            "changed_columns": ["status", "sent_at"],
            "payload": {"smtp_reply": "250 2.0.0 OK"},
        },
    }


def test_by_default_the_recipient_and_metadata_are_absent_not_null() -> None:
    rendered = render(endpoint_id=ENDPOINT, event=event(), delivery=delivery())
    VALIDATOR.validate(rendered.payload)
    assert "recipient" not in rendered.payload["delivery"]
    assert "metadata" not in rendered.payload["delivery"]
    assert "payload" not in rendered.payload["event"]
    assert b"ada.lovelace" not in rendered.body
    assert b"locale" not in rendered.body
    assert b"smtp_reply" not in rendered.body


@pytest.mark.parametrize(
    ("options", "recipient", "metadata"),
    [
        (EndpointOptions(include_recipient=True), True, False),
        (EndpointOptions(include_metadata=True), False, True),
    ],
)
def test_each_option_adds_only_its_own_fields(
    options: EndpointOptions, recipient: bool, metadata: bool
) -> None:
    payload = build(endpoint_id=ENDPOINT, event=event(), delivery=delivery(), options=options)
    VALIDATOR.validate(payload)
    assert ("recipient" in payload["delivery"]) is recipient
    assert ("metadata" in payload["delivery"]) is metadata
    assert ("payload" in payload["event"]) is metadata


def test_an_event_without_a_payload_sends_null_when_metadata_is_included() -> None:
    payload = build(
        endpoint_id=ENDPOINT, event=event(payload=None), delivery=delivery(), options=ALL
    )
    VALIDATOR.validate(payload)
    assert payload["event"]["payload"] is None


def test_error_messages_have_email_addresses_redacted_unless_the_recipient_is_included() -> None:
    failed = delivery(
        status="retrying",
        sent_at=None,
        last_error_code="SMTP_550",
        last_error_message="550 5.1.1 <Ada.Lovelace@Example.com>: Recipient address rejected",
    )
    bounced = event(
        status="retrying",
        error_code="SMTP_550",
        error_message=(
            "550 5.1.1 ada.lovelace@example.com... User unknown; cc: ops+x@mail.example.org"
        ),
    )
    payload = build(endpoint_id=ENDPOINT, event=bounced, delivery=failed)
    VALIDATOR.validate(payload)
    assert payload["delivery"]["last_error_message"] == (
        "550 5.1.1 <[redacted]>: Recipient address rejected"
    )
    assert payload["event"]["error_message"] == (
        "550 5.1.1 [redacted]... User unknown; cc: [redacted]"
    )
    body = serialize(payload).lower()
    assert b"lovelace" not in body
    assert b"ops+x" not in body
    shown = build(
        endpoint_id=ENDPOINT,
        event=bounced,
        delivery=failed,
        options=EndpointOptions(include_recipient=True),
    )
    assert shown["event"]["error_message"] == bounced["error_message"]


def test_the_message_id_is_stable_per_endpoint_and_event() -> None:
    one = message_id(endpoint_id=ENDPOINT, event_id=4711)
    assert one == message_id(endpoint_id=ENDPOINT, event_id=4711)
    assert one.startswith("msg_")
    assert len(one) == 36
    assert "." not in one  # Standard Webhooks: no '.' in the signed id
    assert one != message_id(endpoint_id=ENDPOINT, event_id=4712)
    assert one != message_id(endpoint_id="ep_other", event_id=4711)
    # No collision by moving digits across the separator.
    assert message_id(endpoint_id="ep1", event_id=23) != message_id(endpoint_id="ep12", event_id=3)
    # Integer and UUID endpoint ids work too.
    endpoint_uuid = uuid.UUID("2f1b2d8e-3c4a-4b5c-9d6e-7f8091a2b3c4")
    assert message_id(endpoint_id=endpoint_uuid, event_id=1) == message_id(
        endpoint_id=str(endpoint_uuid), event_id=1
    )
    assert message_id(endpoint_id=7, event_id=1) == message_id(endpoint_id="7", event_id=1)


def test_the_same_event_renders_to_the_same_bytes_whatever_the_key_order_or_time_zone() -> None:
    first = render(endpoint_id=ENDPOINT, event=event(), delivery=delivery(), options=ALL)
    shuffled_delivery = dict(reversed(list(delivery().items())))
    shuffled_delivery["metadata"] = {"invite": {"team": "t-42"}, "locale": "fr"}
    tokyo = timezone(timedelta(hours=9))
    again = render(
        endpoint_id=ENDPOINT,
        event=event(created_at=SENT.astimezone(tokyo)),
        delivery=shuffled_delivery,
        options=ALL,
    )
    assert again.body == first.body
    assert again.message_id == first.message_id == first.payload["id"]


def test_serialisation_is_canonical_ascii_json() -> None:
    rendered = render(
        endpoint_id=ENDPOINT,
        event=event(),
        delivery=delivery(metadata={"name": "Zoë✓", "b": 1, "a": [1.5, None, True]}),
        options=ALL,
    )
    body = rendered.body
    assert body.isascii()
    assert b" " not in body.replace(b"250 2.0.0 OK", b"")
    assert b"\\u00eb" in body
    assert json.loads(body) == rendered.payload
    assert body == json.dumps(rendered.payload, sort_keys=True, separators=(",", ":")).encode()
    assert body.index(b'"delivery"') < body.index(b'"event"') < body.index(b'"version"')


def test_rows_read_as_json_text_work_too() -> None:
    """A change feed may hand over timestamps as ISO strings and json columns as text."""
    from_feed = build(
        endpoint_id=ENDPOINT,
        event=event(created_at="2025-03-04 10:15:06.101+00", payload='{"smtp_reply": "250"}'),
        delivery=delivery(
            queued_at="2025-03-04T11:15:04+01:00",
            sent_at="2025-03-04T10:15:06.101000Z",
            metadata='{"locale": "fr"}',
        ),
        options=ALL,
    )
    VALIDATOR.validate(from_feed)
    assert from_feed["occurred_at"] == "2025-03-04T10:15:06.101000Z"
    assert from_feed["delivery"]["queued_at"] == "2025-03-04T10:15:04.000000Z"
    assert from_feed["delivery"]["metadata"] == {"locale": "fr"}
    assert from_feed["event"]["payload"] == {"smtp_reply": "250"}


@pytest.mark.parametrize("status", list(DeliveryStatus))
def test_every_status_validates(status: DeliveryStatus) -> None:
    sent = status is DeliveryStatus.SENT
    payload = build(
        endpoint_id=ENDPOINT,
        event=event(status=status.value),
        delivery=delivery(status=status, sent_at=SENT if sent else None),
    )
    VALIDATOR.validate(payload)
    assert payload["event"]["status"] == status.value


def test_the_creation_event_has_null_changed_columns() -> None:
    payload = build(
        endpoint_id=ENDPOINT,
        event=event(status="queued", attempt=0, changed_columns=None),
        delivery=delivery(status="queued", attempts=0, sent_at=None, last_attempted_at=None),
    )
    VALIDATOR.validate(payload)
    assert payload["event"]["changed_columns"] is None


@pytest.mark.parametrize(
    ("event_changes", "delivery_changes", "field"),
    [
        ({"id": 0}, {}, "event.id"),
        ({"id": True}, {}, "event.id"),
        ({"id": "4711"}, {}, "event.id"),
        ({"status": "delivered"}, {}, "event.status"),
        ({"attempt": -1}, {}, "event.attempt"),
        ({"created_at": datetime(2025, 3, 4)}, {}, "event.created_at"),
        ({"created_at": "yesterday"}, {}, "event.created_at"),
        ({"changed_columns": "status"}, {}, "event.changed_columns"),
        ({"delivery_id": "someone-else"}, {}, "event.delivery_id"),
        ({"error_message": 42}, {}, "event.error_message"),
        ({}, {"status": "bounced"}, "delivery.status"),
        ({}, {"attempts": -1}, "delivery.attempts"),
        ({}, {"workflow": ""}, "delivery.workflow"),
        ({}, {"queued_at": None}, "delivery.queued_at"),
        ({}, {"metadata": ["not", "an", "object"]}, "delivery.metadata"),
        ({"payload": "not json"}, {}, "event.payload"),
    ],
)
def test_bad_rows_name_the_field(
    event_changes: dict[str, Any], delivery_changes: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        build(
            endpoint_id=ENDPOINT,
            event=event(**event_changes),
            delivery=delivery(**delivery_changes),
            options=ALL,
        )
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("row", "key", "field"),
    [
        ("event", "id", "event.id"),
        ("event", "status", "event.status"),
        ("event", "created_at", "event.created_at"),
        ("delivery", "delivery_id", "delivery.delivery_id"),
        ("delivery", "queued_at", "delivery.queued_at"),
        ("delivery", "recipient", "delivery.recipient"),
        ("delivery", "metadata", "delivery.metadata"),
    ],
)
def test_a_missing_column_is_named(row: str, key: str, field: str) -> None:
    rows = {"event": event(), "delivery": delivery()}
    del rows[row][key]
    with pytest.raises(InvalidInput) as caught:
        build(endpoint_id=ENDPOINT, event=rows["event"], delivery=rows["delivery"], options=ALL)
    assert caught.value.field == field
    assert "missing" in str(caught.value)


def test_recipient_and_metadata_columns_are_not_needed_when_not_sent() -> None:
    row = delivery()
    del row["recipient"], row["metadata"]
    VALIDATOR.validate(build(endpoint_id=ENDPOINT, event=event(), delivery=row))


@pytest.mark.parametrize("endpoint_id", ["", "a\x00b", None, True, 1.5])
def test_bad_endpoint_ids_are_refused(endpoint_id: object) -> None:
    with pytest.raises(InvalidInput) as caught:
        message_id(endpoint_id=endpoint_id, event_id=1)  # type: ignore[arg-type]
    assert caught.value.field == "endpoint_id"


def test_values_json_cannot_carry_are_refused_when_serialising() -> None:
    payload = build(endpoint_id=ENDPOINT, event=event(), delivery=delivery(), options=ALL)
    payload["delivery"]["metadata"] = {"bad": float("nan")}
    with pytest.raises(InvalidInput) as caught:
        serialize(payload)
    assert caught.value.field == "payload"
    payload["delivery"]["metadata"] = {"bad": object()}
    with pytest.raises(InvalidInput):
        serialize(payload)


def test_the_docstring_table_and_the_schema_name_the_same_fields() -> None:
    doc = payloads.__doc__ or ""
    for section in ("delivery", "event"):
        for key in PAYLOAD_SCHEMA["properties"][section]["properties"]:
            assert f"``{key}``" in doc, key
    for key in PAYLOAD_SCHEMA["properties"]:
        assert f"``{key}``" in doc, key


def test_the_schema_rejects_what_the_options_must_leave_out_as_null() -> None:
    payload = build(endpoint_id=ENDPOINT, event=event(), delivery=delivery())
    payload["delivery"]["recipient"] = None
    assert not VALIDATOR.is_valid(payload)
    payload["delivery"].pop("recipient")
    payload["delivery"]["metadata"] = None
    assert not VALIDATOR.is_valid(payload)
