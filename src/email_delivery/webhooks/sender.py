"""The webhook sender: ``email-delivery webhooks run`` (a long-running worker, or ``--once``
per scheduler tick). Runs as the schema owner (the outbox tables are owner-only).

One tick:

1. **Build** (``outbox.fan_out``): messages for the changes the feed has after the outbox's
   cursor, page by page, until the feed is drained. With nothing new it writes nothing.
2. **Claim** due messages in one statement (with their endpoints' URL and secret):
   ``FOR UPDATE SKIP LOCKED`` (several senders take disjoint messages), ``attempts + 1``,
   and ``next_attempt_at`` moved to the end of a lease. A sender that dies mid-batch loses
   nothing: its messages are due again when their lease ends, and another sender (or the
   restarted one) sends them with the same ``webhook-id`` and body. That is the only way a
   receiver sees a message twice: when the sender died between the receiver's answer and
   the commit of the result. Receivers deduplicate by ``webhook-id`` (Standard Webhooks);
   ``lease`` must exceed ``timeout``.
3. **Send** each, concurrently, signed afresh (``signing.headers`` with the current time)
   through one ``Transport`` (the SSRF guard at connect time).
4. **Record** the results in groups, one transaction and one statement per group (what
   has been answered every ``RECORD_EVERY`` seconds, the whole batch when it is answered
   within that): each attempt (status code, latency, error, capped excerpt) in
   ``webhook_attempts``; the message delivered, rescheduled on Svix's
   schedule (``schedule.next_attempt_at``, jittered) or failed after the eighth attempt; a
   result whose lease was taken over meanwhile (``attempts`` moved on) changes nothing. The
   endpoint's failure streak starts at its first failure and ends at any 2xx; after
   ``schedule.DISABLE_AFTER`` (5 days) of failures, or at a 410 / ``webhook-delivery:
   disable``, the endpoint is disabled automatically (``health`` reports it).

``run`` ticks again at once after a backlog, after ``linger`` after some work (a trickle
of changes goes out in batches: a tick costs its few statements whatever it carries), and
after ``interval`` when idle. The database work is set-based: the messages' insert (per
feed page), the claim and the record (per batch or group) are one statement each, not one
per message; only a failure adds its endpoint's streak update.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from email_delivery.errors import InvalidInput, translate_errors
from email_delivery.urls import location
from email_delivery.webhooks import outbox, payloads, schedule, signing
from email_delivery.webhooks.transport import AttemptResult, Transport

__all__ = ["Claimed", "Sender", "TickReport", "pause_after"]

DEFAULT_TIMEOUT = 15.0
"""Seconds per attempt (Svix's)."""
DEFAULT_LEASE = timedelta(seconds=60)
DEFAULT_BATCH = 100
DEFAULT_CONCURRENCY = 16
MAX_EXCERPT = 1024
DEFAULT_LINGER = 0.05
"""Seconds ``run`` waits after a tick that found some work but no backlog."""
RECORD_EVERY = 0.1
"""Seconds: the results of a batch answered so far are recorded together at this pace, so
a slow receiver delays the record of the others by at most this."""
MAX_FAN_OUT_PAGES = 20
"""Pages built per tick before sending, so a backlog never starves the sending."""

_CLAIM = text(
    """
    WITH due AS (
        SELECT m.id, e.url, s.secret FROM email.webhook_messages AS m
        JOIN email.webhook_endpoints AS e ON e.id = m.endpoint_id AND e.enabled
        JOIN email.webhook_secrets AS s ON s.endpoint_id = e.id
        WHERE m.state = 'pending' AND m.next_attempt_at <= now()
        ORDER BY m.next_attempt_at, m.id
        LIMIT :limit
        FOR UPDATE OF m SKIP LOCKED
    )
    UPDATE email.webhook_messages AS m
    SET attempts = m.attempts + 1, next_attempt_at = now() + CAST(:lease AS interval)
    FROM due WHERE m.id = due.id
    RETURNING m.id, m.endpoint_id, m.message_id, m.body, m.attempts, due.url, due.secret
    """
)
_RECORD = text(
    """
    WITH result AS (
        SELECT * FROM unnest(
            CAST(:ids AS bigint[]), CAST(:attempts AS integer[]), CAST(:states AS text[]),
            CAST(:next_attempt_at AS timestamptz[]), CAST(:statuses AS integer[]),
            CAST(:latencies AS double precision[]), CAST(:errors AS text[]),
            CAST(:excerpts AS text[])
        ) AS r(id, attempt, state, next_attempt_at, status, latency_ms, error, excerpt)
    ),
    attempt AS (
        INSERT INTO email.webhook_attempts (message_id, attempt, status_code, latency_ms,
                                            error, response_excerpt)
        SELECT id, attempt, status, latency_ms, error, excerpt FROM result
    ),
    finished AS (
        UPDATE email.webhook_messages AS m
        SET state = r.state, next_attempt_at = coalesce(r.next_attempt_at, m.next_attempt_at),
            last_status = r.status, last_error = r.error,
            finished_at = CASE WHEN r.state = 'pending' THEN NULL ELSE now() END
        FROM result AS r
        WHERE m.id = r.id AND m.attempts = r.attempt AND m.state = 'pending'
        RETURNING m.id, m.endpoint_id, r.state, r.status
    ),
    succeeded AS (
        UPDATE email.webhook_endpoints AS e
        SET first_failure_at = NULL, updated_at = now()
        WHERE e.id IN (SELECT f.endpoint_id FROM finished AS f
                       WHERE f.state = 'delivered')
          AND e.first_failure_at IS NOT NULL
    )
    SELECT id, endpoint_id FROM finished
    """
)
_LOCK_ENDPOINTS = text(
    "SELECT id FROM email.webhook_endpoints WHERE id = ANY (CAST(:ids AS bigint[])) "
    "ORDER BY id FOR NO KEY UPDATE"
)
_FAILED = text(
    "UPDATE email.webhook_endpoints SET first_failure_at = coalesce(first_failure_at, now()) "
    "WHERE id = :id RETURNING first_failure_at, now() AS now"
)
_DISABLE = text(
    "UPDATE email.webhook_endpoints SET enabled = false, disabled_at = now(), "
    "disabled_reason = :reason, disabled_automatically = true, updated_at = now() "
    "WHERE id = :id AND enabled"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Claimed:
    id: int
    endpoint_id: int
    message_id: str
    body: bytes
    attempt: int
    url: str
    secret: str


@dataclass(slots=True, kw_only=True)
class TickReport:
    events_read: int = 0
    messages_built: int = 0
    claimed: int = 0
    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    endpoints_disabled: list[int] = field(default_factory=list)

    def add(self, other: TickReport) -> None:
        self.events_read += other.events_read
        self.messages_built += other.messages_built
        self.claimed += other.claimed
        self.delivered += other.delivered
        self.retrying += other.retrying
        self.failed += other.failed
        self.endpoints_disabled += other.endpoints_disabled

    @property
    def idle(self) -> bool:
        return not (self.events_read or self.claimed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "events_read": self.events_read,
            "messages_built": self.messages_built,
            "claimed": self.claimed,
            "delivered": self.delivered,
            "retrying": self.retrying,
            "failed": self.failed,
            "endpoints_disabled": list(self.endpoints_disabled),
        }


def _positive(value: object, field: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise InvalidInput(field, "must be a positive number")


class Sender:
    """``async with Sender(engine) as sender: await sender.run()`` (or ``tick()``)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        lease: timedelta = DEFAULT_LEASE,
        batch: int = DEFAULT_BATCH,
        concurrency: int = DEFAULT_CONCURRENCY,
        allow_insecure: bool = False,
        allow_private: bool = False,
        transport: Transport | None = None,
    ) -> None:
        _positive(timeout, "timeout")
        _positive(batch, "batch")
        _positive(concurrency, "concurrency")
        if not isinstance(lease, timedelta) or lease.total_seconds() <= timeout:
            raise InvalidInput("lease", "must be a timedelta longer than the timeout")
        self.engine = engine
        self.timeout = float(timeout)
        self.lease = lease
        self.batch = int(batch)
        self._limit = asyncio.Semaphore(int(concurrency))
        self._transport = transport or Transport(
            allow_insecure=allow_insecure, allow_private=allow_private
        )
        self._own_transport = transport is None
        self._where = location(engine.url)

    async def __aenter__(self) -> Sender:
        if self._own_transport:
            await self._transport.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._own_transport:
            await self._transport.__aexit__(None, None, None)

    # -- one tick ---------------------------------------------------------------------------

    async def build(self) -> TickReport:
        """Messages for the feed's new changes, up to ``MAX_FAN_OUT_PAGES`` pages."""
        report = TickReport()
        for _ in range(MAX_FAN_OUT_PAGES):
            result = await outbox.fan_out(self.engine)
            if result is None:  # another sender is building
                break
            read, built = result
            report.events_read += read
            report.messages_built += built
            if read < outbox.FAN_OUT_PAGE:
                break
        return report

    async def claim(self) -> list[Claimed]:
        """Take up to ``batch`` due messages of enabled endpoints (one statement)."""
        async with translate_errors(database=self._where), self.engine.begin() as conn:
            rows = (await conn.execute(_CLAIM, {"limit": self.batch, "lease": self.lease})).all()
        return [
            Claimed(
                id=row.id,
                endpoint_id=row.endpoint_id,
                message_id=row.message_id,
                body=row.body.encode("ascii"),
                attempt=row.attempts,
                url=row.url,
                secret=row.secret,
            )
            for row in rows
        ]

    async def send(self, message: Claimed) -> AttemptResult:
        headers = signing.headers(
            message.secret,
            message_id=message.message_id,
            timestamp=datetime.now(UTC),
            body=message.body,
        )
        async with self._limit:
            return await self._transport.post(
                url=message.url,
                body=message.body,
                headers=headers,
                timeout=self.timeout,
                max_excerpt=MAX_EXCERPT,
            )

    def _outcome(self, message: Claimed, result: AttemptResult) -> tuple[str, datetime | None]:
        """The message's next state and, when it changes, its next attempt time."""
        now = datetime.now(UTC)
        if result.ok:
            return "delivered", None
        if result.gone:
            return "pending", now  # waits for the endpoint to be enabled again
        if result.retryable:
            next_attempt = schedule.next_attempt_at(
                attempt=message.attempt, failed_at=now, message_id=message.message_id
            )
            return ("pending", next_attempt) if next_attempt is not None else ("failed", None)
        return "failed", None

    async def record(
        self, results: Sequence[tuple[Claimed, AttemptResult]], report: TickReport
    ) -> None:
        """Record a group of results in one transaction: one statement writes every
        attempt row, finishes or reschedules every message whose lease is still ours, and
        ends the failure streak of the endpoints that got a 2xx; failures (rare) then
        update their endpoints' streaks one by one, the group's endpoints locked first in id
        order (no deadlock between senders). An endpoint with a 2xx in the group starts no
        failure streak from the same group: it answered."""
        if not results:
            return
        outcomes = [self._outcome(message, result) for message, result in results]
        async with translate_errors(database=self._where), self.engine.begin() as conn:
            if not all(result.ok for _, result in results):
                # Failures update their endpoints one by one below: lock every endpoint of
                # the group first, in id order, so two senders whose groups share endpoints
                # wait for each other instead of deadlocking.
                await conn.execute(
                    _LOCK_ENDPOINTS,
                    {"ids": sorted({message.endpoint_id for message, _ in results})},
                )
            finished = {
                row.id
                for row in await conn.execute(
                    _RECORD,
                    {
                        "ids": [message.id for message, _ in results],
                        "attempts": [message.attempt for message, _ in results],
                        "states": [state for state, _ in outcomes],
                        "next_attempt_at": [when for _, when in outcomes],
                        "statuses": [result.status for _, result in results],
                        "latencies": [result.latency_ms for _, result in results],
                        "errors": [result.error for _, result in results],
                        "excerpts": [result.response_excerpt for _, result in results],
                    },
                )
            }
            succeeded = {
                message.endpoint_id
                for message, result in results
                if result.ok and message.id in finished
            }
            for (message, result), (state, _) in zip(results, outcomes, strict=True):
                if message.id not in finished:  # our lease was taken over: the newer decides
                    continue
                if result.ok:
                    report.delivered += 1
                    continue
                if state == "failed":
                    report.failed += 1
                else:
                    report.retrying += 1
                reason = None
                if result.gone:
                    reason = f"the receiver asked to stop: {result.error}"
                elif message.endpoint_id not in succeeded:  # a 2xx in this group: alive
                    streak = (await conn.execute(_FAILED, {"id": message.endpoint_id})).one()
                    if schedule.should_disable(
                        first_failure_at=streak.first_failure_at, now=streak.now
                    ):
                        reason = (
                            f"every attempt failed since {streak.first_failure_at.isoformat()} "
                            f"(budget {schedule.DISABLE_AFTER}); last: {result.error}"
                        )
                if reason is not None:
                    disabled = await conn.execute(
                        _DISABLE, {"id": message.endpoint_id, "reason": reason[:500]}
                    )
                    if disabled.rowcount:
                        report.endpoints_disabled.append(message.endpoint_id)

    async def deliver(self) -> TickReport:
        """Claim one batch of due messages, send them concurrently, and record the results
        in groups: whatever has been answered every ``RECORD_EVERY`` seconds (at once when
        the whole batch has been answered), one transaction per group."""
        report = TickReport()
        claimed = await self.claim()
        report.claimed = len(claimed)
        sending: dict[asyncio.Future[AttemptResult], Claimed] = {
            asyncio.ensure_future(self.send(message)): message for message in claimed
        }
        waiting: set[asyncio.Future[AttemptResult]] = set(sending)
        try:
            while waiting:
                done, waiting = await asyncio.wait(waiting, timeout=RECORD_EVERY)
                await self.record([(sending[task], task.result()) for task in done], report)
        finally:  # an error (or a cancel) leaves nothing in flight behind it
            for task in waiting:
                task.cancel()
        return report

    async def tick(self) -> TickReport:
        """Build, then send one batch."""
        report = await self.build()
        report.add(await self.deliver())
        return report

    async def run(
        self,
        *,
        interval: float = 1.0,
        linger: float = DEFAULT_LINGER,
        stop: asyncio.Event | None = None,
        on_tick: Any = None,
    ) -> TickReport:
        """Tick until ``stop`` is set: at once again while a tick finds a backlog (a full
        batch, or a full page of the feed); after ``linger`` seconds when it found less (so
        that a steady trickle of changes is sent in batches, not one tick per change: a
        tick costs a few statements whatever it carries); after ``interval`` seconds when
        it found nothing. Returns the totals."""
        _positive(interval, "interval")
        if isinstance(linger, bool) or not isinstance(linger, int | float) or linger < 0:
            raise InvalidInput("linger", "must be a number of seconds >= 0")
        stop = stop or asyncio.Event()
        total = TickReport()
        while not stop.is_set():
            report = await self.tick()
            total.add(report)
            if on_tick is not None and not report.idle:
                on_tick(report)
            wait = pause_after(report, batch=self.batch, interval=interval, linger=linger)
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
        return total


def pause_after(report: TickReport, *, batch: int, interval: float, linger: float) -> float:
    """Seconds ``Sender.run`` waits after a tick that reported ``report``: none after a
    backlog (a full batch claimed, or a full page of the feed read), ``linger`` after some
    work, ``interval`` after none."""
    if report.idle:
        return interval
    if report.claimed >= batch or report.events_read >= outbox.FAN_OUT_PAGE:
        return 0.0
    return min(linger, interval)


async def send_test(
    engine: AsyncEngine,
    endpoint_id: int,
    *,
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109
    allow_insecure: bool = False,
    allow_private: bool = False,
) -> AttemptResult:
    """Send one signed example message (``delivery_id`` ``webhook-test``, a fresh
    ``webhook-id``) to an endpoint now, enabled or not; nothing is stored."""
    import secrets as random

    endpoint = await outbox.get(engine, endpoint_id)
    async with translate_errors(database=location(engine.url)), engine.connect() as conn:
        url, secret = (await outbox.secrets_of(conn, [endpoint.id]))[endpoint.id]
        await conn.rollback()
    now = datetime.now(UTC)
    payload = payloads.build(
        endpoint_id=endpoint.id,
        event={"id": 1, "status": "sent", "attempt": 1, "created_at": now},
        delivery={
            "delivery_id": "webhook-test",
            "workflow": "webhook-test",
            "recipient": "test@example.invalid",
            "status": "sent",
            "attempts": 1,
            "queued_at": now,
            "sent_at": now,
            "metadata": {},
            "updated_at": now,
        },
        options=endpoint.options,
    )
    payload["id"] = f"msg_{random.token_hex(16)}"
    body = payloads.serialize(payload)
    headers = signing.headers(secret, message_id=payload["id"], timestamp=now, body=body)
    async with Transport(allow_insecure=allow_insecure, allow_private=allow_private) as transport:
        return await transport.post(
            url=url, body=body, headers=headers, timeout=timeout, max_excerpt=MAX_EXCERPT
        )
