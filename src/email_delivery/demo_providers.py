"""The demo's two email providers, their outcomes, and the worker's provider order (issue 11).

Two fake providers stand in for real ones (their slugs are real ones, ``postmark`` and
``resend``, because a ``ProviderEvent`` names a provider the package parses; nothing leaves
the machine). ``postmark`` is preferred. After ``DEGRADE_AFTER_SENDS`` sends it degrades for
``DEGRADED_FOR_S`` seconds: most of its sends answer 421 and all are slower.

The worker does not find that out alone. Every attempt is reported with its provider facts
(``mark_sent`` / ``mark_failed``: provider, provider message id, reply code, duration), so the
database holds every worker's experience; ``ProviderRouter`` re-reads
``tracker.provider_health`` every ``REFRESH_S`` over the last ``HEALTH_WINDOW`` and demotes a
provider whose failure rate is ``SWITCH_MARGIN`` above the other's; the preferred order
comes back once the preferred provider is within ``RESTORE_MARGIN`` again. A share of the
sends (``PROBE_SHARE``) goes to the second provider, so both keep producing evidence.

Each accepted message gets a provider event a moment later (the provider's webhook):
``delivered``, except for ``BOUNCING``, whose mailbox is gone: a hard bounce, which puts the
address on the suppression list, so a later delivery to it ends ``suppressed``.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TextIO

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from email_delivery.cli.output import print_table
from email_delivery.outcomes import ProviderMetrics
from email_delivery.providers.events import OutcomeKind, ProviderEvent
from email_delivery.tracker import DeliveryTracker

PROVIDERS = ("postmark", "resend")
"""The worker's preferred order."""
DEGRADED = PROVIDERS[0]
DEGRADE_AFTER_SENDS = 500
DEGRADED_FOR_S = 3.0
DEGRADED_FAILURE_SHARE = 0.7
HEALTH_WINDOW = timedelta(seconds=2)
REFRESH_S = 0.25
PROBE_SHARE = 0.15
MIN_ATTEMPTS = 15
SWITCH_MARGIN = 0.15
RESTORE_MARGIN = 0.05
BOUNCING = "Departed.User@Example.com"
"""The recipient whose mailbox no longer exists: the provider accepts, then hard-bounces."""
BOUNCE_REASON = "550 5.1.1 The email account that you tried to reach does not exist"


@dataclass(frozen=True, slots=True)
class ProviderStats:
    """One provider's ``provider_health`` rows summed over the workflows."""

    attempts: int = 0
    failed: int = 0
    delivered: int = 0
    bounced: int = 0
    p95_send_ms: float = 0.0

    @property
    def failure_rate(self) -> float:
        return (self.failed + self.bounced) / self.attempts if self.attempts else 0.0


def summarise(metrics: list[ProviderMetrics]) -> dict[str, ProviderStats]:
    totals = {p: ProviderStats() for p in PROVIDERS}
    for row in metrics:
        t = totals.get(row.provider, ProviderStats())
        totals[row.provider] = ProviderStats(
            t.attempts + row.attempts,
            t.failed + row.failed,
            t.delivered + row.delivered,
            t.bounced + row.bounced + row.rejected,
            max(t.p95_send_ms, row.p95_send_ms or 0.0),
        )
    return totals


def decide(order: tuple[str, ...], stats: dict[str, ProviderStats]) -> tuple[str, ...]:
    """The next order: demote the first provider when it fails clearly more often than the
    second; restore the preferred order when the preferred one is about as good again.
    Without ``MIN_ATTEMPTS`` on both sides there is no evidence: keep the order."""
    first, second = stats[order[0]], stats[order[1]]
    if first.attempts < MIN_ATTEMPTS or second.attempts < MIN_ATTEMPTS:
        return order
    if first.failure_rate > second.failure_rate + SWITCH_MARGIN:
        return (order[1], order[0])
    if order != PROVIDERS and second.failure_rate <= first.failure_rate + RESTORE_MARGIN:
        return PROVIDERS
    return order


@dataclass(frozen=True, slots=True)
class Moment:
    """Something the router saw, with the ``provider_health`` it saw then."""

    at_s: float
    what: str
    stats: dict[str, ProviderStats]


@dataclass
class ProviderRouter:
    """The worker's provider order, from the shared ``provider_health``."""

    tracker: DeliveryTracker
    rng: random.Random
    started: float = field(default_factory=time.monotonic)
    order: tuple[str, ...] = PROVIDERS
    stats: dict[str, ProviderStats] = field(default_factory=dict)
    moments: list[Moment] = field(default_factory=list)
    reads: int = 0

    def pick(self) -> str:
        return self.order[1] if self.rng.random() < PROBE_SHARE else self.order[0]

    def note(self, what: str) -> None:
        self.moments.append(Moment(time.monotonic() - self.started, what, dict(self.stats)))

    async def refresh(self) -> None:
        self.stats = summarise(await self.tracker.provider_health(window=HEALTH_WINDOW))
        self.reads += 1
        order = decide(self.order, self.stats)
        if order != self.order:
            self.order = order
            self.note(f"the worker switches its provider order to {' → '.join(order)}")

    async def run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(REFRESH_S)


class ProviderError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.smtp_code = code


@dataclass
class Providers:
    """The fake providers' side: degradation, message ids, and their webhook events."""

    rng: random.Random
    router: ProviderRouter
    sends: int = 0
    degraded_since: float | None = None
    events: asyncio.Queue[ProviderEvent] = field(default_factory=asyncio.Queue)
    event_count: int = 0

    def degraded(self, provider: str) -> bool:
        if provider != DEGRADED:
            return False
        if self.degraded_since is None:
            if self.sends < DEGRADE_AFTER_SENDS:
                return False
            self.degraded_since = time.monotonic()
            self.router.note(f"{DEGRADED} degrades (421s, slow) for {DEGRADED_FOR_S:g} s")
        if time.monotonic() - self.degraded_since < DEGRADED_FOR_S:
            return True
        if not any(m.what.startswith(f"{DEGRADED} recovers") for m in self.router.moments):
            self.router.note(f"{DEGRADED} recovers")
        return False

    async def before_send(self, provider: str, recipient: str) -> None:
        """The provider's own trouble, before the usual SMTP outcome is rolled."""
        self.sends += 1
        if recipient.lower() == BOUNCING.lower() or not self.degraded(provider):
            return
        await asyncio.sleep(self.rng.uniform(0.01, 0.03))
        if self.rng.random() < DEGRADED_FAILURE_SHARE:
            raise ProviderError(421, f"4.3.0 {provider}: service degraded, try again later")

    def accepted(self, provider: str, delivery_id: str, recipient: str) -> str:
        """The provider message id; its outcome event follows through the webhook."""
        message_id = f"{provider}-{self.rng.getrandbits(48):012x}"
        bounce = recipient.lower() == BOUNCING.lower()
        self.event_count += 1
        self.events.put_nowait(
            ProviderEvent(
                provider=provider,
                event_id=f"{provider}-event-{self.event_count}",
                kind=OutcomeKind.BOUNCED if bounce else OutcomeKind.DELIVERED,
                occurred_at=datetime.now(UTC),
                provider_message_id=message_id,
                delivery_id=delivery_id,
                recipient=recipient.lower(),
                permanent=True if bounce else None,
                reason=BOUNCE_REASON if bounce else None,
                smtp_code=550 if bounce else 250,
                provider_event_type="Bounce" if bounce else "Delivery",
            )
        )
        return message_id


def print_stats(title: str, stats: dict[str, ProviderStats], out: TextIO) -> None:
    print(title, file=out)
    print_table(
        ["provider", "attempts", "failed", "failure_rate", "delivered", "bounced", "p95_ms"],
        [
            (
                p,
                s.attempts,
                s.failed,
                f"{s.failure_rate:.0%}",
                s.delivered,
                s.bounced,
                round(s.p95_send_ms),
            )
            for p, s in sorted(stats.items())
        ],
        out,
    )


async def report(
    engine: AsyncEngine,
    tracker: DeliveryTracker,
    *,
    run: str,
    router: ProviderRouter,
    bounced: str,
    after_bounce: str,
    outcomes_recorded: int,
    out: TextIO,
) -> bool:
    """Print the providers' story; true when the worker switched its order, the bounce
    was recorded and the later delivery to its address ended ``suppressed``."""
    print(
        f"\nproviders {' and '.join(PROVIDERS)} (fakes), {DEGRADED} degrading mid-run; the "
        f"worker re-read tracker.provider_health (last {HEALTH_WINDOW.total_seconds():g} s) "
        f"every {REFRESH_S:g} s, {router.reads} times",
        file=out,
    )
    for moment in router.moments:
        print_stats(f"\n[+{moment.at_s:.1f} s] {moment.what}", moment.stats, out)
    switched = any("switches its provider order" in m.what for m in router.moments)
    whole = summarise(await tracker.provider_health(window=timedelta(hours=1)))
    print_stats("\nthe last hour (email-delivery providers --since 1h)", whole, out)

    async with engine.connect() as conn:
        counts = (
            await conn.execute(
                text(
                    "SELECT outcome, permanent, count(*) AS n FROM email.delivery_outcomes "
                    "WHERE delivery_id LIKE :run GROUP BY 1, 2 ORDER BY 1, 2"
                ),
                {"run": f"{run}-%"},
            )
        ).all()
        entry = (
            await conn.execute(
                text(
                    "SELECT reason, source_delivery_id, provider FROM email.suppressions "
                    "WHERE address = :address"
                ),
                {"address": BOUNCING.lower()},
            )
        ).one_or_none()
    bounce = await tracker.outcome(bounced)
    later = await tracker.get(after_bounce)
    print(
        f"\nprovider outcomes: {outcomes_recorded:,} webhook events recorded; the run's "
        "deliveries by outcome: "
        + ", ".join(f"{r.outcome}{' (hard)' if r.permanent else ''} {r.n:,}" for r in counts),
        file=out,
    )
    if bounce is not None:
        print(
            f"{bounced} ({BOUNCING.lower()}): {bounce.outcome.value}, "
            f"permanent={bounce.permanent}, via {bounce.provider}: {bounce.reason}",
            file=out,
        )
    if entry is not None:
        print(
            f"suppression list: {BOUNCING.lower()} ({entry.reason}, from "
            f"{entry.source_delivery_id} via {entry.provider})",
            file=out,
        )
    suppressed = entry is not None and later is not None and later.status.value == "suppressed"
    if later is not None:
        print(
            f"a later delivery to the same address: {after_bounce} → {later.status.value} "
            f"({later.last_error_code}: {later.last_error_message}); never sent",
            file=out,
        )
    return (
        switched
        and bounce is not None
        and bounce.outcome is OutcomeKind.BOUNCED
        and bool(bounce.permanent)
        and suppressed
    )
