"""Amazon SES via SNS: mapping of every event type, the SNS signature (certificates served by a
real HTTP server on 127.0.0.1), subscription confirmation, and bad bodies."""

from __future__ import annotations

import json
import ssl
import urllib.error
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from email_delivery.errors import InvalidInput
from email_delivery.providers import (
    InvalidWebhook,
    OutcomeKind,
    ProviderEvent,
    SignatureMismatch,
    ses,
)
from tests.unit.providers.support import (
    DELIVERY_ID,
    LocalServer,
    SigningCertificate,
    body_of,
    fixture,
    local_server,
    make_certificate,
    sns_headers,
    sns_notification,
    sns_sign,
)

TOPIC = "arn:aws:sns:eu-west-1:111122223333:email-delivery-events"
CERT_PATH = "/SimpleNotificationService-0000000000000000000000.pem"
SNS_MESSAGE_ID = "5f1c2d3e-4a5b-5c6d-9e7f-8a9b0c1d2e3f"
SES_MESSAGE_ID = "0102018f5b6c7a10-8c2f4e1a-3b5d-4c6e-9f70-81a2b3c4d5e6-000000"


@pytest.fixture(scope="module")
def certificate() -> SigningCertificate:
    return make_certificate()


@pytest.fixture
def server(certificate: SigningCertificate) -> Iterator[LocalServer]:
    with local_server() as running:
        running.routes[CERT_PATH] = certificate.pem
        yield running


def parse(
    envelope: dict[str, Any], server: LocalServer, **options: Any
) -> list[ProviderEvent] | ses.SubscriptionConfirmation:
    options.setdefault("topic_arns", {TOPIC})
    return ses.parse(
        body_of(envelope), sns_headers(envelope), fetch_certificate=server.get, **options
    )


def events_of(name: str, certificate: SigningCertificate, server: LocalServer) -> Any:
    return parse(sns_notification(fixture("ses", name), certificate.key), server)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


# -- mapping -----------------------------------------------------------------------------------


def test_a_bounce_record_becomes_one_permanent_bounce_with_everything_filled(
    certificate: SigningCertificate, server: LocalServer
) -> None:
    events = events_of("bounce.json", certificate, server)

    assert events == [
        ProviderEvent(
            provider="ses",
            event_id=SNS_MESSAGE_ID,
            kind=OutcomeKind.BOUNCED,
            occurred_at=at("2025-03-04T10:15:02.669+00:00"),
            provider_message_id=SES_MESSAGE_ID,
            delivery_id=DELIVERY_ID,
            recipient="ada.lovelace@example.com",
            permanent=True,
            reason="Permanent/General: smtp; 550 5.1.1 user unknown",
            smtp_code=550,
            provider_event_type="Bounce",
        )
    ]
    # The certificate came over HTTP from the local server, through the injected fetcher.
    assert server.requests == [CERT_PATH]


@pytest.mark.parametrize(
    ("name", "kind", "occurred_at", "reason", "smtp_code", "ses_type"),
    [
        (
            "delivery.json",
            OutcomeKind.DELIVERED,
            "2025-03-04T10:15:04.133+00:00",
            "250 2.6.0 Message received",
            250,
            "Delivery",
        ),
        (
            "complaint.json",
            OutcomeKind.COMPLAINED,
            "2025-03-05T08:01:12+00:00",
            "abuse",
            None,
            "Complaint",
        ),
        (
            "delivery-delay.json",
            OutcomeKind.DEFERRED,
            "2025-03-04T13:25:40.095+00:00",
            "TransientCommunicationFailure: smtp; 421 4.4.1 Unable to connect to remote host",
            421,
            "DeliveryDelay",
        ),
        (
            "reject.json",
            OutcomeKind.REJECTED,
            "2025-03-04T10:15:05.675+00:00",  # no time of its own: the SNS Timestamp
            "Bad content",
            None,
            "Reject",
        ),
        (
            "rendering-failure.json",
            OutcomeKind.REJECTED,
            "2025-03-04T10:15:05.675+00:00",
            "Attribute 'inviter_name' is not present in the rendering data.",
            None,
            "Rendering Failure",
        ),
        ("open.json", OutcomeKind.OPENED, "2025-03-04T10:31:19.652+00:00", None, None, "Open"),
        ("click.json", OutcomeKind.CLICKED, "2025-03-04T10:32:25.570+00:00", None, None, "Click"),
    ],
)
def test_each_ses_event_type_maps_to_its_kind(
    certificate: SigningCertificate,
    server: LocalServer,
    name: str,
    kind: OutcomeKind,
    occurred_at: str,
    reason: str | None,
    smtp_code: int | None,
    ses_type: str,
) -> None:
    record = fixture("ses", name)
    (event,) = events_of(name, certificate, server)

    assert event.kind is kind
    assert event.occurred_at == at(occurred_at)
    assert event.reason == reason
    assert event.smtp_code == smtp_code
    assert event.provider_event_type == ses_type
    assert event.permanent is None
    assert event.recipient == "ada.lovelace@example.com"
    assert event.provider_message_id == record["mail"]["messageId"]
    assert event.delivery_id == record["mail"]["tags"]["delivery_id"][0]
    assert event.event_id == SNS_MESSAGE_ID


@pytest.mark.parametrize("name", ["send.json", "subscription.json"])
def test_send_and_subscription_records_are_ignored(
    certificate: SigningCertificate, server: LocalServer, name: str
) -> None:
    assert events_of(name, certificate, server) == []


def test_ses_test_messages_are_ignored(
    certificate: SigningCertificate, server: LocalServer
) -> None:
    first = "Successfully validated SNS topic for Amazon SES event publishing."
    assert parse(sns_notification(first, certificate.key), server) == []
    succeeded = {"notificationType": "AmazonSnsSubscriptionSucceeded", "message": "ok"}
    assert parse(sns_notification(succeeded, certificate.key), server) == []


def test_a_feedback_notification_naming_two_recipients_gives_two_soft_bounces(
    certificate: SigningCertificate, server: LocalServer
) -> None:
    events = events_of("bounce-transient-notification.json", certificate, server)

    assert [(e.recipient, e.permanent, e.reason, e.smtp_code) for e in events] == [
        ("grace@example.org", False, "Transient/MailboxFull: smtp; 552 5.2.2 Mailbox full", 552),
        ("alan@example.org", False, "Transient/MailboxFull", None),
    ]
    # One SNS message, two events: each has its own id.
    assert [e.event_id for e in events] == [
        f"{SNS_MESSAGE_ID}:grace@example.org",
        f"{SNS_MESSAGE_ID}:alan@example.org",
    ]
    # No tags in feedback notifications: the id comes from the header.
    assert {e.delivery_id for e in events} == {"01HZX4B2C3D4E5F6G7H8J9K0MN"}
    assert {e.provider_event_type for e in events} == {"Bounce"}


@pytest.mark.parametrize(
    ("bounce_type", "permanent"),
    [("Permanent", True), ("Transient", False), ("Undetermined", None)],
)
def test_bounce_type_decides_permanence(
    certificate: SigningCertificate,
    server: LocalServer,
    bounce_type: str,
    permanent: bool | None,
) -> None:
    record = fixture("ses", "bounce.json")
    record["bounce"]["bounceType"] = bounce_type
    (event,) = parse(sns_notification(record, certificate.key), server)
    assert event.kind is OutcomeKind.BOUNCED
    assert event.permanent is permanent


def test_the_same_notification_twice_gives_the_same_event_ids(
    certificate: SigningCertificate, server: LocalServer
) -> None:
    envelope = sns_notification(
        fixture("ses", "bounce-transient-notification.json"), certificate.key
    )
    first = parse(envelope, server)
    again = parse(json.loads(json.dumps(envelope)), server)
    assert first == again
    assert [e.event_id for e in first] == [e.event_id for e in again]


def test_the_delivery_id_may_come_from_the_header_alone(
    certificate: SigningCertificate, server: LocalServer
) -> None:
    record = fixture("ses", "bounce.json")
    del record["mail"]["tags"]
    (event,) = parse(sns_notification(record, certificate.key), server)
    assert event.delivery_id == DELIVERY_ID


def test_mail_without_our_id_has_none(certificate: SigningCertificate, server: LocalServer) -> None:
    record = fixture("ses", "delivery.json")
    del record["mail"]["tags"]["delivery_id"]
    record["mail"]["headers"] = [
        h for h in record["mail"]["headers"] if h["name"] != "X-Email-Delivery-Id"
    ]
    (event,) = parse(sns_notification(record, certificate.key), server)
    assert event.delivery_id is None


def test_signature_version_2_is_sha256(
    certificate: SigningCertificate, server: LocalServer
) -> None:
    envelope = sns_notification(
        fixture("ses", "delivery.json"), certificate.key, SignatureVersion="2"
    )
    (event,) = parse(envelope, server)
    assert event.kind is OutcomeKind.DELIVERED


# -- subscription confirmation ------------------------------------------------------------------


def confirmation_envelope(certificate: SigningCertificate, **changes: Any) -> dict[str, Any]:
    envelope = fixture("ses", "sns-subscription-confirmation.json")
    envelope.update(changes)
    return sns_sign(envelope, certificate.key)


def test_a_subscription_confirmation_is_returned_and_confirmed_over_http(
    certificate: SigningCertificate, server: LocalServer
) -> None:
    envelope = confirmation_envelope(certificate)
    confirmation = parse(envelope, server)

    assert confirmation == ses.SubscriptionConfirmation(
        topic_arn=TOPIC,
        subscribe_url=envelope["SubscribeURL"],
        token=envelope["Token"],
        message_id=envelope["MessageId"],
        timestamp=at("2025-03-04T09:45:04.751+00:00"),
    )
    assert isinstance(confirmation, ses.SubscriptionConfirmation)

    server.routes["/"] = b"<ConfirmSubscriptionResponse/>"
    ses.confirm_subscription(confirmation, get=server.get)
    assert server.requests[-1] == (
        f"/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token={envelope['Token']}"
    )


@pytest.mark.parametrize(
    "url",
    [
        "https://attacker.example/?Action=ConfirmSubscription&TopicArn={topic}&Token=t",
        "http://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn={topic}&Token=t",
        "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn={topic}&Token=t",
        "https://sns.eu-west-1.amazonaws.com.attacker.example/?Action=ConfirmSubscription"
        "&TopicArn={topic}&Token=t",
        "https://sns.eu-west-1.amazonaws.com@attacker.example/?Action=ConfirmSubscription"
        "&TopicArn={topic}&Token=t",
        "https://sns.eu-west-1.amazonaws.com:8443/?Action=ConfirmSubscription"
        "&TopicArn={topic}&Token=t",
        "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe&TopicArn={topic}&Token=t",
        "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription"
        "&TopicArn=arn:aws:sns:eu-west-1:999999999999:other&Token=t",
        "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn={topic}",
    ],
)
def test_confirm_subscription_requests_nothing_but_an_sns_url_of_the_topic(
    server: LocalServer, url: str
) -> None:
    confirmation = ses.SubscriptionConfirmation(
        topic_arn=TOPIC,
        subscribe_url=url.format(topic=TOPIC),
        token="t",
        message_id="m",
        timestamp=datetime.now(UTC),
    )
    with pytest.raises(InvalidWebhook) as raised:
        ses.confirm_subscription(confirmation, get=server.get)
    assert raised.value.field == "subscribe_url"
    assert server.requests == []


def test_a_confirmation_whose_subscribe_url_is_not_sns_is_refused(
    certificate: SigningCertificate, server: LocalServer
) -> None:
    envelope = confirmation_envelope(
        certificate, SubscribeURL="https://attacker.example/?Action=ConfirmSubscription&Token=t"
    )
    with pytest.raises(InvalidWebhook) as raised:
        parse(envelope, server)
    assert raised.value.field == "body.SubscribeURL"


def test_an_unsubscribe_confirmation_yields_nothing(
    certificate: SigningCertificate, server: LocalServer
) -> None:
    envelope = confirmation_envelope(certificate, Type="UnsubscribeConfirmation")
    assert parse(envelope, server) == []


# -- signature ----------------------------------------------------------------------------------


def test_a_tampered_message_is_refused(
    certificate: SigningCertificate, server: LocalServer
) -> None:
    envelope = sns_notification(fixture("ses", "bounce.json"), certificate.key)
    record = json.loads(envelope["Message"])
    record["bounce"]["bounceType"] = "Transient"
    envelope["Message"] = json.dumps(record)
    with pytest.raises(SignatureMismatch) as raised:
        parse(envelope, server)
    assert raised.value.field == "body.Signature"


def test_a_signature_by_another_key_is_refused(
    certificate: SigningCertificate, server: LocalServer
) -> None:
    other = make_certificate()
    envelope = sns_notification(fixture("ses", "bounce.json"), other.key)
    with pytest.raises(SignatureMismatch) as raised:
        parse(envelope, server)
    assert raised.value.field == "body.Signature"
    assert server.requests == [CERT_PATH]


def test_a_missing_signature_is_refused(
    certificate: SigningCertificate, server: LocalServer
) -> None:
    envelope = sns_notification(fixture("ses", "bounce.json"), certificate.key)
    del envelope["Signature"]
    with pytest.raises(SignatureMismatch) as raised:
        parse(envelope, server)
    assert raised.value.field == "body.Signature"


def test_an_unknown_signature_version_is_refused(
    certificate: SigningCertificate, server: LocalServer
) -> None:
    envelope = sns_notification(fixture("ses", "bounce.json"), certificate.key)
    envelope["SignatureVersion"] = "3"
    with pytest.raises(SignatureMismatch) as raised:
        parse(envelope, server)
    assert raised.value.field == "body.SignatureVersion"


@pytest.mark.parametrize(
    "url",
    [
        "http://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0000000000000000000000.pem",
        "https://attacker.example/SimpleNotificationService-0000000000000000000000.pem",
        "https://sns.eu-west-1.amazonaws.com.attacker.example/SimpleNotificationService-0.pem",
        "https://sns.eu-west-1.amazonaws.com@attacker.example/SimpleNotificationService-0.pem",
        "https://s3.amazonaws.com/SimpleNotificationService-0000000000000000000000.pem",
        "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0.pem?x=1",
        "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0.txt",
        "https://sns.eu-west-1.amazonaws.com:8443/SimpleNotificationService-0.pem",
    ],
)
def test_a_certificate_url_off_sns_is_refused_before_any_request(
    certificate: SigningCertificate, server: LocalServer, url: str
) -> None:
    envelope = sns_notification(fixture("ses", "bounce.json"), certificate.key, SigningCertURL=url)
    with pytest.raises(SignatureMismatch) as raised:
        parse(envelope, server)
    assert raised.value.field == "body.SigningCertURL"
    assert server.requests == []


def test_an_expired_certificate_is_refused(server: LocalServer) -> None:
    expired = make_certificate(not_before_days=-30, days=-1)
    server.routes[CERT_PATH] = expired.pem
    envelope = sns_notification(fixture("ses", "bounce.json"), expired.key)
    with pytest.raises(SignatureMismatch, match="not valid now"):
        parse(envelope, server)


def test_a_stale_timestamp_is_refused_only_with_a_tolerance(
    certificate: SigningCertificate, server: LocalServer
) -> None:
    envelope = sns_notification(fixture("ses", "bounce.json"), certificate.key)
    # SNS retries keep the first Timestamp, so by default age is not checked.
    assert len(parse(envelope, server)) == 1
    with pytest.raises(SignatureMismatch) as raised:
        parse(envelope, server, tolerance=timedelta(minutes=5))
    assert raised.value.field == "body.Timestamp"

    fresh = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    envelope = sns_notification(fixture("ses", "bounce.json"), certificate.key, Timestamp=fresh)
    assert len(parse(envelope, server, tolerance=timedelta(minutes=5))) == 1


def test_a_topic_not_subscribed_is_refused_before_any_request(
    certificate: SigningCertificate, server: LocalServer
) -> None:
    envelope = sns_notification(fixture("ses", "bounce.json"), certificate.key)
    with pytest.raises(InvalidWebhook) as raised:
        parse(envelope, server, topic_arns={"arn:aws:sns:eu-west-1:111122223333:other"})
    assert raised.value.field == "body.TopicArn"
    assert server.requests == []
    # None accepts any topic.
    assert len(parse(envelope, server, topic_arns=None)) == 1


def test_topic_arns_must_be_a_collection_not_a_string(
    certificate: SigningCertificate, server: LocalServer
) -> None:
    envelope = sns_notification(fixture("ses", "bounce.json"), certificate.key)
    with pytest.raises(InvalidInput) as raised:
        parse(envelope, server, topic_arns=TOPIC)
    assert not isinstance(raised.value, InvalidWebhook)


def test_headers_that_contradict_the_body_are_refused(
    certificate: SigningCertificate, server: LocalServer
) -> None:
    envelope = sns_notification(fixture("ses", "bounce.json"), certificate.key)
    headers = sns_headers(envelope) | {"x-amz-sns-message-type": "SubscriptionConfirmation"}
    with pytest.raises(InvalidWebhook) as raised:
        ses.parse(body_of(envelope), headers, topic_arns={TOPIC}, fetch_certificate=server.get)
    assert raised.value.field == "headers.x-amz-sns-message-type"


def test_the_default_fetcher_refuses_a_url_off_sns_without_a_request() -> None:
    with pytest.raises(SignatureMismatch):
        ses.download_certificate("https://attacker.example/cert.pem")


# -- bad bodies ---------------------------------------------------------------------------------


def test_a_body_that_is_not_json_is_refused(server: LocalServer) -> None:
    with pytest.raises(InvalidWebhook) as raised:
        ses.parse(b"{not json", {}, topic_arns=None, fetch_certificate=server.get)
    assert raised.value.field == "body"


def test_a_raw_ses_record_without_the_sns_envelope_is_refused(server: LocalServer) -> None:
    with pytest.raises(InvalidWebhook) as raised:
        ses.parse(
            body_of(fixture("ses", "bounce.json")),
            {},
            topic_arns=None,
            fetch_certificate=server.get,
        )
    assert raised.value.field == "body.Type"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: r.pop("mail"), "body.Message.mail"),
        (lambda r: r["mail"].pop("messageId"), "body.Message.mail.messageId"),
        (lambda r: r["bounce"].pop("bouncedRecipients"), "body.Message.bounce.bouncedRecipients"),
        (lambda r: r["bounce"].pop("bounceType"), "body.Message.bounce.bounceType"),
        (
            lambda r: r["bounce"]["bouncedRecipients"][0].update(emailAddress="not an address"),
            "body.Message.bounce.bouncedRecipients[0].emailAddress",
        ),
        (
            lambda r: r["bounce"].update(timestamp="yesterday"),
            "body.Message.bounce.timestamp",
        ),
        (lambda r: r.update(eventType="Teleported"), "body.Message.eventType"),
        (
            lambda r: r["mail"]["tags"].update(delivery_id=["not a delivery id!"]),
            "body.Message.mail.tags.delivery_id[0]",
        ),
        (
            lambda r: r["mail"]["tags"].update(delivery_id=["01HZX0000000000000000OTHER"]),
            "body.Message.mail.headers[X-Email-Delivery-Id]",
        ),
    ],
)
def test_a_bad_ses_record_is_refused_naming_the_field(
    certificate: SigningCertificate, server: LocalServer, change: Any, field: str
) -> None:
    record = fixture("ses", "bounce.json")
    change(record)
    with pytest.raises(InvalidWebhook) as raised:
        parse(sns_notification(record, certificate.key), server)
    assert raised.value.field == field


def test_an_inbound_notification_is_refused(
    certificate: SigningCertificate, server: LocalServer
) -> None:
    record = {"notificationType": "Received", "mail": {"messageId": "x"}, "receipt": {}}
    with pytest.raises(InvalidWebhook) as raised:
        parse(sns_notification(record, certificate.key), server)
    assert raised.value.field == "body.Message.notificationType"


def test_a_message_that_is_not_json_is_refused(
    certificate: SigningCertificate, server: LocalServer
) -> None:
    with pytest.raises(InvalidWebhook) as raised:
        parse(sns_notification("{truncated", certificate.key), server)
    assert raised.value.field == "body.Message"


@pytest.mark.parametrize(
    ("url", "certificate", "topic", "expected"),
    [
        ("https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-a.pem", True, None, True),
        (
            "https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-a.pem",
            True,
            None,
            True,
        ),
        ("https://SNS.EU-WEST-1.AMAZONAWS.COM/SimpleNotificationService-a.pem", True, None, True),
        ("https://sns.eu-west-1.amazonaws.com/a.pem#x", True, None, False),
        ("https://sns.eu-west-1.amazonaws.com/ a.pem", True, None, False),
        ("https://sns.amazonaws.com/a.pem", True, None, False),
        (
            f"https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn={TOPIC}"
            "&Token=t",
            False,
            TOPIC,
            True,
        ),
    ],
)
def test_is_sns_url(url: str, certificate: bool, topic: str | None, expected: bool) -> None:
    assert ses.is_sns_url(url, certificate=certificate, topic_arn=topic) is expected


def test_a_certificate_that_cannot_be_fetched_is_not_the_senders_fault(
    certificate: SigningCertificate, server: LocalServer
) -> None:
    del server.routes[CERT_PATH]  # the server answers 404
    envelope = sns_notification(fixture("ses", "bounce.json"), certificate.key)
    with pytest.raises(OSError) as raised:
        parse(envelope, server)
    # Not an InvalidWebhook: answer 5xx so that SNS retries.
    assert not isinstance(raised.value, InvalidWebhook)


def test_the_default_https_get_checks_the_server_certificate(tmp_path: Any) -> None:
    """The default fetcher's GET refuses a server whose certificate is not trusted (here a
    self-signed one on 127.0.0.1), so a certificate is only ever taken from the real SNS."""
    untrusted = make_certificate()
    (tmp_path / "cert.pem").write_bytes(untrusted.pem)
    (tmp_path / "key.pem").write_bytes(
        untrusted.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    with local_server(tls=context) as https_server:
        https_server.routes["/cert.pem"] = untrusted.pem
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            ses._https_get(f"https://127.0.0.1:{https_server.port}/cert.pem")
        assert https_server.requests == []
