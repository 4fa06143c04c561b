"""Unit tests of the lifecycle's pure rules: sanitiser, secret detection, retry decision,
and the moves the lifecycle functions make against the transition table."""

from __future__ import annotations

import smtplib
from datetime import UTC, datetime

import pytest

from email_delivery import rules
from email_delivery import validation as v
from email_delivery.errors import InvalidInput, SecretInInput
from email_delivery.models import DeliveryStatus as S
from email_delivery.rules import TRANSITIONS, is_allowed

# -- sanitiser ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("421 4.7.0 Try again later", "421 4.7.0 Try again later"),
        ("recipient Ada.Lovelace@Example.co.uk rejected", "recipient [email] rejected"),
        (
            "see https://app.example.com/verify?token=abc&u=1#top now",
            "see https://app.example.com/verify?[redacted]#top now",
        ),
        ("Bearer eyJhbGciOi.x.y failed", "Bearer [redacted] failed"),
        ("login password=hunter2, retry", "login password=[redacted], retry"),
        ("api_key: sk_live_1", "api_key: [redacted]"),
        ("your code: 123456", "your code: [redacted]"),
        ("key 0123456789abcdefABCDEF0123 leaked", "key [token] leaked"),
        ("line1\nline2\x00end", "line1 line2 end"),
        # A long path without digits is not a token.
        ("/var/spool/postfix/deferred/queue", "/var/spool/postfix/deferred/queue"),
    ],
)
def test_sanitiser_redacts(raw: str, expected: str) -> None:
    assert v.sanitize_error_message(raw) == expected


def test_sanitiser_caps_length_and_is_idempotent() -> None:
    long = "x " * 5000
    once = v.sanitize_error_message(long)
    assert len(once) == 2000
    message = "to bob@example.com via https://h/x?sig=1 token=abc"
    assert v.sanitize_error_message(v.sanitize_error_message(message)) == (
        v.sanitize_error_message(message)
    )


# -- secret detection --------------------------------------------------------------------


SECRET_SAMPLES: list[tuple[dict[str, object], str]] = [
    ({"token": "abc"}, "metadata.token"),
    ({"verification_code": "123456"}, "metadata.verification_code"),
    ({"code": "123456"}, "metadata.code"),
    ({"inviteToken": "abc"}, "metadata.inviteToken"),
    ({"password": "x"}, "metadata.password"),
    ({"api_key": "x"}, "metadata.api_key"),
    ({"invite": {"magic_link": "https://x"}}, "metadata.invite.magic_link"),
    ({"invite": {"token": "t"}}, "metadata.invite.token"),
    ({"links": [{"href": "https://a.io/i?token=abc"}]}, "metadata.links[0].href"),
    ({"reset_url": "https://a.io/reset/3f9a8b7c6d5e4f3a2b1c0d9e8f7a"}, "metadata.reset_url"),
    ({"code_sha256": "not-a-hash"}, "metadata.code_sha256"),
    ({"otp_pin": 1234}, "metadata.otp_pin"),
]


@pytest.mark.parametrize(("metadata", "path"), SECRET_SAMPLES)
def test_secret_keys_rejected_with_path(metadata: dict[str, object], path: str) -> None:
    with pytest.raises(SecretInInput) as caught:
        v.check_json_object(metadata, "metadata", optional=False)
    assert caught.value.field == path
    assert isinstance(caught.value, InvalidInput)
    assert isinstance(caught.value, ValueError)


HARMLESS_SAMPLES: list[dict[str, object]] = [
    {"code_sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"},
    {"token_hash": "sha256:" + "ab" * 32},
    {"country_code": "DE", "error_code": "x", "idempotency_key": "k1"},
    {"token_expires_at": "2026-12-01T00:00:00Z", "link_expires_at": "x"},
    {"invite_url": "https://app.example.com/teams/acme/join"},
    {"team_id": 42, "nested": {"locale": "de"}},
]


@pytest.mark.parametrize("metadata", HARMLESS_SAMPLES)
def test_harmless_metadata_allowed(metadata: dict[str, object]) -> None:
    assert v.check_json_object(metadata, "metadata", optional=False) is not None


def test_json_size_measured_like_the_database() -> None:
    # PostgreSQL renders jsonb with ", " and ": " and counts UTF-8 bytes.
    # The caller's share of the 16 KiB is exact to the byte.
    fits = {"k": "é" * ((rules.MAX_CALLER_JSON_BYTES - len('{"k": ""}')) // 2)}
    assert v.check_json_object(fits, "metadata", optional=False)
    with pytest.raises(InvalidInput) as caught:
        v.check_json_object({"k": fits["k"] + "é"}, "metadata", optional=False)
    assert caught.value.field == "metadata"


@pytest.mark.parametrize("bad", [[1, 2], "text", {"x": float("nan")}, {1: "int key"}])
def test_non_objects_rejected(bad: object) -> None:
    with pytest.raises(InvalidInput):
        v.check_json_object(bad, "payload", optional=True)


def test_recipient_normalisation_and_rejections() -> None:
    assert v.normalize_recipient("  Ada@Example.COM\n") == "ada@example.com"
    for bad in ["ada", "a@b@c", "a b@c.d", "@x.io", "x@", "", 42]:
        with pytest.raises(InvalidInput) as caught:
            v.normalize_recipient(bad)
        assert caught.value.field == "recipient"


def test_naive_datetime_rejected() -> None:
    with pytest.raises(InvalidInput) as caught:
        v.check_aware(datetime(2026, 1, 1), "queued_at")
    assert caught.value.field == "queued_at"
    assert v.check_aware(datetime(2026, 1, 1, tzinfo=UTC), "queued_at")


# -- errors and the retry decision -------------------------------------------------------


def test_smtp_exceptions_map_to_codes() -> None:
    code, message = v.error_code_and_message(
        smtplib.SMTPAuthenticationError(535, b"5.7.8 Bad credentials for ada@example.com")
    )
    assert (code, message) == ("SMTP_535", "5.7.8 Bad credentials for [email]")
    refused = smtplib.SMTPRecipientsRefused({"bob@x.io": (550, b"5.1.1 no such user")})
    assert v.error_code_and_message(refused) == ("SMTP_550", "5.1.1 no such user")
    assert v.error_code_and_message(TimeoutError("timed out"))[0] == "TimeoutError"
    assert v.error_code_and_message(("PROVIDER_DOWN", "503"))[0] == "PROVIDER_DOWN"


@pytest.mark.parametrize("bad", [("x" * 65, "m"), ("has space", "m"), ("", "m"), ("a",), 42])
def test_bad_error_pairs_rejected(bad: object) -> None:
    with pytest.raises(InvalidInput) as caught:
        v.error_code_and_message(bad)
    assert caught.value.field.startswith("error")


@pytest.mark.parametrize(
    ("attempts", "retryable", "max_attempts", "base", "expected"),
    [
        (1, True, 5, 0, "retrying"),
        (4, True, 5, 0, "retrying"),
        (5, True, 5, 0, "dead_letter"),
        (7, True, 5, 0, "dead_letter"),
        (1, False, 5, 0, "failed"),
        (5, False, 5, 0, "failed"),
        (6, True, 5, 5, "retrying"),  # requeued at attempt 5: a fresh budget
        (10, True, 5, 5, "dead_letter"),
    ],
)
def test_retry_decision(
    attempts: int, retryable: bool, max_attempts: int, base: int, expected: str
) -> None:
    assert (
        v.next_status_after_failure(
            attempts=attempts,
            retryable=retryable,
            max_attempts=max_attempts,
            requeued_at_attempt=base,
        )
        == expected
    )


def test_smtp_retryable() -> None:
    assert v.smtp_retryable(smtplib.SMTPResponseException(421, b"busy"))
    assert not v.smtp_retryable(smtplib.SMTPResponseException(550, b"no"))
    assert v.smtp_retryable(ConnectionResetError())
    assert not v.smtp_retryable(ValueError())


# -- the lifecycle's moves against the transition table ----------------------------------

ACTIVE = (S.QUEUED, S.IN_PROGRESS, S.RETRYING)
LIFECYCLE_MOVES = {
    "claim": [(S.QUEUED, S.IN_PROGRESS), (S.RETRYING, S.IN_PROGRESS), (S.IN_PROGRESS,) * 2],
    # A suppressed delivery was never claimed: mark_sent leaves it (revision 0012).
    "mark_sent": [(s, S.SENT) for s in S if s not in (S.SENT, S.SUPPRESSED)],
    "mark_failed": [(S.IN_PROGRESS, t) for t in (S.RETRYING, S.DEAD_LETTER, S.FAILED)],
    "mark_dead_letter": [(s, S.DEAD_LETTER) for s in ACTIVE] + [(S.FAILED, S.FAILED)],
    "requeue": [(S.FAILED, S.QUEUED), (S.DEAD_LETTER, S.QUEUED)],
    "reap_stale": [(S.IN_PROGRESS, S.RETRYING), (S.IN_PROGRESS, S.DEAD_LETTER)],
}


@pytest.mark.parametrize("operation", sorted(LIFECYCLE_MOVES))
def test_every_lifecycle_move_is_in_the_transition_table(operation: str) -> None:
    for old, new in LIFECYCLE_MOVES[operation]:
        assert is_allowed(old, new), f"{operation}: {old} -> {new}"


def test_sent_is_final_and_failed_never_becomes_dead_letter() -> None:
    assert TRANSITIONS[S.SENT] == frozenset()
    # Why mark_dead_letter leaves a failed delivery failed.
    assert not is_allowed(S.FAILED, S.DEAD_LETTER)
    assert not is_allowed(S.DEAD_LETTER, S.FAILED)
