"""Mailgun: every event type and failure severity, the HMAC signature with stale-timestamp
refusal, bad bodies."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from email_delivery.errors import InvalidInput
from email_delivery.providers import (
    InvalidWebhook,
    OutcomeKind,
    ProviderEvent,
    SignatureMismatch,
    mailgun,
)
from tests.unit.providers.support import DELIVERY_ID, body_of, fixture, mailgun_sign

SIGNING_KEY = "mailgun-test-webhook-signing-key-5e0f1d2c"
MESSAGE_ID = "20250304101500.4f1a2b3c4d5e6f70@mg.acme.test"


def parse(payload: Any, **options: Any) -> list[ProviderEvent]:
    signed = mailgun_sign(payload, SIGNING_KEY)
    return mailgun.parse(body_of(signed), {}, signing_key=SIGNING_KEY, **options)


def test_a_permanent_failure_is_a_hard_bounce_with_everything_filled() -> None:
    assert parse(fixture("mailgun", "failed-permanent.json")) == [
        ProviderEvent(
            provider="mailgun",
            event_id="Pf4aIl5eD6bO7uN8cE9qRs",
            kind=OutcomeKind.BOUNCED,
            occurred_at=datetime(2025, 3, 4, 10, 17, 2, 389832, tzinfo=UTC),
            provider_message_id=MESSAGE_ID,
            delivery_id=DELIVERY_ID,
            recipient="ada.lovelace@example.com",
            permanent=True,
            reason="bounce: 5.1.1 The email account that you tried to reach does not exist.",
            smtp_code=550,
            provider_event_type="failed",
        )
    ]


@pytest.mark.parametrize(
    ("name", "kind", "reason", "smtp_code"),
    [
        ("delivered.json", OutcomeKind.DELIVERED, "OK", 250),
        ("failed-temporary.json", OutcomeKind.DEFERRED, "generic: 4.2.2 Mailbox full", 452),
        (
            # Mailgun's own 605 is not an SMTP reply code.
            "failed-suppressed.json",
            OutcomeKind.REJECTED,
            "suppress-bounce: Not delivering to previously bounced address",
            None,
        ),
        ("opened.json", OutcomeKind.OPENED, None, None),
        ("clicked.json", OutcomeKind.CLICKED, None, None),
        ("complained.json", OutcomeKind.COMPLAINED, None, None),
    ],
)
def test_each_mailgun_event(
    name: str, kind: OutcomeKind, reason: str | None, smtp_code: int | None
) -> None:
    payload = fixture("mailgun", name)
    data = payload["event-data"]
    (event,) = parse(payload)
    assert event.kind is kind
    assert event.reason == reason
    assert event.smtp_code == smtp_code
    assert event.permanent is None
    assert event.event_id == data["id"]
    assert event.occurred_at == datetime.fromtimestamp(data["timestamp"], tz=UTC)
    assert event.provider_message_id == MESSAGE_ID
    assert event.delivery_id == DELIVERY_ID
    assert event.recipient == "ada.lovelace@example.com"
    assert event.provider_event_type == data["event"]


def test_a_rejected_message_takes_its_recipient_from_the_to_header() -> None:
    (event,) = parse(fixture("mailgun", "rejected.json"))
    assert event.kind is OutcomeKind.REJECTED
    assert event.reason == "Sandbox subdomains are for test purposes only"
    assert event.recipient == "ada.lovelace@example.com"


@pytest.mark.parametrize("name", ["accepted.json", "unsubscribed.json"])
def test_accepted_and_unsubscribed_are_ignored(name: str) -> None:
    assert parse(fixture("mailgun", name)) == []


def test_a_retry_with_a_new_signature_is_the_same_event() -> None:
    first = parse(fixture("mailgun", "delivered.json"))
    retry = mailgun_sign(fixture("mailgun", "delivered.json"), SIGNING_KEY, token="f" * 50)
    assert mailgun.parse(body_of(retry), {}, signing_key=SIGNING_KEY) == first


def test_an_event_without_an_id_is_identified_by_its_canonical_hash() -> None:
    payload = fixture("mailgun", "delivered.json")
    del payload["event-data"]["id"]
    canonical = json.dumps(payload["event-data"], sort_keys=True, separators=(",", ":"))
    (event,) = parse(payload)
    assert event.event_id == hashlib.sha256(canonical.encode()).hexdigest()


def test_angle_brackets_around_the_message_id_are_dropped() -> None:
    payload = fixture("mailgun", "delivered.json")
    payload["event-data"]["message"]["headers"]["message-id"] = f"<{MESSAGE_ID}>"
    assert parse(payload)[0].provider_message_id == MESSAGE_ID


@pytest.mark.parametrize("severity", [None, "fatal"])
def test_a_failure_without_a_known_severity_is_refused(severity: str | None) -> None:
    payload = fixture("mailgun", "failed-permanent.json")
    payload["event-data"]["severity"] = severity
    with pytest.raises(InvalidWebhook) as raised:
        parse(payload)
    assert raised.value.field == "body.event-data.severity"


# -- signature --------------------------------------------------------------------------------


def test_a_signature_by_another_key_is_refused() -> None:
    signed = mailgun_sign(fixture("mailgun", "delivered.json"), "someone-elses-signing-key")
    with pytest.raises(SignatureMismatch) as raised:
        mailgun.parse(body_of(signed), {}, signing_key=SIGNING_KEY)
    assert raised.value.field == "body.signature.signature"


@pytest.mark.parametrize("key", ["token", "timestamp"])
def test_a_tampered_signature_block_is_refused(key: str) -> None:
    signed = mailgun_sign(fixture("mailgun", "delivered.json"), SIGNING_KEY)
    signed["signature"][key] = (
        "0" * 50 if key == "token" else str(int(signed["signature"]["timestamp"]) - 1)
    )
    with pytest.raises(SignatureMismatch) as raised:
        mailgun.parse(body_of(signed), {}, signing_key=SIGNING_KEY)
    assert raised.value.field == "body.signature.signature"


@pytest.mark.parametrize("age", [timedelta(minutes=6), timedelta(minutes=-6), timedelta(days=1)])
def test_a_stale_or_future_timestamp_is_refused(age: timedelta) -> None:
    stamp = int((datetime.now(UTC) - age).timestamp())
    signed = mailgun_sign(fixture("mailgun", "delivered.json"), SIGNING_KEY, timestamp=stamp)
    with pytest.raises(SignatureMismatch) as raised:
        mailgun.parse(body_of(signed), {}, signing_key=SIGNING_KEY)
    assert raised.value.field == "body.signature.timestamp"
    wider = age + timedelta(hours=1)
    assert len(mailgun.parse(body_of(signed), {}, signing_key=SIGNING_KEY, tolerance=wider)) == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda p: p.pop("signature"), "body.signature"),
        (lambda p: p.update(signature="abc"), "body.signature"),
        (lambda p: p["signature"].pop("token"), "body.signature.token"),
        (lambda p: p["signature"].pop("timestamp"), "body.signature.timestamp"),
        (lambda p: p["signature"].update(signature=""), "body.signature.signature"),
        (lambda p: p["signature"].update(timestamp="noon"), "body.signature.timestamp"),
    ],
)
def test_a_missing_or_malformed_signature_is_refused(change: Any, field: str) -> None:
    signed = mailgun_sign(fixture("mailgun", "delivered.json"), SIGNING_KEY)
    change(signed)
    with pytest.raises(SignatureMismatch) as raised:
        mailgun.parse(body_of(signed), {}, signing_key=SIGNING_KEY)
    assert raised.value.field == field


def test_an_empty_signing_key_is_a_configuration_error() -> None:
    signed = mailgun_sign(fixture("mailgun", "delivered.json"), SIGNING_KEY)
    with pytest.raises(InvalidInput) as raised:
        mailgun.parse(body_of(signed), {}, signing_key=" ")
    assert raised.value.field == "signing_key"
    assert not isinstance(raised.value, InvalidWebhook)


# -- bad bodies -------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "field"), [(b"event=delivered", "body"), (b"[]", "body")])
def test_a_body_that_is_not_a_json_object_is_refused(body: bytes, field: str) -> None:
    with pytest.raises(InvalidWebhook) as raised:
        mailgun.parse(body, {}, signing_key=SIGNING_KEY)
    assert raised.value.field == field


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda p: p.pop("event-data"), "body.event-data"),
        (lambda p: p["event-data"].pop("event"), "body.event-data.event"),
        (lambda p: p["event-data"].update(event="stored"), "body.event-data.event"),
        (lambda p: p["event-data"].pop("timestamp"), "body.event-data.timestamp"),
        (lambda p: p["event-data"].update(timestamp=True), "body.event-data.timestamp"),
        (lambda p: p["event-data"].update(recipient="nobody"), "body.event-data.recipient"),
        (
            lambda p: p["event-data"]["user-variables"].update(delivery_id=""),
            "body.event-data.user-variables.delivery_id",
        ),
        (
            lambda p: p["event-data"].update({"delivery-status": 7}),
            "body.event-data.delivery-status",
        ),
    ],
)
def test_a_bad_event_is_refused_naming_the_field(change: Any, field: str) -> None:
    payload = fixture("mailgun", "delivered.json")
    change(payload)
    with pytest.raises(InvalidWebhook) as raised:
        parse(payload)
    assert raised.value.field == field
