"""Provider facts of an attempt, provider outcomes and provider metrics (revision 0010):
the values the tracker sends and the rows it returns. No I/O here; ``DeliveryTracker``
(``mark_sent`` / ``mark_failed`` with provider facts, ``record_outcome``, ``outcome``,
``outcome_events``, ``provider_health``) runs the SQL.

**Where each fact lives.** ``mark_sent(provider=, provider_message_id=, reply_code=,
duration=)`` (and ``mark_failed``) store the attempt's facts in ``email.delivery_attempts``
(typed; the provider message id unique per provider, indexed) and on the attempt's audit
event payload. A provider's webhook events, parsed by ``email_delivery.providers`` into
``ProviderEvent``, go to ``record_outcome``: each is kept once in ``email.outcome_events``
and folded into the delivery's ``email.delivery_outcomes`` row.

**Precedence** (``providers.events.OutcomeKind``, lowest first): deferred < delivered <
opened < clicked < bounced (transient < permanent) < rejected < complained. A delivery's
outcome is the highest it has seen and never falls, so events may arrive in any order and
any number of times. ``opened`` / ``clicked`` count only for a workflow whose policy has
``track_engagement``; otherwise they are not stored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from email_delivery import validation as v
from email_delivery.errors import InvalidInput
from email_delivery.models import (
    MAX_PROVIDER_EVENT_ID_LENGTH,
    PROVIDER_MESSAGE_ID_PATTERN,
    PROVIDER_PATTERN,
)
from email_delivery.providers.events import OutcomeKind, ProviderEvent

__all__ = [
    "DeliveryOutcome",
    "OutcomeEvent",
    "OutcomeResult",
    "ProviderFacts",
    "ProviderMetrics",
    "check_provider_facts",
    "outcome_args",
]

_PROVIDER = re.compile(PROVIDER_PATTERN)
_MESSAGE_ID = re.compile(PROVIDER_MESSAGE_ID_PATTERN)
MAX_DURATION_MS = 2**31 - 1

ProviderFacts = tuple[str | None, str | None, int | None, int | None]
"""(provider, provider_message_id, reply_code, duration_ms) as the SQL functions take them."""


def check_provider(value: object, field: str = "provider") -> str:
    if not isinstance(value, str) or not _PROVIDER.fullmatch(value):
        raise InvalidInput(field, f"must be a provider slug matching {PROVIDER_PATTERN}")
    return value


def check_provider_message_id(value: object, field: str = "provider_message_id") -> str:
    if not isinstance(value, str) or not _MESSAGE_ID.fullmatch(value):
        raise InvalidInput(field, "must be 1 to 150 printable ASCII characters")
    return value


def check_provider_facts(
    provider: object, provider_message_id: object, reply_code: object, duration: object
) -> ProviderFacts:
    """The facts of one reported attempt, checked; all ``None`` when none was given."""
    slug = None if provider is None else check_provider(provider)
    message_id = None
    if provider_message_id is not None:
        message_id = check_provider_message_id(provider_message_id)
        if slug is None:
            raise InvalidInput("provider", "is required with a provider_message_id")
    code = None
    if reply_code is not None:
        code = v.check_int(reply_code, "reply_code", minimum=100)
        if code > 599:
            raise InvalidInput("reply_code", "an SMTP or HTTP reply code is 100-599")
    duration_ms = None
    if duration is not None:
        if not isinstance(duration, timedelta) or duration < timedelta(0):
            raise InvalidInput("duration", "must be a timedelta of at least 0")
        duration_ms = round(duration / timedelta(milliseconds=1))
        if duration_ms > MAX_DURATION_MS:
            raise InvalidInput("duration", "must be shorter than 24 days")
    return slug, message_id, code, duration_ms


def outcome_args(event: object, field: str = "event") -> tuple[Any, ...]:
    """The arguments of ``email.record_delivery_outcome`` for one ``ProviderEvent``."""
    if not isinstance(event, ProviderEvent):
        raise InvalidInput(field, "must be an email_delivery.providers.ProviderEvent")
    if len(event.event_id) > MAX_PROVIDER_EVENT_ID_LENGTH:
        raise InvalidInput(f"{field}.event_id", f"at most {MAX_PROVIDER_EVENT_ID_LENGTH} chars")
    message_id = event.provider_message_id
    if message_id is not None:
        check_provider_message_id(message_id, f"{field}.provider_message_id")
    delivery_id = event.delivery_id
    if delivery_id is not None:
        v.check_delivery_id(delivery_id, f"{field}.delivery_id")
    if message_id is None and delivery_id is None:
        raise InvalidInput(
            f"{field}.provider_message_id",
            "an outcome names its provider_message_id or its delivery_id",
        )
    if len(event.provider_event_type) > 100:
        raise InvalidInput(f"{field}.provider_event_type", "at most 100 characters")
    recipient = event.recipient
    if recipient is not None and len(recipient) > 320:
        recipient = None  # not needed to match; never worth refusing the event for
    return (
        event.provider,
        event.event_id,
        event.kind.value,
        event.occurred_at,
        message_id,
        delivery_id,
        event.permanent,
        event.reason,
        event.smtp_code,
        recipient,
        event.provider_event_type,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class OutcomeResult:
    """What ``record_outcome`` did."""

    delivery_id: str | None
    """The matched delivery (``None``: kept unmatched until its id arrives)."""
    recorded: bool
    """False: a duplicate event (or engagement the workflow does not track): nothing
    written."""
    matched: bool
    outcome: OutcomeKind | None
    """The delivery's outcome afterwards."""
    permanent: bool | None
    changed: bool
    """The delivery's outcome rose because of this event."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryOutcome:
    """A delivery's outcome (``email.delivery_outcomes``)."""

    delivery_id: str
    workflow: str
    outcome: OutcomeKind
    permanent: bool | None
    reason: str | None
    provider: str
    outcome_at: datetime
    delivered_at: datetime | None
    events: int
    updated_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class OutcomeEvent:
    """One recorded provider event of a delivery (``email.outcome_events``)."""

    id: int
    provider: str
    event_id: str
    kind: OutcomeKind
    permanent: bool | None
    occurred_at: datetime
    provider_message_id: str | None
    reason: str | None
    smtp_code: int | None
    provider_event_type: str | None
    received_at: datetime
    matched_at: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderMetrics:
    """One provider and workflow over a window (``email.provider_metrics``). Counts and
    rates are exact; the percentiles come from latency histograms (the provider rollups',
    revision 0014) and are within ``rules.LATENCY_RELATIVE_ERROR`` of the rows' own."""

    provider: str
    workflow: str
    attempts: int
    accepted: int
    failed: int
    delivered: int
    deferred: int
    bounced: int
    hard_bounced: int
    complained: int
    rejected: int
    delivery_rate: float | None
    bounce_rate: float | None
    complaint_rate: float | None
    deferral_rate: float | None
    failure_rate: float | None
    p50_send_ms: float | None
    p95_send_ms: float | None
    p50_sent_to_delivered_s: float | None
    p95_sent_to_delivered_s: float | None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


def provider_order(
    metrics: list[ProviderMetrics], providers: list[str], *, minimum_attempts: int = 10
) -> list[str]:
    """``providers`` best first by their recent metrics: fewest failures and bounces first,
    then the faster; a provider with fewer than ``minimum_attempts`` keeps its place (no
    evidence against it). Stable: equal providers keep the caller's order."""
    totals: dict[str, list[float]] = {}
    for row in metrics:
        total = totals.setdefault(row.provider, [0.0, 0.0, 0.0, 0.0])
        total[0] += row.attempts
        total[1] += row.failed
        total[2] += row.bounced + row.rejected
        total[3] = max(total[3], row.p95_send_ms or 0.0)

    def badness(provider: str) -> tuple[float, float]:
        attempts, failed, bounced, p95 = totals.get(provider, [0.0, 0.0, 0.0, 0.0])
        if attempts < minimum_attempts:
            return (0.0, 0.0)
        return ((failed + bounced) / attempts, p95)

    return sorted(providers, key=badness)
