"""Svix's retry schedule with a deterministic ±10 % jitter, and the 5-day failure budget."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from email_delivery.errors import InvalidInput
from email_delivery.webhooks import schedule
from email_delivery.webhooks.schedule import (
    DISABLE_AFTER,
    JITTER,
    MAX_ATTEMPTS,
    RETRY_DELAYS,
    jitter_factor,
    next_attempt_at,
    should_disable,
)

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
MSG = "msg_0123456789abcdef0123456789abcdef"


def test_the_schedule_is_svixs() -> None:
    assert (
        timedelta(0),
        timedelta(seconds=5),
        timedelta(minutes=5),
        timedelta(minutes=30),
        timedelta(hours=2),
        timedelta(hours=5),
        timedelta(hours=10),
        timedelta(hours=10),
    ) == RETRY_DELAYS
    assert MAX_ATTEMPTS == 8
    assert JITTER == 0.10
    assert timedelta(days=5) == DISABLE_AFTER
    # Svix: "an attempt that fails three times before eventually succeeding will be
    # delivered roughly 35 minutes and 5 seconds following the first attempt".
    assert sum(RETRY_DELAYS[:4], timedelta()) == timedelta(minutes=35, seconds=5)
    assert sum(RETRY_DELAYS, timedelta()) == timedelta(hours=27, minutes=35, seconds=5)


@pytest.mark.parametrize("attempt", range(1, MAX_ATTEMPTS))
def test_each_retry_is_its_delay_within_ten_percent(attempt: int) -> None:
    due = next_attempt_at(attempt=attempt, failed_at=T0, message_id=MSG)
    assert due is not None
    delay = RETRY_DELAYS[attempt]
    assert delay * 0.9 <= due - T0 < delay * 1.1


def test_the_jitter_is_the_documented_hash() -> None:
    digest = hashlib.sha256(f"{MSG}:3".encode()).digest()
    factor = 0.9 + 0.2 * int.from_bytes(digest[:8], "big") / 2**64
    assert jitter_factor(MSG, 3) == factor
    assert (
        next_attempt_at(attempt=2, failed_at=T0, message_id=MSG)
        == T0 + timedelta(minutes=5) * factor
    )


def test_the_jitter_is_deterministic_per_message_and_attempt_and_spreads_messages() -> None:
    first = [next_attempt_at(attempt=4, failed_at=T0, message_id=f"msg_{n}") for n in range(200)]
    again = [next_attempt_at(attempt=4, failed_at=T0, message_id=f"msg_{n}") for n in range(200)]
    assert first == again
    offsets = [(due - T0) / RETRY_DELAYS[4] for due in first if due is not None]
    assert len(offsets) == 200
    assert min(offsets) >= 0.9
    assert max(offsets) < 1.1
    # Spread over the whole band, both sides of the nominal delay.
    assert min(offsets) < 0.92
    assert max(offsets) > 1.08
    assert 60 < sum(offset < 1 for offset in offsets) < 140
    # Another attempt of the same message draws another factor.
    assert len({jitter_factor(MSG, n) for n in range(2, 9)}) == 7


def test_the_first_retry_comes_seconds_after_the_failure_not_immediately() -> None:
    due = next_attempt_at(attempt=1, failed_at=T0, message_id=MSG)
    assert due is not None
    assert timedelta(seconds=4.5) <= due - T0 < timedelta(seconds=5.5)


def test_after_the_eighth_attempt_give_up() -> None:
    assert next_attempt_at(attempt=7, failed_at=T0, message_id=MSG) is not None
    assert next_attempt_at(attempt=8, failed_at=T0, message_id=MSG) is None
    assert next_attempt_at(attempt=9, failed_at=T0, message_id=MSG) is None


def test_a_whole_failing_run_takes_about_27_and_a_half_hours() -> None:
    at, attempts = T0, 1
    while (due := next_attempt_at(attempt=attempts, failed_at=at, message_id=MSG)) is not None:
        at, attempts = due, attempts + 1
    assert attempts == MAX_ATTEMPTS
    nominal = timedelta(hours=27, minutes=35, seconds=5)
    assert nominal * 0.9 <= at - T0 < nominal * 1.1


def test_the_result_keeps_the_time_zone_of_failed_at() -> None:
    from zoneinfo import ZoneInfo

    paris = T0.astimezone(ZoneInfo("Europe/Paris"))
    due = next_attempt_at(attempt=3, failed_at=paris, message_id=MSG)
    assert due == next_attempt_at(attempt=3, failed_at=T0, message_id=MSG)


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"attempt": 0}, "attempt"),
        ({"attempt": -1}, "attempt"),
        ({"attempt": True}, "attempt"),
        ({"attempt": 1.0}, "attempt"),
        ({"failed_at": datetime(2025, 6, 1)}, "failed_at"),
        ({"failed_at": "2025-06-01T00:00:00Z"}, "failed_at"),
        ({"message_id": ""}, "message_id"),
        ({"message_id": None}, "message_id"),
    ],
)
def test_bad_arguments_name_their_field(arguments: dict[str, object], field: str) -> None:
    call = {"attempt": 2, "failed_at": T0, "message_id": MSG, **arguments}
    with pytest.raises(InvalidInput) as caught:
        next_attempt_at(**call)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_an_endpoint_is_disabled_after_five_days_of_failures_without_a_success() -> None:
    assert not should_disable(first_failure_at=None, now=T0)
    assert not should_disable(first_failure_at=T0, now=T0)
    assert not should_disable(first_failure_at=T0, now=T0 + timedelta(days=5, seconds=-1))
    assert should_disable(first_failure_at=T0, now=T0 + timedelta(days=5))
    assert should_disable(first_failure_at=T0, now=T0 + timedelta(days=30))


def test_a_message_exhausts_its_retries_long_before_the_endpoint_is_disabled() -> None:
    """One message's 8 attempts span about 27.6 h: disabling needs several messages failing
    over five days, as in Svix (a single bad message never disables an endpoint)."""
    assert sum(RETRY_DELAYS, timedelta()) * (1 + JITTER) < DISABLE_AFTER


def test_should_disable_wants_aware_datetimes() -> None:
    with pytest.raises(InvalidInput) as caught:
        should_disable(first_failure_at=datetime(2025, 1, 1), now=T0)
    assert caught.value.field == "first_failure_at"
    with pytest.raises(InvalidInput) as caught:
        should_disable(first_failure_at=T0, now=datetime(2025, 1, 1))
    assert caught.value.field == "now"


def test_the_module_documents_its_sources() -> None:
    assert schedule.__doc__ is not None
    assert "https://docs.svix.com/retries" in schedule.__doc__
    assert "https://resend.com/docs/webhooks/retries-and-replays" in schedule.__doc__
