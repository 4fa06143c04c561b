"""``DeliveryTracker``: the worker's lifecycle API over the SQL functions of schema ``email``.

Every state change is one call of one ``email.*`` function (one atomic statement; see
``email_delivery/sql``), sent in one round trip straight to the asyncpg connection checked
out of the engine's pool: no SQLAlchemy statement compilation, no transaction block (the
function call is its own transaction), and asyncpg's per-connection prepared statement
cache does the rest (``make_engine(pooler="transaction")`` turns that cache off).

With ``group_commit=True`` (``email_delivery.group_commit``), concurrent enqueue, claim,
mark_sent and mark_failed calls are coalesced into the batch functions: one statement and
one commit for many calls, each caller still awaiting its own committed row.

Input is checked in Python first (``email_delivery.validation``): bad input raises an
``InvalidInput`` naming the field before anything is sent. The connections are held by a
``Connector`` (``email_delivery.connector``), which translates database errors with
``errors.translate_errors``: a caller meets ``PermissionDenied``, ``DatabaseUnavailable``,
``NotMigrated``, ``IllegalTransition`` … (all ``EmailDeliveryError``), never asyncpg's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import configure_mappers
from sqlalchemy.orm.base import manager_of_class

from email_delivery import rules, sql
from email_delivery import validation as v
from email_delivery.connector import Connector, Record
from email_delivery.errors import DeliveryConflict, DeliveryNotFound, InvalidInput, NotYet
from email_delivery.group_commit import Batcher, GroupCommit
from email_delivery.models import Delivery, DeliveryEvent, DeliveryStatus
from email_delivery.outcomes import (
    DeliveryOutcome,
    OutcomeEvent,
    OutcomeResult,
    ProviderMetrics,
    check_provider_facts,
    outcome_args,
)
from email_delivery.providers.events import OutcomeKind, ProviderEvent

__all__ = [
    "Claim",
    "ClaimKeeper",
    "DeliveryTracker",
    "EnqueueResult",
    "GroupCommit",
    "NewDelivery",
    "TransitionResult",
]


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    delivery: Delivery
    created: bool
    """False: the delivery existed (a redelivered event); nothing changed."""
    conflicts: tuple[str, ...] = ()
    """``enqueue_many`` only: fields that differ from the stored row; nothing was written."""

    @property
    def suppression_reason(self) -> str | None:
        """Why the delivery ended ``suppressed`` at enqueue (``hard_bounce``, ``complaint``,
        ``manual``: its recipient is on the suppression list), else ``None``. Do not send."""
        if self.delivery.status is not DeliveryStatus.SUPPRESSED:
            return None
        code = self.delivery.last_error_code or ""
        return code.removeprefix("SUPPRESSED_").lower() or None


@dataclass(frozen=True, slots=True)
class Claim:
    """The right to send one attempt; report it with ``mark_sent``/``mark_failed``."""

    delivery: Delivery
    attempt: int

    @property
    def delivery_id(self) -> str:
        return self.delivery.delivery_id

    @property
    def lease(self) -> timedelta:
        """How long the claim lives without a heartbeat (its policy's lease, or the
        caller's)."""
        expires = self.delivery.lease_expires_at
        started = self.delivery.last_attempted_at
        if expires is None or started is None:
            raise ValueError("not a live claim")
        return expires - started


@dataclass(slots=True)
class ClaimKeeper:
    """What ``DeliveryTracker.keep_claim`` yields: whether the claim is still the caller's."""

    held: bool = True
    beats: int = 0


@dataclass(frozen=True, slots=True)
class TransitionResult:
    delivery: Delivery
    """The row after the call."""
    changed: bool
    """False: the call's precondition did not hold (already sent, superseded attempt …)."""

    @property
    def status(self) -> DeliveryStatus:
        return self.delivery.status


@dataclass(frozen=True, slots=True)
class NewDelivery:
    """One item of ``enqueue_many``."""

    delivery_id: str
    workflow: str
    recipient: str
    metadata: Mapping[str, Any] | None = None
    queued_at: datetime | None = None


_SQL = sql.blocks("queries.sql")
"""The statements of ``email_delivery/sql/queries.sql``, by name."""

_DELIVERY_KEYS = tuple(
    "metadata_" if name == "metadata" else name for name in rules.DELIVERY_ROW_COLUMNS
)


def _delivery(row: Record) -> Delivery:
    # As the ORM loads a row: state set straight into __dict__, no attribute events (the
    # declarative constructor costs ten times as much, and this is the hot path).
    delivery: Delivery = _DELIVERY_MANAGER.new_instance()
    values = delivery.__dict__
    values.update(zip(_DELIVERY_KEYS, row, strict=False))  # functions add columns
    values["status"] = DeliveryStatus(values["status"])
    values["metadata_"] = v.json_object_or_none(values["metadata_"])
    return delivery


def _event(row: Record) -> DeliveryEvent:
    return DeliveryEvent(
        id=row[0],
        delivery_id=row[1],
        status=DeliveryStatus(row[2]),
        attempt=row[3],
        error_code=row[4],
        error_message=row[5],
        payload=v.json_object_or_none(row[6]),
        created_at=row[7],
    )


configure_mappers()
_DELIVERY_MANAGER = manager_of_class(Delivery)


class DeliveryTracker:
    """The lifecycle of deliveries, for a Pub/Sub worker (see the README's worker section)."""

    def __init__(
        self,
        bind: AsyncEngine | async_sessionmaker[AsyncSession],
        *,
        connections: int | None = None,
        group_commit: bool | GroupCommit = False,
    ) -> None:
        """``connections``: how many connections of the engine's pool the tracker uses at most
        and keeps checked out between calls (default: the pool's ``pool_size``; 0 checks one
        out per call instead). A pool checkout and check-in cost more CPU than the call
        itself; ``await tracker.aclose()`` (or ``async with tracker``) gives them back.
        Other code sharing the engine gets only what the tracker leaves: give the tracker its
        own engine, or ``connections`` below ``pool_size``.

        ``group_commit``: coalesce concurrent calls of one kind into one statement and one
        commit (``True``, or a ``GroupCommit`` with its settings). It pays when many calls
        run at once (a worker instance handling many messages concurrently): fewer commits
        and statements per delivery. A lone call is sent at once either way. Off by default:
        results and errors are the same, and per-call mode is the simplest to reason about
        (see docs/benchmarks.md for when each pays)."""
        self._connector = Connector(bind, connections=connections)
        # The connector's bound method itself: no extra coroutine per call on the hot path.
        self._fetch = self._connector.fetch
        if group_commit is True:
            group_commit = GroupCommit()
        if group_commit is not False and not isinstance(group_commit, GroupCommit):
            raise InvalidInput("group_commit", "must be a bool or a GroupCommit")
        self._batchers: dict[str, Batcher] = {}
        if group_commit:
            for kind, batch, shared in (
                ("enqueue_delivery", "enqueue_deliveries", ()),
                ("claim_delivery", "claim_deliveries", (1,)),
                ("mark_delivery_sent", "mark_deliveries_sent", ()),
                ("mark_delivery_failed", "mark_deliveries_failed", ()),
            ):
                self._batchers[kind] = Batcher(
                    self._fetch,
                    batch_sql=_SQL[batch],
                    single_sql=_SQL[kind],
                    settings=group_commit,
                    shared=shared,
                )

    async def __aenter__(self) -> DeliveryTracker:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Return the idle connections to the engine's pool (the tracker stays usable)."""
        for batcher in self._batchers.values():
            await batcher.aclose()
        await self._connector.aclose()

    async def _one(self, delivery_id: str, kind: str, *args: Any) -> Record:
        batcher = self._batchers.get(kind)
        if batcher is not None:
            row = await batcher.submit(delivery_id, *args)
            if row is None:
                raise DeliveryNotFound(delivery_id)
            return row
        rows = await self._fetch(_SQL[kind], delivery_id, *args)
        if not rows:
            raise DeliveryNotFound(delivery_id)
        return rows[0]

    # -- enqueue -----------------------------------------------------------------------

    async def enqueue(
        self,
        delivery_id: str,
        *,
        workflow: str,
        recipient: str,
        metadata: Mapping[str, Any] | None = None,
        queued_at: datetime | None = None,
    ) -> EnqueueResult:
        """Insert ``queued`` unless it exists; a redelivery with the same workflow and
        recipient changes nothing; different ones raise ``DeliveryConflict``."""
        args = _enqueue_args(delivery_id, workflow, recipient, metadata, queued_at, "")
        row = await self._one(args[0], "enqueue_delivery", *args[1:])
        delivery = _delivery(row)
        if row["conflicts"]:
            raise DeliveryConflict(args[0], row["conflicts"], delivery)
        return EnqueueResult(delivery=delivery, created=row["created"])

    async def enqueue_many(
        self, deliveries: Iterable[NewDelivery | Mapping[str, Any]]
    ) -> list[EnqueueResult]:
        """A Pub/Sub batch in one statement; one result per item, in order.

        A conflicting item is reported in its result's ``conflicts`` (nothing written for
        it) instead of raising, so the rest of the batch is still recorded.
        """
        columns: tuple[list[Any], ...] = ([], [], [], [], [])
        for index, item in enumerate(deliveries):
            if isinstance(item, Mapping):
                try:
                    item = NewDelivery(**item)
                except TypeError as exc:
                    raise InvalidInput(f"deliveries[{index}]", str(exc)) from None
            if not isinstance(item, NewDelivery):
                raise InvalidInput(f"deliveries[{index}]", "a NewDelivery or a mapping")
            values = _enqueue_args(
                item.delivery_id,
                item.workflow,
                item.recipient,
                item.metadata,
                item.queued_at,
                f"deliveries[{index}].",
            )
            for column, value in zip(columns, values, strict=True):
                column.append(value)
            if index >= rules.MAX_BATCH:
                raise InvalidInput("deliveries", f"at most {rules.MAX_BATCH} per batch")
        if not columns[0]:
            return []
        rows = await self._fetch(_SQL["enqueue_deliveries"], *columns)
        return [
            EnqueueResult(
                delivery=_delivery(row), created=row["created"], conflicts=tuple(row["conflicts"])
            )
            for row in rows
        ]

    # -- worker steps ------------------------------------------------------------------

    async def claim(self, delivery_id: str, *, lease: timedelta | None = None) -> Claim | None:
        """Start an attempt, or ``None``: do not send (sent, failed, dead_letter, or another
        worker's live claim). A ``retrying`` delivery whose backoff has not passed raises
        ``NotYet`` with the time to wait (nack the message with that delay).

        The claim lives ``lease``, or its workflow's policy's lease (``workflow_policies``):
        it stores its expiry, and every worker and the reaper judge it by that, so a worker
        deployed with a shorter lease can no longer take over a live claim. Extend it around
        a slow send with ``heartbeat``."""
        v.check_delivery_id(delivery_id)
        if lease is not None:
            v.check_positive_interval(lease, "lease")
        row = await self._one(delivery_id, "claim_delivery", lease)
        if not row["changed"]:
            if row["retry_at"] is not None:
                wait = row["retry_at"] - await self._now()
                raise NotYet(delivery_id, row["retry_at"], wait)
            return None
        return Claim(delivery=_delivery(row), attempt=row["attempt"])

    async def heartbeat(
        self, delivery_id: str, *, attempt: int, lease: timedelta | None = None
    ) -> bool:
        """Extend the live claim of ``attempt`` by ``lease`` (default: the workflow's
        policy's) from now, around a send that may outlast it. ``False``: the caller no
        longer holds the claim (another attempt took it over, the reaper took it back, it
        was reported) and must not send."""
        v.check_delivery_id(delivery_id)
        v.check_int(attempt, "attempt", minimum=1)
        if lease is not None:
            v.check_positive_interval(lease, "lease")
        rows = await self._fetch(_SQL["extend_claim"], delivery_id, attempt, lease)
        return bool(rows[0]["held"])

    @contextlib.asynccontextmanager
    async def keep_claim(
        self, claim: Claim, *, every: timedelta | None = None
    ) -> AsyncIterator[ClaimKeeper]:
        """Heartbeat ``claim`` in the background while the block runs (a slow send):
        ``every`` (default: a third of the claim's lease) it extends the claim by its lease.
        ``keeper.held`` turns ``False`` once a heartbeat finds the claim taken over: check
        it before sending, and do not send then."""
        lease = claim.lease
        interval = every if every is not None else lease / 3
        v.check_positive_interval(interval, "every")
        keeper = ClaimKeeper()

        async def beat() -> None:
            while keeper.held:
                await asyncio.sleep(interval.total_seconds())
                keeper.held = await self.heartbeat(
                    claim.delivery_id, attempt=claim.attempt, lease=lease
                )
                keeper.beats += 1

        task = asyncio.create_task(beat())
        try:
            yield keeper
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _now(self) -> datetime:
        # The wait of a NotYet is measured by the database's clock, as retry_at was.
        rows = await self._fetch(_SQL["now"])
        moment: datetime = rows[0][0]
        return moment

    async def mark_sent(
        self,
        delivery_id: str,
        *,
        attempt: int,
        payload: Mapping[str, Any] | None = None,
        provider: str | None = None,
        provider_message_id: str | None = None,
        reply_code: int | None = None,
        duration: timedelta | None = None,
    ) -> TransitionResult:
        """``sent`` from anything but ``sent`` (a late success is the truth).

        The attempt's provider facts, all optional: ``provider`` (a slug such as ``ses``),
        the ``provider_message_id`` its API returned (required to match its outcome events;
        needs ``provider``), the SMTP or HTTP ``reply_code`` and the send's ``duration``.
        They land in ``email.delivery_attempts`` and on the audit event; provider events
        that arrived before the message id are matched now."""
        v.check_delivery_id(delivery_id)
        v.check_int(attempt, "attempt", minimum=0)
        body = v.check_json_object(payload, "payload", optional=True)
        facts = check_provider_facts(provider, provider_message_id, reply_code, duration)
        row = await self._one(delivery_id, "mark_delivery_sent", attempt, body, *facts)
        return TransitionResult(delivery=_delivery(row), changed=row["changed"])

    async def mark_failed(
        self,
        delivery_id: str,
        *,
        attempt: int,
        error: BaseException | tuple[str, str],
        retryable: bool = True,
        max_attempts: int | None = None,
        payload: Mapping[str, Any] | None = None,
        provider: str | None = None,
        provider_message_id: str | None = None,
        reply_code: int | None = None,
        duration: timedelta | None = None,
    ) -> TransitionResult:
        """Report a failed attempt: ``retrying``, ``dead_letter`` when retries are used up,
        or ``failed`` when not retryable. A superseded attempt changes nothing. A retry waits
        for the workflow's backoff (a claim before then raises ``NotYet``); ``max_attempts``
        overrides the workflow's policy's retry budget. The provider facts are
        ``mark_sent``'s (kept for the live attempt only)."""
        v.check_delivery_id(delivery_id)
        v.check_int(attempt, "attempt", minimum=1)
        if max_attempts is not None:
            v.check_int(max_attempts, "max_attempts", minimum=1)
        if not isinstance(retryable, bool):
            raise InvalidInput("retryable", "must be a bool")
        code, message = v.error_code_and_message(error)
        body = v.check_json_object(payload, "payload", optional=True)
        facts = check_provider_facts(provider, provider_message_id, reply_code, duration)
        row = await self._one(
            delivery_id,
            "mark_delivery_failed",
            attempt,
            code,
            message,
            retryable,
            max_attempts,
            body,
            *facts,
        )
        return TransitionResult(delivery=_delivery(row), changed=row["changed"])

    async def mark_dead_letter(self, delivery_id: str, *, reference: str) -> TransitionResult:
        """Record the dead-letter topic's message id; an unfinished delivery becomes
        ``dead_letter``. ``failed`` stays ``failed``; ``sent`` never changes."""
        v.check_delivery_id(delivery_id)
        v.check_reference(reference)
        row = await self._one(delivery_id, "mark_delivery_dead_letter", reference)
        return TransitionResult(delivery=_delivery(row), changed=row["changed"])

    async def requeue(self, delivery_id: str, *, reason: str) -> TransitionResult:
        """Operators only (the schema owner): ``failed``/``dead_letter`` back to ``queued``
        with a fresh retry budget."""
        v.check_delivery_id(delivery_id)
        reason = v.check_reason(reason)
        row = await self._one(delivery_id, "requeue_delivery", reason)
        return TransitionResult(delivery=_delivery(row), changed=row["changed"])

    async def reap_stale(
        self,
        *,
        lease: timedelta | None = None,
        max_attempts: int | None = None,
        limit: int = 1000,
    ) -> list[Delivery]:
        """Claims past their stored expiry back to ``retrying`` (``dead_letter`` when the
        retry budget, ``max_attempts`` or the workflow's policy's, is used up); returns the
        deliveries it moved. Safe to run from several schedulers at once. ``lease`` is not
        used since revision 0008 (each claim stores its expiry) and is accepted so existing
        calls keep working."""
        if lease is not None:
            v.check_positive_interval(lease, "lease")
        if max_attempts is not None:
            v.check_int(max_attempts, "max_attempts", minimum=1)
        v.check_int(limit, "limit", minimum=1)
        rows = await self._fetch(_SQL["reap_stale_deliveries"], lease, max_attempts, limit)
        return [_delivery(row) for row in rows]

    # -- provider outcomes (revision 0010) ---------------------------------------------

    async def record_outcome(self, event: ProviderEvent) -> OutcomeResult:
        """Record one provider event (``email_delivery.providers`` parses webhooks into
        them), once per (provider, event_id): a retried webhook changes nothing. It is
        matched to its delivery by provider message id, else by the echoed delivery id, and
        kept unmatched until ``mark_sent`` stores the id otherwise. The delivery's outcome
        only rises (``email_delivery.outcomes``); its status never changes."""
        args = outcome_args(event)
        rows = await self._fetch(_SQL["record_delivery_outcome"], *args)
        row = rows[0]
        return OutcomeResult(
            delivery_id=row["delivery_id"],
            recorded=row["recorded"],
            matched=row["matched"],
            outcome=None if row["outcome"] is None else OutcomeKind(row["outcome"]),
            permanent=row["permanent"],
            changed=row["outcome_changed"],
        )

    async def record_outcomes(self, events: Iterable[ProviderEvent]) -> list[OutcomeResult]:
        """``record_outcome`` for each event of a webhook batch, in order; all are checked
        before any is recorded."""
        batch = list(events)
        for index, event in enumerate(batch):
            outcome_args(event, f"events[{index}]")
        return [await self.record_outcome(event) for event in batch]

    async def match_outcomes(self) -> int:
        """Match every kept unmatched provider event whose message id or delivery id has
        arrived since (``mark_sent`` does this for its own delivery); how many matched."""
        rows = await self._fetch(_SQL["match_outcome_events"])
        return int(rows[0][0])

    async def outcome(self, delivery_id: str) -> DeliveryOutcome | None:
        """The delivery's outcome, ``None`` before any provider event matched it."""
        v.check_delivery_id(delivery_id)
        rows = await self._fetch(_SQL["delivery_outcome"], delivery_id)
        if not rows:
            return None
        values = dict(rows[0])
        values["outcome"] = OutcomeKind(values["outcome"])
        return DeliveryOutcome(**values)

    async def outcome_events(self, delivery_id: str) -> list[OutcomeEvent]:
        """The delivery's provider events, in the order they happened."""
        v.check_delivery_id(delivery_id)
        rows = await self._fetch(_SQL["outcome_events"], delivery_id)
        return [OutcomeEvent(**{**dict(row), "kind": OutcomeKind(row["kind"])}) for row in rows]

    async def find_by_provider_message_id(
        self, provider: str, provider_message_id: str
    ) -> str | None:
        """The delivery a provider's message id belongs to (support's lookup)."""
        facts = check_provider_facts(provider, provider_message_id, None, None)
        rows = await self._fetch(_SQL["find_by_provider_message_id"], facts[0], facts[1])
        return rows[0][0] if rows else None

    async def provider_health(
        self, *, window: timedelta = timedelta(minutes=15)
    ) -> list[ProviderMetrics]:
        """Per provider and workflow, the attempts of the last ``window``: accepted,
        failed, delivered, bounce/complaint/deferral rates, p50/p95 send duration and time
        to delivered. Shared and persistent: every worker instance sees what all of them
        reported, so one can order its providers (``outcomes.provider_order``) without
        meeting an outage itself."""
        v.check_positive_interval(window, "window")
        rows = await self._fetch(_SQL["provider_metrics"], window)
        return [ProviderMetrics(**dict(row)) for row in rows]

    # -- reads -------------------------------------------------------------------------

    async def get(self, delivery_id: str) -> Delivery | None:
        v.check_delivery_id(delivery_id)
        rows = await self._fetch(_SQL["get_delivery"], delivery_id)
        return _delivery(rows[0]) if rows else None

    async def history(self, delivery_id: str) -> list[DeliveryEvent]:
        """The delivery's audit events, oldest first."""
        v.check_delivery_id(delivery_id)
        return [_event(row) for row in await self._fetch(_SQL["delivery_history"], delivery_id)]


def _enqueue_args(
    delivery_id: object,
    workflow: object,
    recipient: object,
    metadata: object,
    queued_at: object,
    prefix: str,
) -> tuple[str, str, str, str | None, datetime | None]:
    delivery_id = v.check_delivery_id(delivery_id, f"{prefix}delivery_id")
    workflow = v.check_workflow(workflow, f"{prefix}workflow")
    recipient = v.normalize_recipient(recipient, f"{prefix}recipient")
    if queued_at is not None:
        queued_at = v.check_aware(queued_at, f"{prefix}queued_at")
    if isinstance(metadata, Mapping):
        for key in rules.RESERVED_METADATA_KEYS:
            if key in metadata:
                raise InvalidInput(
                    f"{prefix}metadata.{key}", "reserved for the lifecycle functions"
                )
    body = v.check_json_object(metadata, f"{prefix}metadata", optional=False)
    return delivery_id, workflow, recipient, body, queued_at
