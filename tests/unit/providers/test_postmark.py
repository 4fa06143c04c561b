"""Postmark: every record type and bounce type, the optional basic-auth check, bad bodies."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from email_delivery.errors import InvalidInput
from email_delivery.providers import (
    InvalidWebhook,
    OutcomeKind,
    ProviderEvent,
    SignatureMismatch,
    postmark,
)
from tests.unit.providers.support import DELIVERY_ID, body_of, fixture

MESSAGE_ID = "8a3d5c1e-7b2f-4e9a-b6c4-2d1f0e9a8b7c"


def parse(record: Any, **options: Any) -> list[ProviderEvent]:
    return postmark.parse(body_of(record), {"Content-Type": "application/json"}, **options)


def sha256_of(record: Any) -> str:
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def test_a_hard_bounce_is_a_permanent_bounce_with_everything_filled() -> None:
    assert parse(fixture("postmark", "bounce-hard.json")) == [
        ProviderEvent(
            provider="postmark",
            event_id="4323372036",
            kind=OutcomeKind.BOUNCED,
            # 05:15:10.2735393-05:00, seven fractional digits, is 10:15:10.273539 UTC.
            occurred_at=datetime(2025, 3, 4, 10, 15, 10, 273539, tzinfo=UTC),
            provider_message_id=MESSAGE_ID,
            delivery_id=DELIVERY_ID,
            recipient="ada.lovelace@example.com",
            permanent=True,
            reason="smtp;550 5.1.1 The email account that you tried to reach does not exist.",
            smtp_code=550,
            provider_event_type="HardBounce",
        )
    ]


@pytest.mark.parametrize(
    ("name", "kind", "occurred_at", "reason", "smtp_code"),
    [
        (
            "delivery.json",
            OutcomeKind.DELIVERED,
            datetime(2025, 3, 4, 10, 15, 4, 907025, tzinfo=UTC),
            "smtp;250 2.0.0 OK 1709547304 x12-20020a05600c1a0c00b00412a1234abcsi123456wmb.12"
            " - gsmtp",
            250,
        ),
        (
            "open.json",
            OutcomeKind.OPENED,
            datetime(2025, 3, 4, 10, 31, 19, 746534, tzinfo=UTC),
            None,
            None,
        ),
        (
            "click.json",
            OutcomeKind.CLICKED,
            datetime(2025, 3, 4, 10, 32, 25, 570325, tzinfo=UTC),
            None,
            None,
        ),
    ],
)
def test_delivery_open_and_click_records(
    name: str, kind: OutcomeKind, occurred_at: datetime, reason: str | None, smtp_code: int | None
) -> None:
    record = fixture("postmark", name)
    (event,) = parse(record)
    assert event.kind is kind
    assert event.occurred_at == occurred_at
    assert event.reason == reason
    assert event.smtp_code == smtp_code
    assert event.recipient == "ada.lovelace@example.com"
    assert event.delivery_id == DELIVERY_ID
    assert event.provider_message_id == MESSAGE_ID
    assert event.permanent is None
    assert event.provider_event_type == record["RecordType"]
    # These records have no id of their own: the event id is the record's canonical hash.
    assert event.event_id == sha256_of(record)


def test_a_spam_complaint_is_a_complaint_with_its_id() -> None:
    (event,) = parse(fixture("postmark", "spam-complaint.json"))
    assert event.kind is OutcomeKind.COMPLAINED
    assert event.event_id == "4323372099"
    assert event.reason == "Feedback loop report from the recipient's provider"
    assert event.occurred_at == datetime(2025, 3, 5, 8, 1, 12, tzinfo=UTC)
    assert event.provider_event_type == "SpamComplaint"


@pytest.mark.parametrize(
    ("bounce_type", "expected"),
    [
        ("HardBounce", (OutcomeKind.BOUNCED, True)),
        ("SoftBounce", (OutcomeKind.BOUNCED, False)),
        ("Blocked", (OutcomeKind.BOUNCED, False)),
        ("SpamNotification", (OutcomeKind.BOUNCED, False)),
        ("VirusNotification", (OutcomeKind.BOUNCED, False)),
        ("DMARCPolicy", (OutcomeKind.BOUNCED, True)),
        ("Unknown", (OutcomeKind.BOUNCED, None)),
        ("SomethingPostmarkAddsLater", (OutcomeKind.BOUNCED, None)),
        ("Transient", (OutcomeKind.DEFERRED, None)),
        ("DnsError", (OutcomeKind.DEFERRED, None)),
        ("SpamComplaint", (OutcomeKind.COMPLAINED, None)),
        ("BadEmailAddress", (OutcomeKind.REJECTED, None)),
        ("ManuallyDeactivated", (OutcomeKind.REJECTED, None)),
        ("Unconfirmed", (OutcomeKind.REJECTED, None)),
        ("SMTPApiError", (OutcomeKind.REJECTED, None)),
        ("TemplateRenderingFailed", (OutcomeKind.REJECTED, None)),
        ("Unsubscribe", None),
        ("Subscribe", None),
        ("AutoResponder", None),
        ("AddressChange", None),
        ("OpenRelayTest", None),
        ("ChallengeVerification", None),
        ("InboundError", None),
    ],
)
def test_each_bounce_type(
    bounce_type: str, expected: tuple[OutcomeKind, bool | None] | None
) -> None:
    record = fixture("postmark", "bounce-hard.json")
    record["Type"] = bounce_type
    events = parse(record)
    if expected is None:
        assert events == []
        return
    (event,) = events
    assert (event.kind, event.permanent) == expected
    assert event.provider_event_type == bounce_type
    assert event.event_id == "4323372036"


def test_every_documented_bounce_type_is_in_the_table() -> None:
    documented = {
        "HardBounce", "Transient", "Unsubscribe", "Subscribe", "AutoResponder",
        "AddressChange", "DnsError", "SpamNotification", "OpenRelayTest", "Unknown",
        "SoftBounce", "VirusNotification", "ChallengeVerification", "BadEmailAddress",
        "SpamComplaint", "ManuallyDeactivated", "Unconfirmed", "Blocked", "SMTPApiError",
        "InboundError", "DMARCPolicy", "TemplateRenderingFailed",
    }  # fmt: skip
    assert documented <= set(postmark.BOUNCE_TYPES)


@pytest.mark.parametrize("name", ["subscription-change.json", "bounce-unsubscribe.json"])
def test_subscription_changes_and_unsubscribe_bounces_are_ignored(name: str) -> None:
    assert parse(fixture("postmark", name)) == []


def test_the_same_record_twice_has_the_same_event_id_and_two_opens_differ() -> None:
    first = parse(fixture("postmark", "open.json"))
    assert parse(fixture("postmark", "open.json")) == first
    later = fixture("postmark", "open.json")
    later["ReceivedAt"] = "2025-03-04T18:02:00.1234567Z"
    later["FirstOpen"] = False
    assert parse(later)[0].event_id != first[0].event_id


def test_a_record_without_our_id_has_none() -> None:
    record = fixture("postmark", "delivery.json")
    del record["Metadata"]
    assert parse(record)[0].delivery_id is None


# -- basic auth -------------------------------------------------------------------------------


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_basic_auth_accepts_the_right_credentials() -> None:
    body = body_of(fixture("postmark", "delivery.json"))
    events = postmark.parse(body, basic("postmark", "s3cret"), basic_auth=("postmark", "s3cret"))
    assert [e.kind for e in events] == [OutcomeKind.DELIVERED]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic("postmark", "wrong"),
        basic("someone", "s3cret"),
        {"Authorization": "Bearer s3cret"},
        {"Authorization": "Basic !!!"},
    ],
)
def test_basic_auth_refuses_missing_or_wrong_credentials(headers: dict[str, str]) -> None:
    body = body_of(fixture("postmark", "delivery.json"))
    with pytest.raises(SignatureMismatch) as raised:
        postmark.parse(body, headers, basic_auth=("postmark", "s3cret"))
    assert raised.value.field == "headers.authorization"


def test_a_bad_basic_auth_argument_is_a_configuration_error() -> None:
    body = body_of(fixture("postmark", "delivery.json"))
    with pytest.raises(InvalidInput) as raised:
        postmark.parse(body, basic("a", "b"), basic_auth=("a:b", "c"))
    assert not isinstance(raised.value, InvalidWebhook)
    assert raised.value.field == "basic_auth"


# -- bad bodies -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"", "body"),
        (b"\xff\xfe", "body"),
        (b"[1, 2]", "body"),
        (b'{"RecordType": 7}', "body.RecordType"),
        (b'{"Email": "a@b.c"}', "body.RecordType"),
    ],
)
def test_a_body_that_is_not_a_postmark_record_is_refused(body: bytes, field: str) -> None:
    with pytest.raises(InvalidWebhook) as raised:
        postmark.parse(body, {})
    assert raised.value.field == field


@pytest.mark.parametrize(
    ("name", "change", "field"),
    [
        ("bounce-hard.json", lambda r: r.pop("MessageID"), "body.MessageID"),
        ("bounce-hard.json", lambda r: r.pop("ID"), "body.ID"),
        ("bounce-hard.json", lambda r: r.update(ID=True), "body.ID"),
        ("bounce-hard.json", lambda r: r.pop("Type"), "body.Type"),
        ("bounce-hard.json", lambda r: r.update(Email="nobody"), "body.Email"),
        ("bounce-hard.json", lambda r: r.pop("BouncedAt"), "body.BouncedAt"),
        (
            "delivery.json",
            lambda r: r.update(DeliveredAt="2025-03-04T10:15:04"),
            "body.DeliveredAt",
        ),
        ("delivery.json", lambda r: r.update(Metadata=["x"]), "body.Metadata"),
        (
            "delivery.json",
            lambda r: r["Metadata"].update(delivery_id="has spaces"),
            "body.Metadata.delivery_id",
        ),
        ("open.json", lambda r: r.pop("Recipient"), "body.Recipient"),
        ("click.json", lambda r: r.update(RecordType="Teleport"), "body.RecordType"),
    ],
)
def test_a_bad_record_is_refused_naming_the_field(name: str, change: Any, field: str) -> None:
    record = fixture("postmark", name)
    change(record)
    with pytest.raises(InvalidWebhook) as raised:
        parse(record)
    assert raised.value.field == field


def test_the_inbound_webhook_pointed_here_is_refused() -> None:
    with pytest.raises(InvalidWebhook, match="inbound") as raised:
        parse(fixture("postmark", "inbound.json"))
    assert raised.value.field == "body.RecordType"
