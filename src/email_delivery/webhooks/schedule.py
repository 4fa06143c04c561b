"""When to try a webhook again, and when to give up on an endpoint: Svix's rules.

Retry schedule (``RETRY_DELAYS``): attempt 1 immediately, then each further attempt the
given delay after the previous attempt *failed*; 8 attempts in all, about 27 h 35 min:

=======  ====================  =============================
attempt  delay after failure   earliest since the first try
=======  ====================  =============================
1        immediately           0
2        5 seconds             5 s
3        5 minutes             5 min 5 s
4        30 minutes            35 min 5 s
5        2 hours               2 h 35 min 5 s
6        5 hours               7 h 35 min 5 s
7        10 hours              17 h 35 min 5 s
8        10 hours              27 h 35 min 5 s
=======  ====================  =============================

After attempt 8 fails, ``next_attempt_at`` returns ``None``: the message has failed for
this endpoint. Source: Svix, "Retry Schedule" (https://docs.svix.com/retries): "Immediately,
5 seconds, 5 minutes, 30 minutes, 2 hours, 5 hours, 10 hours, 10 hours (in addition to the
previous)", "each period is started following the failure of the preceding attempt".
Resend, which sends its webhooks through Svix, documents the same list
(https://resend.com/docs/webhooks/retries-and-replays). The Standard Webhooks
specification gives the same first seven steps as its example and continues with 14, 20
and 24 hours (10 attempts, about 3 days); we keep Svix's eight.

Jitter (``JITTER`` = 10 %): every delay is multiplied by a factor in [0.9, 1.1), so that
the retries of messages that failed together (an endpoint's outage) do not all come back in
the same second. The factor is not random but derived from SHA-256 of the message id and
the attempt number: the same message and attempt always get the same time (a test, or a
sender that recomputes it after a crash, agrees with itself), different messages spread
out. Attempt 1 has no delay to jitter. Neither Svix nor Resend says how much jitter it
adds; the Standard Webhooks specification recommends "some level of random jitter".

Failure budget (``DISABLE_AFTER`` = 5 days): an endpoint whose deliveries have all failed,
with no success in between, since a first failure 5 days ago or more is disabled
(``should_disable``). Source: Svix, same page, "Disabling failing endpoints": "If all
attempts to a specific endpoint fail for a period of 5 days, the endpoint will be
disabled". Svix adds that "the clock only starts after multiple deliveries failed within a
24 hour span, with at least 12 hours difference between the first and the last failure";
we do not model that refinement: the caller keeps ``first_failure_at`` per endpoint (set
at a failure when it is empty, cleared by any success) and asks at each failure. Resend
says only that a failing endpoint is "eventually" disabled.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from email_delivery.errors import InvalidInput

__all__ = [
    "DISABLE_AFTER",
    "JITTER",
    "MAX_ATTEMPTS",
    "RETRY_DELAYS",
    "jitter_factor",
    "next_attempt_at",
    "should_disable",
]

RETRY_DELAYS: tuple[timedelta, ...] = (
    timedelta(0),
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=10),
)
"""``RETRY_DELAYS[n - 1]``: how long after attempt ``n - 1`` failed attempt ``n`` is due
(attempt 1: immediately). Svix's schedule, https://docs.svix.com/retries."""

MAX_ATTEMPTS = len(RETRY_DELAYS)
"""8: the first attempt and seven retries."""

JITTER = 0.10
"""Each delay is scaled by a factor in ``[1 - JITTER, 1 + JITTER)``, deterministic per
message id and attempt (``jitter_factor``)."""

DISABLE_AFTER = timedelta(days=5)
"""An endpoint failing without a single success for this long is disabled (Svix's rule,
https://docs.svix.com/retries, "Disabling failing endpoints")."""


def _aware(value: object, field: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidInput(field, "must be a timezone-aware datetime")
    return value


def jitter_factor(message_id: str, attempt: int) -> float:
    """The factor, in ``[1 - JITTER, 1 + JITTER)``, that scales the delay before
    ``attempt`` of message ``message_id``: the first 8 bytes of SHA-256 of
    ``"{message_id}:{attempt}"`` read as a fraction of 2**64, mapped linearly."""
    if not isinstance(message_id, str) or not message_id:
        raise InvalidInput("message_id", "must be a non-empty string")
    digest = hashlib.sha256(f"{message_id}:{attempt}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return 1 - JITTER + 2 * JITTER * fraction


def next_attempt_at(*, attempt: int, failed_at: datetime, message_id: str) -> datetime | None:
    """When to make the attempt after ``attempt`` (1-based), which failed at ``failed_at``;
    ``None`` when that was the last (``MAX_ATTEMPTS``): give up on this message for this
    endpoint.

    A ``gone`` answer (410) or a non-retryable result ends the message before this is
    asked; this only spaces out retryable failures.
    """
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise InvalidInput("attempt", "must be the 1-based number of the attempt that failed")
    failed_at = _aware(failed_at, "failed_at")
    factor = jitter_factor(message_id, attempt + 1)
    if attempt >= MAX_ATTEMPTS:
        return None
    return failed_at + RETRY_DELAYS[attempt] * factor


def should_disable(*, first_failure_at: datetime | None, now: datetime) -> bool:
    """Whether an endpoint should be disabled now: it has failed continuously, with no
    success in between, since ``first_failure_at`` (``None``: not failing), and that was
    ``DISABLE_AFTER`` (5 days) ago or more. Ask at each failure, with ``now`` the failure's
    time."""
    now = _aware(now, "now")
    if first_failure_at is None:
        return False
    first_failure_at = _aware(first_failure_at, "first_failure_at")
    return now - first_failure_at >= DISABLE_AFTER
