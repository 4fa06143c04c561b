"""The normalised form, the error hierarchy, the shared parsing rules, and the lazy import of
``cryptography``."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import FrozenInstanceError, replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from email_delivery.errors import EmailDeliveryError, InvalidInput
from email_delivery.providers import (
    DELIVERY_ID_HEADER,
    DELIVERY_ID_KEY,
    InvalidWebhook,
    MissingProvidersExtra,
    OutcomeKind,
    ProviderEvent,
    SignatureMismatch,
    mailgun,
    resend,
    sendgrid,
    ses,
)
from email_delivery.providers import _parsing as parsing
from tests.unit.providers.support import (
    body_of,
    fixture,
    mailgun_sign,
    make_certificate,
    sendgrid_headers,
    sendgrid_keys,
    sns_headers,
    sns_notification,
)

RESEND_SECRET = "whsec_c2VjcmV0LWZvci10aGUtbWlzc2luZy1leHRyYS10ZXN0"


def event(**changes: Any) -> ProviderEvent:
    values: dict[str, Any] = {
        "provider": "ses",
        "event_id": "e-1",
        "kind": OutcomeKind.BOUNCED,
        "occurred_at": datetime(2025, 3, 4, tzinfo=UTC),
        "provider_message_id": "m-1",
        "delivery_id": "d-1",
        "recipient": "ada@example.com",
        "permanent": True,
        "reason": "smtp; 550 user unknown",
        "smtp_code": 550,
        "provider_event_type": "Bounce",
    }
    values.update(changes)
    return ProviderEvent(**values)


def test_outcome_kinds_in_precedence_order() -> None:
    assert [kind.value for kind in OutcomeKind] == [
        "deferred",
        "delivered",
        "opened",
        "clicked",
        "bounced",
        "rejected",
        "complained",
    ]
    assert [kind.precedence for kind in OutcomeKind] == [1, 2, 3, 4, 5, 6, 7]
    assert (
        max(
            [OutcomeKind.DELIVERED, OutcomeKind.BOUNCED, OutcomeKind.OPENED],
            key=lambda k: k.precedence,
        )
        is OutcomeKind.BOUNCED
    )
    assert OutcomeKind("complained") is OutcomeKind.COMPLAINED
    assert f"{OutcomeKind.DEFERRED}" == "deferred"


def test_the_id_travels_as_a_header_and_a_metadata_key() -> None:
    assert DELIVERY_ID_HEADER == "X-Email-Delivery-Id"
    assert DELIVERY_ID_KEY == "delivery_id"


def test_a_provider_event_is_frozen_and_keyword_only() -> None:
    built = event()
    with pytest.raises(FrozenInstanceError):
        built.kind = OutcomeKind.DELIVERED  # type: ignore[misc]
    with pytest.raises(TypeError):
        ProviderEvent("ses")  # type: ignore[misc]
    assert not hasattr(built, "__dict__")  # slots


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"provider": "sparkpost"}, "provider"),
        ({"event_id": ""}, "event_id"),
        ({"kind": "bounced"}, "kind"),
        ({"occurred_at": datetime(2025, 3, 4)}, "occurred_at"),
        ({"occurred_at": datetime(2025, 3, 4, tzinfo=timezone(timedelta(hours=1)))}, "occurred_at"),
        ({"recipient": "Ada@Example.com"}, "recipient"),
        ({"recipient": "nobody"}, "recipient"),
        ({"kind": OutcomeKind.DELIVERED, "permanent": False}, "permanent"),
        ({"reason": "x" * 501}, "reason"),
        ({"reason": ""}, "reason"),
        ({"smtp_code": 605}, "smtp_code"),
        ({"provider_event_type": ""}, "provider_event_type"),
    ],
)
def test_a_provider_event_refuses_values_outside_the_form(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        event(**changes)


def test_errors_name_the_field_and_nest() -> None:
    error = SignatureMismatch("headers.svix-signature", "no v1 signature matches the body")
    assert isinstance(error, InvalidWebhook)
    assert isinstance(error, InvalidInput)
    assert isinstance(error, EmailDeliveryError)
    assert isinstance(error, ValueError)
    assert error.field == "headers.svix-signature"
    assert str(error) == "headers.svix-signature: no v1 signature matches the body"


# -- shared rules -----------------------------------------------------------------------------


def test_reasons_are_cut_to_500_characters() -> None:
    long = parsing.reason("Permanent/General", "x" * 1000)
    assert long is not None and len(long) == 500
    assert parsing.reason(None, "  ", "") is None
    assert parsing.reason("a\n  b", "c") == "a b: c"
    assert replace(event(), reason=long).reason == long


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("smtp; 550 5.1.1 user unknown", 550),
        ("smtp;550 5.1.1 The email account", 550),
        ("SMTP; 421 4.4.1 Unable to connect", 421),
        ("250 2.6.0 Message received", 250),
        ("5500 nope", None),
        ("Email was deferred due to the following reason(s): [IPs were throttled]", None),
        ("user unknown (550)", None),
        (None, None),
    ],
)
def test_smtp_codes_are_read_from_the_start_of_a_diagnostic(
    text: str | None, code: int | None
) -> None:
    assert parsing.smtp_code_in(text) == code


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2014-08-01T13:28:10.2735393-04:00", datetime(2014, 8, 1, 17, 28, 10, 273539, tzinfo=UTC)),
        ("2025-03-04T10:15:02.669Z", datetime(2025, 3, 4, 10, 15, 2, 669000, tzinfo=UTC)),
        ("2025-03-04T10:15:00.894719+00:00", datetime(2025, 3, 4, 10, 15, 0, 894719, tzinfo=UTC)),
    ],
)
def test_iso_timestamps_become_utc(value: str, expected: datetime) -> None:
    parsed = parsing.iso_timestamp(value, "f")
    assert parsed == expected
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "value", ["2025-03-04T10:15:02", "yesterday", 1741083302, "1899-01-01T00:00:00Z"]
)
def test_timestamps_without_zone_or_out_of_range_are_refused(value: object) -> None:
    with pytest.raises(InvalidWebhook) as raised:
        parsing.iso_timestamp(value, "body.at")
    assert raised.value.field == "body.at"


def test_recipients_are_trimmed_lower_cased_and_unwrapped() -> None:
    assert parsing.recipient("  Ada.Lovelace@Example.COM ", "f") == "ada.lovelace@example.com"
    assert parsing.recipient("Ada <Ada@Example.com>", "f") == "ada@example.com"
    with pytest.raises(InvalidWebhook):
        parsing.recipient("two@at@signs", "f")


def test_the_canonical_hash_ignores_key_order_and_whitespace() -> None:
    assert parsing.canonical_sha256({"b": 1, "a": [1, "é"]}) == parsing.canonical_sha256(
        {"a": [1, "é"], "b": 1}
    )
    assert parsing.canonical_sha256({"a": 1}) != parsing.canonical_sha256({"a": 2})


def test_a_body_larger_than_the_limit_is_refused_unparsed() -> None:
    with pytest.raises(InvalidWebhook) as raised:
        parsing.load_json(b" " * (parsing.MAX_BODY_BYTES + 1))
    assert raised.value.field == "body"


def test_json_constants_that_are_not_json_are_refused() -> None:
    with pytest.raises(InvalidWebhook):
        parsing.load_json(b'{"timestamp": NaN}')


@pytest.mark.parametrize("tolerance", [timedelta(0), timedelta(seconds=-1), 300])
def test_a_tolerance_must_be_a_positive_timedelta(tolerance: Any) -> None:
    body = body_of(mailgun_sign(fixture("mailgun", "delivered.json"), "k"))
    with pytest.raises(InvalidInput) as raised:
        mailgun.parse(body, {}, signing_key="k", tolerance=tolerance)
    assert raised.value.field == "tolerance"


# -- cryptography is imported lazily ----------------------------------------------------------


def test_the_package_imports_and_hmac_providers_work_without_cryptography() -> None:
    script = """
import sys
sys.modules["cryptography"] = None  # as if the 'providers' extra were not installed
from email_delivery.providers import mailgun, postmark, resend, sendgrid, ses
print("imported")
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported"


def test_a_missing_extra_is_named_when_a_public_key_signature_needs_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    certificate = make_certificate()
    envelope = sns_notification(fixture("ses", "delivery.json"), certificate.key)
    key, public_key = sendgrid_keys()
    batch = body_of(fixture("sendgrid", "batch.json"))
    batch_headers = sendgrid_headers(batch, key)
    mailgun_body = body_of(mailgun_sign(fixture("mailgun", "delivered.json"), "k"))
    resend_body = body_of(fixture("resend", "delivered.json"))
    now = datetime.now(UTC)
    resend_headers = {
        "svix-id": "msg_1",
        "svix-timestamp": str(int(now.timestamp())),
        "svix-signature": Webhook(RESEND_SECRET).sign("msg_1", now, resend_body.decode()),
    }

    monkeypatch.setitem(sys.modules, "cryptography", None)

    with pytest.raises(MissingProvidersExtra, match=r"email-delivery\[providers\]"):
        ses.parse(
            body_of(envelope),
            sns_headers(envelope),
            topic_arns=None,
            fetch_certificate=lambda url: certificate.pem,
        )
    with pytest.raises(MissingProvidersExtra, match="providers"):
        sendgrid.parse(batch, batch_headers, public_key=public_key)
    assert isinstance(MissingProvidersExtra("x"), ImportError)
    # HMAC signatures need only the standard library.
    assert len(mailgun.parse(mailgun_body, {}, signing_key="k")) == 1
    assert len(resend.parse(resend_body, resend_headers, secret=RESEND_SECRET)) == 1
