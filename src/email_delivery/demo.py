"""``make demo``: the package's main job end to end, on the embedded server or ``DATABASE_URL``.

1. Migrate to head, and give the demo's workflows their worker policy in the database
   (``email-delivery policy set``): a 1-second lease, 3 attempts, a 1-4 s retry backoff.
   The handler passes no lease and no retry budget: the database decides.
2. Simulate a Pub/Sub-fed worker: about 2,000 deliveries over the three workflows, 30 % of
   the messages duplicated and everything shuffled, handled by 8 concurrent workers through
   the lifecycle API (enqueue → claim → SMTP → mark_sent / mark_failed), with injected SMTP
   failures: transient 421s (redelivered by Pub/Sub once the workflow's backoff has passed:
   a claim before then raises ``NotYet`` with the wait), permanent 550s, and one mail host
   that always answers 421 (dead-lettered after 3 attempts, then published to a dead-letter
   topic). A few sends are slower than the lease: the worker heartbeats around them
   (``keep_claim``) and none is taken over. One worker crashes right after its claim; the
   reaper hands the expired claim back and the redelivered message completes it.
   The fake SMTP sends through two fake providers (``demo_providers``), one of which
   degrades mid-run: every attempt is reported with its provider facts, the worker picks
   its provider order from ``tracker.provider_health`` (re-read every 0.25 s) and switches
   away and back; each accepted message gets a provider outcome (``record_outcome``), one
   a hard bounce, so a later delivery to that address ends ``suppressed``.
3. Print the per-workflow statistics, one delivery's audit trail, the providers' metrics
   around the degradation and the worker's switches, the outcomes and the suppression, the
   proof that no email was sent twice (the fake SMTP server's log and the audit trail
   agree: at most one ``sent`` event per delivery), and ``email-delivery health``.
4. End with the downstream system (``demo_webhooks``): an endpoint for the password-reset
   workflow got every one of its deliveries' status changes as a signed, verified webhook,
   built from the change feed and sent by a sender running beside the workers, including
   those refused while its receiver was down mid-run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from email_delivery import (
    DeliveryTracker,
    NotYet,
    demo_providers,
    demo_webhooks,
    make_engine,
    migrate,
    policies,
    queries,
)
from email_delivery import health as health_check
from email_delivery.cli.output import ProgressBar, print_table
from email_delivery.demo_providers import BOUNCING, ProviderError, ProviderRouter, Providers
from email_delivery.embedded import embedded_server
from email_delivery.maintenance import maintain
from email_delivery.urls import async_url

DELIVERIES = 2000
DUPLICATE_SHARE = 0.30
WORKERS = 8
WORKFLOWS = ("verification-code", "invite", "password-reset")
WEBHOOK_WORKFLOW = "password-reset"
"""The workflow whose status changes a downstream system receives as webhooks."""
POLICY = {
    "lease": timedelta(seconds=1),
    "max_attempts": 3,
    "backoff_base": timedelta(seconds=1),
    "backoff_cap": timedelta(seconds=4),
    "backoff_jitter": 0.2,
}
"""The demo's workflows' policy (set in the database; the handler passes none of it)."""
SLOW_SEND_S = 1.6
"""A slow SMTP server: longer than the lease, so the worker must heartbeat."""


@contextlib.asynccontextmanager
async def database_url() -> AsyncIterator[str]:
    """``$DATABASE_URL`` when set, else a private embedded server for the demo's lifetime."""
    if os.environ.get("DATABASE_URL"):
        yield str(async_url(os.environ["DATABASE_URL"]))
        return
    print("DATABASE_URL is not set: starting an embedded PostgreSQL for this demo")
    with embedded_server() as url:
        yield url


SmtpError = ProviderError


class FakeSmtp:
    """Fails as configured and logs every accepted message; sends through one of the two
    fake providers (``demo_providers``), which adds that provider's trouble and outcomes."""

    def __init__(self, rng: random.Random, providers: Providers) -> None:
        self.rng = rng
        self.providers = providers
        self.accepted: Counter[str] = Counter()

    def is_slow(self, delivery_id: str) -> bool:
        return delivery_id.endswith("3") and delivery_id[-3:-1] == "00"

    async def send(self, delivery_id: str, recipient: str, provider: str) -> str:
        """The provider's message id."""
        await asyncio.sleep(
            SLOW_SEND_S if self.is_slow(delivery_id) else self.rng.uniform(0, 0.004)
        )
        await self.providers.before_send(provider, recipient)
        if recipient.lower().endswith("@greylisted.example"):
            raise SmtpError(421, "4.7.0 Try again later")
        roll = self.rng.random()
        if recipient.lower() == BOUNCING.lower():
            roll = 1.0  # accepted; the bounce comes later, from the recipient's server
        if roll < 0.08:
            raise SmtpError(421, "4.3.2 Service not available, closing transmission channel")
        if roll < 0.095:
            raise SmtpError(550, "5.1.1 Mailbox unavailable")
        self.accepted[delivery_id] += 1
        return self.providers.accepted(provider, delivery_id, recipient)


@dataclass
class Message:
    """A Pub/Sub message: the event, and how often it was delivered so far."""

    delivery_id: str
    workflow: str
    recipient: str


@dataclass
class Outcome:
    acked: int = 0
    redelivered: int = 0
    duplicates_skipped: int = 0
    dead_letter_published: int = 0
    not_yet: int = 0
    heartbeats: int = 0
    slow_sends: int = 0
    suppressed: int = 0


async def handle(
    message: Message,
    tracker: DeliveryTracker,
    smtp: FakeSmtp,
    router: ProviderRouter,
    dead_letters: list[str],
    outcome: Outcome,
) -> tuple[str, float]:
    """The worker's Pub/Sub handler: ``ack``, or ``nack`` with the delay before Pub/Sub
    should redeliver (the workflow's backoff, as the database computed it)."""
    enqueued = await tracker.enqueue(
        message.delivery_id,
        workflow=message.workflow,
        recipient=message.recipient,
        metadata={"template": f"{message.workflow}-v3"},
    )
    if enqueued.suppression_reason is not None:
        outcome.suppressed += 1
        return "suppressed", 0.0  # the recipient is on the suppression list: never send
    try:
        claim = await tracker.claim(message.delivery_id)  # the lease: the workflow's policy
    except NotYet as wait:
        outcome.not_yet += 1
        return "nack", wait.wait.total_seconds()
    if claim is None:
        return "duplicate", 0.0  # sent, finished, or someone else holds a live claim: ack
    provider = router.pick()  # the order comes from the shared provider_health
    started = time.monotonic()
    try:
        # Heartbeats keep a slow send's claim alive; a lost claim must not send.
        async with tracker.keep_claim(claim) as keeper:
            if not keeper.held:
                return "duplicate", 0.0
            message_id = await smtp.send(message.delivery_id, message.recipient, provider)
        outcome.heartbeats += keeper.beats
        outcome.slow_sends += keeper.beats > 0
    except SmtpError as exc:
        result = await tracker.mark_failed(
            message.delivery_id,
            attempt=claim.attempt,
            error=(f"SMTP_{exc.smtp_code}", str(exc)),
            retryable=exc.smtp_code < 500,
            provider=provider,
            reply_code=exc.smtp_code,
            duration=timedelta(seconds=time.monotonic() - started),
        )  # the retry budget: the workflow's policy
        if result.status.value == "retrying":
            retry_at = result.delivery.next_attempt_at
            assert retry_at is not None
            return "nack", max(0.0, (retry_at - datetime.now(UTC)).total_seconds())
        if result.status.value == "dead_letter":
            reference = f"dlq-{len(dead_letters) + 1:05d}"
            dead_letters.append(message.delivery_id)
            await tracker.mark_dead_letter(message.delivery_id, reference=reference)
            return "dead_letter", 0.0
        return "ack", 0.0
    await tracker.mark_sent(
        message.delivery_id,
        attempt=claim.attempt,
        payload={"smtp": f"250 2.0.0 OK queued as {message_id}"},
        provider=provider,
        provider_message_id=message_id,
        reply_code=250,
        duration=timedelta(seconds=time.monotonic() - started),
    )
    return "ack", 0.0


def plan(rng: random.Random, run: str) -> list[Message]:
    originals = []
    for i in range(DELIVERIES):
        workflow = WORKFLOWS[i % len(WORKFLOWS)]
        host = "greylisted.example" if i % 250 == 7 else "example.com"
        originals.append(Message(f"{run}-{i:05d}", workflow, f"User{i % 700}@{host}".upper()))
    originals[1].recipient = BOUNCING  # an invite to a mailbox that no longer exists
    messages = list(originals)
    messages += [rng.choice(originals) for _ in range(int(DELIVERIES * DUPLICATE_SHARE))]
    rng.shuffle(messages)
    return messages


@dataclass
class Run:
    """What ``simulate`` leaves for the report."""

    run: str
    outcome: Outcome
    smtp: FakeSmtp
    crashed: str
    router: ProviderRouter
    bounced: str
    """The delivery whose recipient hard-bounced."""
    after_bounce: str
    """The later delivery to the same recipient (published once the bounce was recorded)."""
    outcomes_recorded: int = 0


async def simulate(url: str, rng: random.Random) -> Run:
    run = f"demo-{datetime.now(UTC):%H%M%S}-{os.getpid()}"
    messages = plan(rng, run)
    engine = make_engine(url, pool_size=WORKERS + 3)
    tracker = DeliveryTracker(engine)
    router = ProviderRouter(tracker, random.Random(11))
    providers = Providers(random.Random(12), router)
    smtp = FakeSmtp(rng, providers)
    queue: asyncio.Queue[Message]
    outcome = Outcome()
    dead_letters: list[str] = []
    bar = ProgressBar(len(messages) + 1, "pub/sub messages", sys.stderr)
    done = 0
    busy = 0
    bounced = next(m for m in messages if m.recipient == BOUNCING)
    later = Message(f"{run}-{DELIVERIES:05d}", bounced.workflow, BOUNCING)
    result = Run(run, outcome, smtp, "", router, bounced.delivery_id, later.delivery_id)

    # The crashed worker: it claims, then dies before sending; Pub/Sub keeps its message.
    # The crashed worker's delivery has no duplicate message: nobody else could claim it
    # once its lease expires, so the reaper is what brings it back.
    copies = Counter(m.delivery_id for m in messages)
    crashed = next(
        m
        for m in messages
        if copies[m.delivery_id] == 1 and not smtp.is_slow(m.delivery_id) and m is not bounced
    )
    result.crashed = crashed.delivery_id
    messages.remove(crashed)
    queue = asyncio.Queue()
    for message in messages:
        queue.put_nowait(message)
    await tracker.enqueue(
        crashed.delivery_id, workflow=crashed.workflow, recipient=crashed.recipient
    )
    crashed_claim = await tracker.claim(crashed.delivery_id)
    assert crashed_claim is not None
    in_flight: set[asyncio.Task[None]] = set()

    async def redeliver(message: Message, delay: float) -> None:
        await asyncio.sleep(delay)  # Pub/Sub redelivers a nacked message after the delay
        queue.put_nowait(message)

    def publish(message: Message, delay: float) -> None:
        task = asyncio.create_task(redeliver(message, delay))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)

    async def worker() -> None:
        nonlocal done, busy
        while True:
            message = await queue.get()
            busy += 1
            verdict, delay = await handle(message, tracker, smtp, router, dead_letters, outcome)
            if verdict == "nack":
                outcome.redelivered += 1
                publish(message, delay)
            else:
                outcome.acked += 1
                outcome.duplicates_skipped += verdict == "duplicate"
                outcome.dead_letter_published += verdict == "dead_letter"
                done += 1
                bar.update(done)
            busy -= 1
            queue.task_done()

    async def webhook_receiver() -> None:
        """The providers' webhooks: each event recorded as it comes (``record_outcome``);
        one may arrive before ``mark_sent`` stored its message id, and is matched then."""
        nonlocal busy
        while True:
            event = await providers.events.get()
            busy += 1
            recorded = await tracker.record_outcome(event)
            result.outcomes_recorded += recorded.recorded
            if event.permanent:
                publish(later, 0)  # the app invites the address again, after its bounce
            busy -= 1
            providers.events.task_done()

    async def settled() -> None:
        while True:
            await queue.join()
            await providers.events.join()
            if in_flight:
                await asyncio.gather(*list(in_flight))
            elif queue.empty() and providers.events.empty() and busy == 0:
                return

    tasks = [asyncio.create_task(worker()) for _ in range(WORKERS)]
    tasks += [asyncio.create_task(webhook_receiver()) for _ in range(2)]
    tasks.append(asyncio.create_task(router.run()))
    try:
        await settled()
        # Still in progress: the crashed worker's claim. The reaper runs once it expires.
        expires = crashed_claim.delivery.lease_expires_at
        assert expires is not None
        await asyncio.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds() + 0.1))
        reaped = await tracker.reap_stale()
        publish(crashed, 0)
        outcome.redelivered += 1
        await settled()
        bar.close()
        print(
            f"\nreaper: {len(reaped)} expired claim(s) handed back: "
            + ", ".join(f"{d.delivery_id} → {d.status.value}" for d in reaped)
        )
        await router.refresh()
        router.note("end of the run")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await tracker.aclose()
        await engine.dispose()
    return result


async def report(url: str, result: Run) -> bool:
    run, outcome, smtp, crashed = result.run, result.outcome, result.smtp, result.crashed
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            since = datetime.now(UTC) - timedelta(hours=1)
            stats = await conn.execute(queries.workflow_stats(since=since))
            columns = [c for c in queries.STATS_COLUMNS if c != "bucket"]
            columns += ["delivered", "bounced"]
            rows = [
                tuple(
                    ", ".join(f"{e['code']}:{e['count']}" for e in row._mapping[c])
                    if c == "top_error_codes"
                    else row._mapping[c]
                    for c in columns
                )
                for row in stats
            ]
            print("\nper-workflow statistics (email-delivery stats --since 1h)")
            print_table([c.replace("latency_", "") for c in columns], rows, sys.stdout)

            for title, delivery_id in (("the crashed worker's delivery", crashed),):
                events = await conn.execute(queries.delivery_events(delivery_id=delivery_id))
                print(f"\naudit trail of {delivery_id} ({title})")
                print_table(
                    ["id", "status", "attempt", "error_code", "payload", "created_at"],
                    [
                        (e.id, e.status, e.attempt, e.error_code, e.payload, e.created_at)
                        for e in events
                    ],
                    sys.stdout,
                )
            twice = (
                await conn.execute(
                    text(
                        "SELECT count(*) FROM (SELECT delivery_id FROM email.delivery_events "
                        "WHERE status = 'sent' AND delivery_id LIKE :run GROUP BY delivery_id "
                        "HAVING count(*) > 1) AS t"
                    ),
                    {"run": f"{run}-%"},
                )
            ).scalar_one()
            sent_rows = (
                await conn.execute(
                    text(
                        "SELECT count(*) FROM email.deliveries "
                        "WHERE status = 'sent' AND delivery_id LIKE :run"
                    ),
                    {"run": f"{run}-%"},
                )
            ).scalar_one()
            unfinished = (
                await conn.execute(
                    text(
                        "SELECT count(*) FROM email.deliveries WHERE delivery_id LIKE :run "
                        "AND status IN ('queued', 'in_progress', 'retrying')"
                    ),
                    {"run": f"{run}-%"},
                )
            ).scalar_one()
        tracker = DeliveryTracker(engine)
        try:
            providers_ok = await demo_providers.report(
                engine,
                tracker,
                run=run,
                router=result.router,
                bounced=result.bounced,
                after_bounce=result.after_bounce,
                outcomes_recorded=result.outcomes_recorded,
                out=sys.stdout,
            )
        finally:
            await tracker.aclose()
    finally:
        await engine.dispose()
    smtp_twice = sum(1 for n in smtp.accepted.values() if n > 1)
    print(
        f"\nmessages: {outcome.acked:,} acked ({outcome.duplicates_skipped:,} duplicates "
        f"skipped without sending), {outcome.redelivered:,} redelivered after a failure "
        f"({outcome.not_yet:,} of them too early: NotYet, nacked with the backoff's wait), "
        f"{outcome.dead_letter_published} published to the dead-letter topic; "
        f"{outcome.slow_sends} sends slower than the lease kept their claim with "
        f"{outcome.heartbeats} heartbeats; {outcome.suppressed} suppressed at enqueue, "
        "not sent"
    )
    print(
        f"no email sent twice: {'yes' if twice == 0 and smtp_twice == 0 else 'NO'} — "
        f"SMTP accepted {sum(smtp.accepted.values()):,} messages for "
        f"{len(smtp.accepted):,} deliveries; {sent_rows:,} rows are sent; deliveries with "
        f"more than one sent event: {twice}; unfinished: {unfinished}"
    )
    return (
        providers_ok
        and twice == 0
        and smtp_twice == 0
        and unfinished == 0
        and sent_rows == len(smtp.accepted)
    )


@contextlib.asynccontextmanager
async def demo_policies(url: str) -> AsyncIterator[None]:
    """The demo's workflows get ``POLICY`` for the run (as ``email-delivery policy set``
    does); a workflow that had its own row before keeps it, one that had none loses the
    demo's afterwards."""
    engine = make_engine(url)
    try:
        before = {p.workflow for p in await policies.policies(engine)}
        added = [w for w in WORKFLOWS if w not in before]
        for workflow in added:
            await policies.set_policy(engine, workflow, **POLICY)
        shown = await policies.policies(engine, workflow=WORKFLOWS[0])
        print(
            f"worker policy of {', '.join(WORKFLOWS)} (email-delivery policy show): lease "
            f"{shown[0].lease.total_seconds():g} s, {shown[0].max_attempts} attempts, backoff "
            f"{shown[0].backoff_base.total_seconds():g}-{shown[0].backoff_cap.total_seconds():g}"
            f" s ±{shown[0].backoff_jitter:.0%}"
        )
        yield
    finally:
        try:
            for workflow in added:
                await policies.reset_policy(engine, workflow)
        finally:
            await engine.dispose()


async def show_health(url: str) -> None:
    engine = make_engine(url)
    try:
        await maintain(engine)  # partitions ahead, rollups current: as the scheduler would
        report = await health_check.health(engine)
    finally:
        await engine.dispose()
    print("\nemail-delivery maintain, then email-delivery health")
    print_table(
        ["check", "workflow", "value", "threshold", "state"],
        [
            (
                c.check,
                c.workflow or "-",
                "-" if c.value is None else round(c.value, 2),
                "-" if c.threshold is None else round(c.threshold, 2),
                "BREACHED" if c.breached else "ok",
            )
            for c in report.checks
        ],
        sys.stdout,
    )
    print(
        "healthy (exit code 0)"
        if report.ok
        else f"{len(report.breached)} check(s) breached (exit code 1: a scheduler would page)"
    )


async def run() -> int:
    started = time.monotonic()
    async with database_url() as url:
        print("migrating to head …")
        await migrate.upgrade(url)
        async with demo_policies(url):
            print(
                f"simulating {DELIVERIES:,} deliveries over {len(WORKFLOWS)} workflows, "
                f"{DUPLICATE_SHARE:.0%} duplicated Pub/Sub messages, shuffled, {WORKERS} workers"
            )
            async with demo_webhooks.webhooks_during(url, WEBHOOK_WORKFLOW) as downstream:
                result = await simulate(url, random.Random(2026))
            ok = await report(url, result)
            await show_health(url)
            ok &= await demo_webhooks.report(url, result.run, WEBHOOK_WORKFLOW, downstream)
    print(f"\ndemo finished in {time.monotonic() - started:.1f} s")
    return 0 if ok else 1


def main() -> None:
    sys.exit(asyncio.run(run()))


if __name__ == "__main__":
    main()
