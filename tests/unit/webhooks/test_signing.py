"""Standard Webhooks signatures, cross-checked both ways with the ``standardwebhooks``
reference package: what we sign it verifies, what it signs we verify, and every way a
request can fail to prove itself."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from email_delivery.errors import InvalidInput
from email_delivery.webhooks import signing
from email_delivery.webhooks.signing import InvalidWebhookSignature

SECRET = signing.generate_secret()
OLD_SECRET = signing.generate_secret()
MSG_ID = "msg_4f1d2c0b9a8e7d6c5b4a39281706f5e4"
BODY = b'{"type":"delivery.status_changed","version":1}'


def now() -> datetime:
    return datetime.now(UTC)


def test_generated_secrets_are_whsec_base64_of_32_random_bytes() -> None:
    one, two = signing.generate_secret(), signing.generate_secret()
    assert one != two
    for secret in (one, two):
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert len(base64.b64decode(signing.generate_secret(64)[6:])) == 64


@pytest.mark.parametrize("nbytes", [0, 23, 65, True, "32"])
def test_secrets_shorter_than_24_or_longer_than_64_bytes_are_refused(nbytes: object) -> None:
    with pytest.raises(InvalidInput) as caught:
        signing.generate_secret(nbytes)  # type: ignore[arg-type]
    assert caught.value.field == "nbytes"


def test_what_we_sign_the_reference_implementation_verifies() -> None:
    at = now()
    sent = signing.headers(SECRET, message_id=MSG_ID, timestamp=at, body=BODY)
    assert sent == {
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": sent["webhook-signature"],
    }
    assert sent["webhook-signature"].startswith("v1,")
    assert Webhook(SECRET).verify(BODY, sent) == {
        "type": "delivery.status_changed",
        "version": 1,
    }


def test_what_the_reference_implementation_signs_we_verify() -> None:
    at = now()
    reference = Webhook(SECRET).sign(msg_id=MSG_ID, timestamp=at, data=BODY.decode())
    received = {
        "Webhook-Id": MSG_ID,  # header names in any case
        "WEBHOOK-TIMESTAMP": str(int(at.timestamp())),
        "webhook-signature": reference,
    }
    assert signing.verify(SECRET, received, BODY) == MSG_ID
    assert signing.sign(SECRET, message_id=MSG_ID, timestamp=at, body=BODY) == reference


def test_the_signature_is_the_documented_hmac() -> None:
    """HMAC-SHA256 keyed with the decoded secret over ``{id}.{timestamp}.{body}``."""
    import hashlib
    import hmac

    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    digest = hmac.new(key, f"{MSG_ID}.1700000000.".encode() + BODY, hashlib.sha256).digest()
    assert signing.sign(SECRET, message_id=MSG_ID, timestamp=1_700_000_000, body=BODY) == (
        "v1," + base64.b64encode(digest).decode()
    )


def test_a_tampered_body_fails_here_and_in_the_reference() -> None:
    sent = signing.headers(SECRET, message_id=MSG_ID, timestamp=now(), body=BODY)
    tampered = BODY.replace(b"1", b"2")
    with pytest.raises(InvalidWebhookSignature) as caught:
        signing.verify(SECRET, sent, tampered)
    assert caught.value.field == "headers.webhook-signature"
    assert isinstance(caught.value, InvalidInput)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(tampered, sent)


def test_a_changed_message_id_or_timestamp_fails() -> None:
    at = now()
    sent = signing.headers(SECRET, message_id=MSG_ID, timestamp=at, body=BODY)
    for changed in (
        {**sent, "webhook-id": MSG_ID + "x"},
        {**sent, "webhook-timestamp": str(int(at.timestamp()) + 1)},
    ):
        with pytest.raises(InvalidWebhookSignature) as caught:
            signing.verify(SECRET, changed, BODY)
        assert caught.value.field == "headers.webhook-signature"


def test_the_wrong_secret_fails_both_ways() -> None:
    sent = signing.headers(SECRET, message_id=MSG_ID, timestamp=now(), body=BODY)
    with pytest.raises(InvalidWebhookSignature):
        signing.verify(OLD_SECRET, sent, BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(OLD_SECRET).verify(BODY, sent)
    theirs = signing.headers(OLD_SECRET, message_id=MSG_ID, timestamp=now(), body=BODY)
    with pytest.raises(InvalidWebhookSignature):
        signing.verify(SECRET, theirs, BODY)


@pytest.mark.parametrize(
    ("offset", "reason"),
    [(timedelta(minutes=-5, seconds=-2), "too old"), (timedelta(minutes=5, seconds=2), "too new")],
)
def test_timestamps_outside_the_tolerance_fail_here_and_in_the_reference(
    offset: timedelta, reason: str
) -> None:
    at = now() + offset
    sent = signing.headers(SECRET, message_id=MSG_ID, timestamp=at, body=BODY)
    with pytest.raises(InvalidWebhookSignature) as caught:
        signing.verify(SECRET, sent, BODY)
    assert caught.value.field == "headers.webhook-timestamp"
    assert reason in str(caught.value)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(BODY, sent)


def test_the_tolerance_and_the_clock_can_be_given() -> None:
    at = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    sent = signing.headers(SECRET, message_id=MSG_ID, timestamp=at, body=BODY)
    assert signing.verify(SECRET, sent, BODY, now=at + timedelta(minutes=5)) == MSG_ID
    assert signing.verify(SECRET, sent, BODY, now=at - timedelta(minutes=5)) == MSG_ID
    with pytest.raises(InvalidWebhookSignature, match="too old"):
        signing.verify(SECRET, sent, BODY, now=at + timedelta(minutes=5, seconds=1))
    with pytest.raises(InvalidWebhookSignature, match="too old"):
        signing.verify(
            SECRET, sent, BODY, now=at + timedelta(seconds=31), tolerance=timedelta(seconds=30)
        )
    assert signing.verify(
        SECRET, sent, BODY, now=at + timedelta(hours=1), tolerance=timedelta(hours=2)
    )


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_a_missing_header_is_named(missing: str) -> None:
    sent = signing.headers(SECRET, message_id=MSG_ID, timestamp=now(), body=BODY)
    del sent[missing]
    with pytest.raises(InvalidWebhookSignature) as caught:
        signing.verify(SECRET, sent, BODY)
    assert caught.value.field == f"headers.{missing}"
    assert "missing" in str(caught.value)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(BODY, sent)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("webhook-timestamp", "1.7e9"),
        ("webhook-timestamp", "-5"),
        ("webhook-timestamp", "soon"),
        ("webhook-id", "msg.with.dots"),
        ("webhook-id", "msg with spaces"),
        ("webhook-signature", "   "),
    ],
)
def test_a_malformed_header_is_named(name: str, value: str) -> None:
    sent = signing.headers(SECRET, message_id=MSG_ID, timestamp=now(), body=BODY)
    sent[name] = value
    with pytest.raises(InvalidWebhookSignature) as caught:
        signing.verify(SECRET, sent, BODY)
    assert caught.value.field == f"headers.{name}"


def test_a_timestamp_far_in_the_future_is_too_new_not_a_crash() -> None:
    sent = signing.headers(SECRET, message_id=MSG_ID, timestamp=999_999_999_999, body=BODY)
    with pytest.raises(InvalidWebhookSignature, match="too new"):
        signing.verify(SECRET, sent, BODY)
    sent["webhook-timestamp"] = "0"
    with pytest.raises(InvalidWebhookSignature, match="too old"):
        signing.verify(SECRET, sent, BODY)


def test_a_header_given_twice_in_different_case_is_refused() -> None:
    sent = signing.headers(SECRET, message_id=MSG_ID, timestamp=now(), body=BODY)
    sent["Webhook-Signature"] = sent["webhook-signature"]
    with pytest.raises(InvalidWebhookSignature, match="more than once"):
        signing.verify(SECRET, sent, BODY)


def test_key_rotation_signs_with_both_secrets_and_either_verifies() -> None:
    at = now()
    sent = signing.headers([SECRET, OLD_SECRET], message_id=MSG_ID, timestamp=at, body=BODY)
    entries = sent["webhook-signature"].split(" ")
    assert len(entries) == 2
    assert entries[0] == signing.sign(SECRET, message_id=MSG_ID, timestamp=at, body=BODY)
    assert entries[1] == signing.sign(OLD_SECRET, message_id=MSG_ID, timestamp=at, body=BODY)
    # A receiver that knows only one of the two accepts the request, ours and the reference.
    for secret in (SECRET, OLD_SECRET):
        assert signing.verify(secret, sent, BODY) == MSG_ID
        Webhook(secret).verify(BODY, sent)
    # A receiver mid-rotation holds both.
    single = signing.headers(OLD_SECRET, message_id=MSG_ID, timestamp=at, body=BODY)
    assert signing.verify([SECRET, OLD_SECRET], single, BODY) == MSG_ID


def test_signature_lists_skip_other_schemes_and_garbage() -> None:
    at = now()
    good = signing.sign(SECRET, message_id=MSG_ID, timestamp=at, body=BODY)
    sent = {
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": f"v1a,AAAA v2,{good[3:]} v1,!!!! v1,a v1 {good}",
    }
    assert signing.verify(SECRET, sent, BODY) == MSG_ID
    sent["webhook-signature"] = f"v1a,AAAA v1,{base64.b64encode(b'x' * 32).decode()}"
    with pytest.raises(InvalidWebhookSignature):
        signing.verify(SECRET, sent, BODY)


@pytest.mark.parametrize(
    "secret",
    [
        "",
        "not-a-secret",
        base64.b64encode(bytes(32)).decode(),  # no prefix
        "whsec_" + base64.b64encode(bytes(23)).decode(),
        "whsec_" + base64.b64encode(bytes(65)).decode(),
        "whsec_***notbase64***",
        None,
    ],
)
def test_bad_secrets_are_refused_without_repeating_them(secret: object) -> None:
    for call in (
        lambda: signing.sign(secret, message_id=MSG_ID, timestamp=1, body=BODY),  # type: ignore[arg-type]
        lambda: signing.verify(secret, {}, BODY),  # type: ignore[arg-type]
    ):
        with pytest.raises(InvalidInput) as caught:
            call()
        assert not isinstance(caught.value, InvalidWebhookSignature)
        assert caught.value.field == "secret"
        if isinstance(secret, str) and len(secret) > 20:
            assert secret.removeprefix("whsec_") not in str(caught.value)


def test_unpadded_secrets_are_accepted_like_the_reference_does() -> None:
    padded = "whsec_" + base64.b64encode(bytes(range(25))).decode()
    assert padded.endswith("=")
    unpadded = padded.rstrip("=")
    assert signing.sign(unpadded, message_id=MSG_ID, timestamp=5, body=BODY) == signing.sign(
        padded, message_id=MSG_ID, timestamp=5, body=BODY
    )


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"message_id": "msg.1"}, "message_id"),
        ({"message_id": ""}, "message_id"),
        ({"message_id": "msg\r\nx-injected: 1"}, "message_id"),
        ({"timestamp": datetime(2025, 1, 1)}, "timestamp"),
        ({"timestamp": -1}, "timestamp"),
        ({"timestamp": 1.5}, "timestamp"),
        ({"body": "text"}, "body"),
        ({"body": {"a": 1}}, "body"),
    ],
)
def test_bad_arguments_to_sign_name_their_field(arguments: dict[str, object], field: str) -> None:
    call = {"message_id": MSG_ID, "timestamp": 1_700_000_000, "body": BODY, **arguments}
    with pytest.raises(InvalidInput) as caught:
        signing.sign(SECRET, **call)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_a_naive_now_or_a_non_positive_tolerance_is_a_configuration_error() -> None:
    sent = signing.headers(SECRET, message_id=MSG_ID, timestamp=now(), body=BODY)
    with pytest.raises(InvalidInput) as caught:
        signing.verify(SECRET, sent, BODY, now=datetime(2025, 1, 1))
    assert caught.value.field == "now"
    with pytest.raises(InvalidInput) as caught:
        signing.verify(SECRET, sent, BODY, tolerance=timedelta(0))
    assert caught.value.field == "tolerance"
