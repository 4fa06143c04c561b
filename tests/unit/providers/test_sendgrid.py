"""SendGrid: batches with every event type, duplicates, the Signed Event Webhook (ECDSA P-256
keys generated here), bad bodies."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from email_delivery.errors import InvalidInput
from email_delivery.providers import (
    InvalidWebhook,
    OutcomeKind,
    ProviderEvent,
    SignatureMismatch,
    sendgrid,
)
from tests.unit.providers.support import (
    DELIVERY_ID,
    body_of,
    fixture,
    sendgrid_headers,
    sendgrid_keys,
)

KEY, PUBLIC_KEY = sendgrid_keys()
OTHER_KEY, _ = sendgrid_keys()
SIGNATURE = "headers.x-twilio-email-event-webhook-signature"
TIMESTAMP = "headers.x-twilio-email-event-webhook-timestamp"
# A P-384 key is not SendGrid's P-256.
P384_PUBLIC_KEY = base64.b64encode(
    ec.generate_private_key(ec.SECP384R1())
    .public_key()
    .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
).decode()


def parse(batch: Any, **options: Any) -> list[ProviderEvent]:
    body = body_of(batch)
    return sendgrid.parse(body, sendgrid_headers(body, KEY), public_key=PUBLIC_KEY, **options)


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def test_a_batch_maps_every_event_type_in_order_leaving_out_the_ignored_ones() -> None:
    events = parse(fixture("sendgrid", "batch.json"))

    assert [(e.provider_event_type, e.kind, e.recipient, e.permanent) for e in events] == [
        ("deferred", OutcomeKind.DEFERRED, "ada.lovelace@example.com", None),
        ("delivered", OutcomeKind.DELIVERED, "ada.lovelace@example.com", None),
        ("open", OutcomeKind.OPENED, "ada.lovelace@example.com", None),
        ("click", OutcomeKind.CLICKED, "ada.lovelace@example.com", None),
        ("bounce", OutcomeKind.BOUNCED, "grace@example.org", True),
        ("bounce", OutcomeKind.BOUNCED, "alan@example.org", False),
        ("dropped", OutcomeKind.REJECTED, "linus@example.net", None),
        ("spamreport", OutcomeKind.COMPLAINED, "ada.lovelace@example.com", None),
    ]
    # processed, unsubscribe, group_unsubscribe and group_resubscribe are left out.
    assert len(fixture("sendgrid", "batch.json")) == 12
    assert [e.smtp_code for e in events] == [421, 250, None, None, 550, 554, None, None]
    assert events[0].reason == "421 4.7.0 Try again later, closing connection."
    assert events[6].reason == "Bounced Address"
    assert len({e.event_id for e in events}) == len(events)


def test_a_hard_bounce_with_everything_filled() -> None:
    events = parse(fixture("sendgrid", "batch.json"))
    assert events[4] == ProviderEvent(
        provider="sendgrid",
        event_id="Ym91bmNlLTAtNDY3MzgwMzEtUW05UnlBMUxUMnVYbjRjVjhkRTZmQS0w",
        kind=OutcomeKind.BOUNCED,
        occurred_at=at(1741083420),
        # sg_message_id up to the first "." is the X-Message-Id of the send response.
        provider_message_id="Qm9RyA1LT2uXn4cV8dE6fA",
        delivery_id="01HZX4B2C3D4E5F6G7H8J9K0MN",
        recipient="grace@example.org",
        permanent=True,
        reason="Invalid Address: 550 5.1.1 The email account that you tried to reach does "
        "not exist.",
        smtp_code=550,
        provider_event_type="bounce",
    )


def test_custom_args_carry_our_delivery_id() -> None:
    events = parse(fixture("sendgrid", "batch.json"))
    assert events[0].delivery_id == DELIVERY_ID
    assert events[0].provider_message_id == "w7NbpsTgRZmHEcRG5ym4Ow"
    assert events[0].occurred_at == at(1741083302)


def test_account_events_are_ignored() -> None:
    assert parse(fixture("sendgrid", "account-status-change.json")) == []


def test_an_empty_batch_is_empty() -> None:
    assert parse([]) == []


def test_the_same_event_twice_in_a_batch_has_the_same_event_id() -> None:
    delivered = fixture("sendgrid", "batch.json")[2]
    events = parse([delivered, delivered])
    assert len(events) == 2
    assert events[0] == events[1]
    assert events[0].event_id == delivered["sg_event_id"]
    # And a batch posted again gives the same events.
    assert parse(fixture("sendgrid", "batch.json")) == parse(fixture("sendgrid", "batch.json"))


def test_an_event_without_sg_event_id_is_identified_by_its_canonical_hash() -> None:
    delivered = fixture("sendgrid", "batch.json")[2]
    del delivered["sg_event_id"]
    canonical = json.dumps(delivered, sort_keys=True, separators=(",", ":"))
    (event,) = parse([delivered])
    assert event.event_id == hashlib.sha256(canonical.encode()).hexdigest()
    (again,) = parse([dict(reversed(list(delivered.items())))])  # key order does not matter
    assert again.event_id == event.event_id


def test_a_bounce_without_a_type_has_undetermined_permanence() -> None:
    bounce = fixture("sendgrid", "batch.json")[5]
    del bounce["type"]
    (event,) = parse([bounce])
    assert event.kind is OutcomeKind.BOUNCED
    assert event.permanent is None


# -- signature --------------------------------------------------------------------------------


def test_a_tampered_batch_is_refused() -> None:
    body = body_of(fixture("sendgrid", "batch.json"))
    headers = sendgrid_headers(body, KEY)
    with pytest.raises(SignatureMismatch) as raised:
        sendgrid.parse(body.replace(b'"blocked"', b'"bounce"'), headers, public_key=PUBLIC_KEY)
    assert raised.value.field == SIGNATURE


def test_a_signature_by_another_key_is_refused() -> None:
    body = body_of(fixture("sendgrid", "batch.json"))
    with pytest.raises(SignatureMismatch) as raised:
        sendgrid.parse(body, sendgrid_headers(body, OTHER_KEY), public_key=PUBLIC_KEY)
    assert raised.value.field == SIGNATURE


def test_the_signature_covers_the_timestamp() -> None:
    body = body_of(fixture("sendgrid", "batch.json"))
    headers = sendgrid_headers(body, KEY)
    headers["X-Twilio-Email-Event-Webhook-Timestamp"] = str(int(datetime.now(UTC).timestamp()) - 1)
    with pytest.raises(SignatureMismatch) as raised:
        sendgrid.parse(body, headers, public_key=PUBLIC_KEY)
    assert raised.value.field == SIGNATURE


@pytest.mark.parametrize("age", [timedelta(minutes=6), timedelta(minutes=-6)])
def test_a_stale_or_future_timestamp_is_refused(age: timedelta) -> None:
    body = body_of(fixture("sendgrid", "batch.json"))
    stamp = int((datetime.now(UTC) - age).timestamp())
    headers = sendgrid_headers(body, KEY, timestamp=stamp)
    with pytest.raises(SignatureMismatch) as raised:
        sendgrid.parse(body, headers, public_key=PUBLIC_KEY)
    assert raised.value.field == TIMESTAMP
    wider = timedelta(minutes=10)
    assert len(sendgrid.parse(body, headers, public_key=PUBLIC_KEY, tolerance=wider)) == 8


@pytest.mark.parametrize(
    ("header", "field"),
    [
        ("X-Twilio-Email-Event-Webhook-Signature", SIGNATURE),
        ("X-Twilio-Email-Event-Webhook-Timestamp", TIMESTAMP),
    ],
)
def test_a_missing_signature_header_is_refused(header: str, field: str) -> None:
    body = body_of(fixture("sendgrid", "batch.json"))
    headers = sendgrid_headers(body, KEY)
    del headers[header]
    with pytest.raises(SignatureMismatch) as raised:
        sendgrid.parse(body, headers, public_key=PUBLIC_KEY)
    assert raised.value.field == field


def test_a_signature_that_is_not_base64_is_refused() -> None:
    body = body_of(fixture("sendgrid", "batch.json"))
    headers = sendgrid_headers(body, KEY) | {"X-Twilio-Email-Event-Webhook-Signature": "%%%"}
    with pytest.raises(SignatureMismatch) as raised:
        sendgrid.parse(body, headers, public_key=PUBLIC_KEY)
    assert raised.value.field == SIGNATURE


def test_header_names_are_case_insensitive_and_a_pem_key_works() -> None:
    body = body_of(fixture("sendgrid", "batch.json"))
    headers = {name.lower(): value for name, value in sendgrid_headers(body, KEY).items()}
    pem = (
        KEY.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    assert len(sendgrid.parse(body, headers, public_key=pem)) == 8


def test_without_a_public_key_nothing_is_verified() -> None:
    body = body_of(fixture("sendgrid", "batch.json"))
    assert len(sendgrid.parse(body, {}, public_key=None)) == 8


@pytest.mark.parametrize(
    "public_key",
    [
        "",
        "not base64 !",
        "bm90IGEga2V5",
        P384_PUBLIC_KEY,
    ],
)
def test_an_unusable_public_key_is_a_configuration_error(public_key: str) -> None:
    body = body_of(fixture("sendgrid", "batch.json"))
    with pytest.raises(InvalidInput) as raised:
        sendgrid.parse(body, sendgrid_headers(body, KEY), public_key=public_key)
    assert raised.value.field == "public_key"
    assert not isinstance(raised.value, InvalidWebhook)


# -- bad bodies -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("batch", "field"),
    [
        ({"event": "delivered"}, "body"),
        ([1], "body[0]"),
    ],
)
def test_a_body_that_is_not_a_batch_is_refused(batch: Any, field: str) -> None:
    with pytest.raises(InvalidWebhook) as raised:
        parse(batch)
    assert raised.value.field == field


def test_a_body_that_is_not_json_is_refused() -> None:
    body = b"[{"
    with pytest.raises(InvalidWebhook) as raised:
        sendgrid.parse(body, sendgrid_headers(body, KEY), public_key=PUBLIC_KEY)
    assert raised.value.field == "body"


@pytest.mark.parametrize(
    ("index", "change", "field"),
    [
        (3, lambda e: e.update(event="teleported"), "body[3].event"),
        (3, lambda e: e.pop("event"), "body[3].event"),
        (2, lambda e: e.pop("email"), "body[2].email"),
        (2, lambda e: e.update(email="nobody"), "body[2].email"),
        (2, lambda e: e.pop("timestamp"), "body[2].timestamp"),
        (2, lambda e: e.update(timestamp="soon"), "body[2].timestamp"),
        (2, lambda e: e.update(timestamp=10**13), "body[2].timestamp"),
        (2, lambda e: e.update(delivery_id="bad id"), "body[2].delivery_id"),
        (5, lambda e: e.update(reason=550), "body[5].reason"),
    ],
)
def test_one_bad_event_refuses_the_whole_batch_naming_it(
    index: int, change: Any, field: str
) -> None:
    batch = fixture("sendgrid", "batch.json")
    change(batch[index])
    with pytest.raises(InvalidWebhook) as raised:
        parse(batch)
    assert raised.value.field == field
