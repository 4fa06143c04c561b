"""Resend: every event type, the Svix / Standard Webhooks signature (signed and cross-checked
with the ``standardwebhooks`` reference package), bad bodies."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from email_delivery.errors import InvalidInput
from email_delivery.providers import (
    InvalidWebhook,
    OutcomeKind,
    ProviderEvent,
    SignatureMismatch,
    resend,
)
from tests.unit.providers.support import DELIVERY_ID, body_of, fixture

SECRET = "whsec_" + base64.b64encode(b"resend-test-signing-secret-0123456789").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"some-other-endpoint-secret-987654321").decode()
MSG_ID = "msg_2tP4Yq7Hn9Kc1Vb8Xz3Lm6Rd0Sw"
EMAIL_ID = "4ef9a417-02e9-4d39-ad75-9611e0fcc33c"


def signed(
    body: bytes,
    *,
    secret: str = SECRET,
    msg_id: str = MSG_ID,
    at: datetime | None = None,
    prefix: str = "svix",
) -> dict[str, str]:
    """Headers as Resend sends them, signed by the reference implementation."""
    moment = at or datetime.now(UTC)
    signature = Webhook(secret).sign(msg_id=msg_id, timestamp=moment, data=body.decode())
    return {
        f"{prefix}-id": msg_id,
        f"{prefix}-timestamp": str(int(moment.timestamp())),
        f"{prefix}-signature": signature,
        "Content-Type": "application/json",
    }


def parse(event: Any, **options: Any) -> list[ProviderEvent]:
    body = body_of(event)
    return resend.parse(body, signed(body), secret=SECRET, **options)


def test_a_bounce_is_a_permanent_bounce_with_everything_filled() -> None:
    assert parse(fixture("resend", "bounced.json")) == [
        ProviderEvent(
            provider="resend",
            event_id=MSG_ID,
            kind=OutcomeKind.BOUNCED,
            occurred_at=datetime(2025, 3, 4, 10, 15, 6, 101000, tzinfo=UTC),
            provider_message_id=EMAIL_ID,
            delivery_id=DELIVERY_ID,
            recipient="ada.lovelace@example.com",
            permanent=True,
            reason="Permanent/General: The recipient's mail server rejected the message "
            "permanently: the mailbox does not exist.",
            smtp_code=None,
            provider_event_type="email.bounced",
        )
    ]


@pytest.mark.parametrize(
    ("name", "kind", "reason"),
    [
        ("delivered.json", OutcomeKind.DELIVERED, None),
        ("delivery-delayed.json", OutcomeKind.DEFERRED, None),
        ("complained.json", OutcomeKind.COMPLAINED, None),
        ("opened.json", OutcomeKind.OPENED, None),
        ("clicked.json", OutcomeKind.CLICKED, None),
        ("failed.json", OutcomeKind.REJECTED, "reached_daily_quota"),
        (
            "suppressed.json",
            OutcomeKind.REJECTED,
            "OnAccountSuppressionList: This address is on the account's suppression list, "
            "so the email was not sent.",
        ),
    ],
)
def test_each_resend_event_type(name: str, kind: OutcomeKind, reason: str | None) -> None:
    event_json = fixture("resend", name)
    (event,) = parse(event_json)
    assert event.kind is kind
    assert event.reason == reason
    assert event.permanent is None
    assert event.provider_event_type == event_json["type"]
    assert event.occurred_at == datetime.fromisoformat(event_json["created_at"])
    assert event.provider_message_id == EMAIL_ID
    assert event.delivery_id == DELIVERY_ID
    assert event.recipient == "ada.lovelace@example.com"
    assert event.event_id == MSG_ID


@pytest.mark.parametrize(
    "name", ["sent.json", "scheduled.json", "received.json", "contact-created.json"]
)
def test_sent_scheduled_inbound_and_other_resources_are_ignored(name: str) -> None:
    assert parse(fixture("resend", name)) == []


@pytest.mark.parametrize(
    ("bounce", "permanent"),
    [
        ({"type": "Permanent", "subType": "General", "message": "m"}, True),
        ({"type": "Transient", "subType": "MailboxFull", "message": "m"}, False),
        ({"type": "Undetermined", "subType": "Undetermined", "message": "m"}, None),
        (None, None),
    ],
)
def test_the_bounce_type_decides_permanence(bounce: Any, permanent: bool | None) -> None:
    event_json = fixture("resend", "bounced.json")
    event_json["data"]["bounce"] = bounce
    (event,) = parse(event_json)
    assert event.kind is OutcomeKind.BOUNCED
    assert event.permanent is permanent


def test_a_retry_signed_later_is_the_same_event() -> None:
    body = body_of(fixture("resend", "delivered.json"))
    first = resend.parse(body, signed(body), secret=SECRET)
    retry = resend.parse(
        body, signed(body, at=datetime.now(UTC) - timedelta(minutes=2)), secret=SECRET
    )
    assert first == retry
    assert first[0].event_id == MSG_ID


def test_tags_in_the_send_api_list_form_and_headers_carry_our_id() -> None:
    event_json = fixture("resend", "delivered.json")
    event_json["data"]["tags"] = [{"name": "delivery_id", "value": DELIVERY_ID}]
    event_json["data"]["headers"] = [{"name": "X-Email-Delivery-Id", "value": DELIVERY_ID}]
    assert parse(event_json)[0].delivery_id == DELIVERY_ID
    del event_json["data"]["tags"]
    assert parse(event_json)[0].delivery_id == DELIVERY_ID


def test_tag_and_header_that_disagree_are_refused() -> None:
    event_json = fixture("resend", "delivered.json")
    event_json["data"]["headers"] = [{"name": "X-Email-Delivery-Id", "value": "01HZXOTHER"}]
    with pytest.raises(InvalidWebhook) as raised:
        parse(event_json)
    assert raised.value.field == "body.data.headers[X-Email-Delivery-Id]"


def test_several_recipients_leave_the_recipient_open() -> None:
    event_json = fixture("resend", "delivered.json")
    event_json["data"]["to"] = ["ada.lovelace@example.com", "grace@example.org"]
    assert parse(event_json)[0].recipient is None
    event_json["data"]["to"] = "Ada <Ada.Lovelace@Example.com>"
    assert parse(event_json)[0].recipient == "ada.lovelace@example.com"


# -- signature --------------------------------------------------------------------------------


def test_our_verification_agrees_with_the_reference_package() -> None:
    body = body_of(fixture("resend", "bounced.json"))
    headers = signed(body)
    webhook_headers = {name.replace("svix-", "webhook-"): value for name, value in headers.items()}
    # The reference accepts what we accept…
    Webhook(SECRET).verify(body, webhook_headers)
    assert resend.verify_signature(body, headers, secret=SECRET) == MSG_ID
    # …and refuses what we refuse.
    tampered = body.replace(b"Permanent", b"Transient")
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(tampered, webhook_headers)
    with pytest.raises(SignatureMismatch):
        resend.verify_signature(tampered, headers, secret=SECRET)


def test_standard_webhooks_header_names_are_accepted() -> None:
    body = body_of(fixture("resend", "delivered.json"))
    events = resend.parse(body, signed(body, prefix="webhook"), secret=SECRET)
    assert [e.kind for e in events] == [OutcomeKind.DELIVERED]


def test_one_matching_signature_among_several_is_enough() -> None:
    body = body_of(fixture("resend", "delivered.json"))
    headers = signed(body)
    old = signed(body, secret=OTHER_SECRET)["svix-signature"]
    headers["svix-signature"] = f"v1a,bm90LWEtdjE= v1,!!! {old} {headers['svix-signature']}"
    assert len(resend.parse(body, headers, secret=SECRET)) == 1


def test_a_tampered_body_is_refused() -> None:
    body = body_of(fixture("resend", "bounced.json"))
    headers = signed(body)
    with pytest.raises(SignatureMismatch) as raised:
        resend.parse(body.replace(b"Permanent", b"Transient"), headers, secret=SECRET)
    assert raised.value.field == "headers.svix-signature"


def test_a_signature_by_another_secret_is_refused() -> None:
    body = body_of(fixture("resend", "bounced.json"))
    with pytest.raises(SignatureMismatch) as raised:
        resend.parse(body, signed(body, secret=OTHER_SECRET), secret=SECRET)
    assert raised.value.field == "headers.svix-signature"


def test_a_signature_for_another_message_id_is_refused() -> None:
    body = body_of(fixture("resend", "bounced.json"))
    headers = signed(body) | {"svix-id": "msg_someoneelse"}
    with pytest.raises(SignatureMismatch) as raised:
        resend.parse(body, headers, secret=SECRET)
    assert raised.value.field == "headers.svix-signature"


@pytest.mark.parametrize("age", [timedelta(minutes=6), timedelta(minutes=-6), timedelta(days=3)])
def test_a_timestamp_outside_the_tolerance_is_refused(age: timedelta) -> None:
    body = body_of(fixture("resend", "bounced.json"))
    headers = signed(body, at=datetime.now(UTC) - age)
    with pytest.raises(SignatureMismatch) as raised:
        resend.parse(body, headers, secret=SECRET)
    assert raised.value.field == "headers.svix-timestamp"
    # A wider tolerance accepts it.
    assert len(resend.parse(body, headers, secret=SECRET, tolerance=age + timedelta(days=1))) == 1


@pytest.mark.parametrize("header", ["svix-id", "svix-timestamp", "svix-signature"])
def test_a_missing_signature_header_is_refused(header: str) -> None:
    body = body_of(fixture("resend", "bounced.json"))
    headers = signed(body)
    del headers[header]
    with pytest.raises(SignatureMismatch) as raised:
        resend.parse(body, headers, secret=SECRET)
    assert raised.value.field == f"headers.{header}"


def test_a_malformed_timestamp_is_refused() -> None:
    body = body_of(fixture("resend", "bounced.json"))
    headers = signed(body) | {"svix-timestamp": "yesterday"}
    with pytest.raises(SignatureMismatch) as raised:
        resend.parse(body, headers, secret=SECRET)
    assert raised.value.field == "headers.svix-timestamp"


@pytest.mark.parametrize("secret", ["", "whsec_", "whsec_not base64!"])
def test_an_unusable_secret_is_a_configuration_error(secret: str) -> None:
    body = body_of(fixture("resend", "bounced.json"))
    with pytest.raises(InvalidInput) as raised:
        resend.parse(body, signed(body), secret=secret)
    assert raised.value.field == "secret"
    assert not isinstance(raised.value, InvalidWebhook)


# -- bad bodies -------------------------------------------------------------------------------


def signed_parse(body: bytes) -> list[ProviderEvent]:
    return resend.parse(body, signed(body), secret=SECRET)


@pytest.mark.parametrize(
    ("body", "field"),
    [(b"not json", "body"), (b"[]", "body"), (b'{"data": {}}', "body.type")],
)
def test_a_signed_body_that_is_not_a_resend_event_is_refused(body: bytes, field: str) -> None:
    with pytest.raises(InvalidWebhook) as raised:
        signed_parse(body)
    assert raised.value.field == field


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda e: e.update(type="email.teleported"), "body.type"),
        (lambda e: e.pop("data"), "body.data"),
        (lambda e: e["data"].pop("email_id"), "body.data.email_id"),
        (lambda e: e.update(created_at="2025-03-04 10:15"), "body.created_at"),
        (lambda e: e.pop("created_at"), "body.created_at"),
        (lambda e: e["data"].update(to=["not-an-address"]), "body.data.to[0]"),
        (lambda e: e["data"].update(to={"a": 1}), "body.data.to"),
        (lambda e: e["data"]["tags"].update(delivery_id=17), "body.data.tags.delivery_id"),
        (lambda e: e["data"].update(bounce="hard"), "body.data.bounce"),
    ],
)
def test_a_bad_event_is_refused_naming_the_field(change: Any, field: str) -> None:
    event_json = fixture("resend", "bounced.json")
    change(event_json)
    with pytest.raises(InvalidWebhook) as raised:
        parse(event_json)
    assert raised.value.field == field
