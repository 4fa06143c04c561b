"""The change feed: every audit event of ``email.delivery_events`` exactly once, in
transaction order, after an opaque cursor (``email.delivery_feed``, revision 0009). A
transaction that began writing after another committed comes after it; one delivery's events
are in true order by ``id`` (its row lock serialises them).

Why not ``WHERE id > last_seen``: identity values are taken when a row is inserted, not when
its transaction commits. A transaction that inserts event 100 and commits after another
transaction's event 101 was read is skipped by that reader, silently and forever.

How: a page holds only events written by transactions older than the reading snapshot's
``xmin`` (every transaction below it has ended; every later one gets a higher transaction
id), ordered by ``(xact_id, id)``; the cursor is the last ``(xact_id, id)`` returned. So an
event can never appear behind a cursor, and none is returned twice. The price: an event is
readable once every transaction that started before its own has ended, so one long
transaction anywhere in the cluster that holds a transaction id delays the feed (not the
writers) until it ends. ``xact_id`` is the 64-bit ``pg_current_xact_id()`` (epoch and xid),
so it never wraps.

Use::

    page = await feed.page(engine, after=cursor, limit=1000)   # one page, and its cursor
    async for event in feed.follow(engine, after=cursor):        # forever; store event.cursor
        ...

``follow`` wakes on ``LISTEN email_delivery_feed`` (a statement trigger notifies when a
transaction that wrote events commits, while at least one reader is registered through
``email.feed_listener_heartbeat``: a NOTIFY serialises commits cluster-wide, so nobody pays
for it while nobody listens) and polls every ``poll_interval`` as well: the
notification is only a hint (an event also becomes readable when an older, unrelated
transaction ends, which notifies nobody), and behind a transaction pooler (Supavisor or
PgBouncer in transaction mode, port 6543) ``LISTEN`` does not work at all, so there it
only polls. Readable by ``email_reader`` and ``email_writer`` (SECURITY INVOKER: their own
SELECT and policies on ``delivery_events`` apply).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from email_delivery.engine import pooler_for
from email_delivery.errors import InvalidInput, translate_errors
from email_delivery.models import DeliveryStatus
from email_delivery.urls import location

__all__ = [
    "CHANNEL",
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "START",
    "Cursor",
    "FeedEvent",
    "FeedPage",
    "follow",
    "head",
    "page",
]

CHANNEL = "email_delivery_feed"
"""What the notify trigger ``delivery_events_notify`` signals on commit."""
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
_MAX_BIGINT = 2**63 - 1

_PAGE = text(
    "SELECT xact_id, id, delivery_id, status, attempt, error_code, error_message, payload, "
    "changed_columns, created_at "
    "FROM email.delivery_feed(CAST(:after_xact_id AS bigint), CAST(:after_event_id AS bigint), "
    "CAST(:limit AS integer))"
)
_HEAD = text("SELECT xact_id, id FROM email.delivery_feed_head()")
_CURSOR = re.compile(r"^(\d{1,19})-(\d{1,19})$")


@dataclass(frozen=True, slots=True, order=True)
class Cursor:
    """A place in the feed: after the event ``event_id`` of transaction ``xact_id``.

    Opaque to consumers: store ``str(cursor)`` and give it back (``Cursor.parse``)."""

    xact_id: int
    event_id: int

    def __str__(self) -> str:
        return f"{self.xact_id}-{self.event_id}"

    @classmethod
    def parse(cls, value: Cursor | str | None, field: str = "cursor") -> Cursor:
        """A cursor from its string (``None``: the feed's beginning)."""
        if value is None:
            return START
        if isinstance(value, Cursor):
            return value
        if not isinstance(value, str):
            raise InvalidInput(field, "must be a cursor string returned by the feed")
        match = _CURSOR.match(value.strip())
        if match is None:
            raise InvalidInput(field, f"not a feed cursor: {value!r}")
        xact_id, event_id = int(match[1]), int(match[2])
        if xact_id > _MAX_BIGINT or event_id > _MAX_BIGINT:
            raise InvalidInput(field, f"out of range: {value!r}")
        return cls(xact_id, event_id)


START = Cursor(0, 0)
"""The beginning of the feed: every event still in the audit log."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedEvent:
    """One audit event, as ``email.delivery_events`` holds it, with its place in the feed."""

    xact_id: int
    """The writing transaction (0 for events written before revision 0006)."""
    id: int
    delivery_id: str
    status: DeliveryStatus
    attempt: int
    error_code: str | None
    error_message: str | None
    payload: dict[str, Any] | None
    changed_columns: list[str] | None
    created_at: datetime

    @property
    def cursor(self) -> Cursor:
        """Store this after handling the event: a read after it starts at the next one."""
        return Cursor(self.xact_id, self.id)

    def as_dict(self) -> dict[str, Any]:
        """The event as JSON-ready values (``--json``), with its cursor."""
        return {
            "cursor": str(self.cursor),
            "id": self.id,
            "delivery_id": self.delivery_id,
            "status": self.status.value,
            "attempt": self.attempt,
            "error_code": self.error_code,
            "error_message": self.error_message,
            "payload": self.payload,
            "changed_columns": self.changed_columns,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedPage:
    events: tuple[FeedEvent, ...]
    cursor: Cursor
    """After the page's last event (the cursor given, for an empty page): the next page's."""
    limit: int

    @property
    def full(self) -> bool:
        """The page was cut at ``limit``: more events are readable now."""
        return len(self.events) >= self.limit


def _limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput("limit", f"must be an integer between 1 and {MAX_LIMIT}")
    return limit


def event_from_row(row: Any) -> FeedEvent:
    """A ``FeedEvent`` from a row with the feed's columns (the feed and webhook replay)."""
    return FeedEvent(
        xact_id=row.xact_id,
        id=row.id,
        delivery_id=row.delivery_id,
        status=DeliveryStatus(row.status),
        attempt=row.attempt,
        error_code=row.error_code,
        error_message=row.error_message,
        payload=row.payload,
        changed_columns=list(row.changed_columns) if row.changed_columns is not None else None,
        created_at=row.created_at,
    )


async def read_page(conn: AsyncConnection, *, after: Cursor, limit: int) -> FeedPage:
    """One page on ``conn``, inside the caller's transaction (the outbox uses it so that its
    messages and its cursor commit together)."""
    rows = (
        await conn.execute(
            _PAGE,
            {"after_xact_id": after.xact_id, "after_event_id": after.event_id, "limit": limit},
        )
    ).all()
    events = tuple(event_from_row(row) for row in rows)
    return FeedPage(events=events, cursor=events[-1].cursor if events else after, limit=limit)


async def page(
    engine: AsyncEngine,
    *,
    after: Cursor | str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> FeedPage:
    """The events after ``after`` (``None``: from the beginning), at most ``limit``."""
    cursor = Cursor.parse(after, "after")
    checked = _limit(limit)
    async with translate_errors(database=location(engine.url)), engine.connect() as conn:
        result = await read_page(conn, after=cursor, limit=checked)
        await conn.rollback()
    return result


async def head(engine: AsyncEngine) -> Cursor:
    """The cursor "now": a reader starting here gets only changes readable from now on."""
    async with translate_errors(database=location(engine.url)), engine.connect() as conn:
        row = (await conn.execute(_HEAD)).one()
        await conn.rollback()
    return Cursor(row.xact_id, row.id)


async def follow(
    engine: AsyncEngine,
    *,
    after: Cursor | str | None = None,
    limit: int = DEFAULT_LIMIT,
    poll_interval: float = 1.0,
    listen: bool | None = None,
) -> AsyncIterator[FeedEvent]:
    """Every event after ``after``, then each new one as it becomes readable, forever (stop
    by breaking out of the loop or cancelling the task).

    ``listen`` (default: unless the URL is a transaction pooler's, port 6543) keeps one
    connection that ``LISTEN``\\s for commits; reads also happen every ``poll_interval``
    seconds regardless. Resume after a restart from the last handled ``event.cursor``."""
    cursor = Cursor.parse(after, "after")
    checked = _limit(limit)
    if (
        isinstance(poll_interval, bool)
        or not isinstance(poll_interval, int | float)
        or not 0 < poll_interval <= 3600
    ):
        raise InvalidInput("poll_interval", "must be a number of seconds in (0, 3600]")
    if listen is None:
        listen = pooler_for(engine.url) != "transaction"
    wake = asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        if listen:
            await stack.enter_async_context(_listening(engine, wake))
        while True:
            wake.clear()  # before the read: a commit during it wakes the next wait
            current = await page(engine, after=cursor, limit=checked)
            for event in current.events:
                yield event
            cursor = current.cursor
            if current.full:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), poll_interval)


LISTENER_TTL_S = 60
"""A listener's registration lives this long; ``follow`` renews it every third of it."""


@contextlib.asynccontextmanager
async def _listening(engine: AsyncEngine, wake: asyncio.Event) -> AsyncIterator[None]:
    """One connection that sets ``wake`` on every notification of ``CHANNEL``, registered
    (``email.feed_listener_heartbeat``) so that writers notify while it listens."""

    def notified(*_: object) -> None:
        wake.set()

    async with translate_errors(database=location(engine.url)), engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        await driver.add_listener(CHANNEL, notified)
        ttl = timedelta(seconds=LISTENER_TTL_S)

        async def heartbeat() -> None:
            while True:
                await driver.fetchval("SELECT email.feed_listener_heartbeat($1)", ttl)
                wake.set()  # a read right after (re)registering: nothing slips in between
                await asyncio.sleep(LISTENER_TTL_S / 3)

        beating = asyncio.create_task(heartbeat())
        try:
            yield
        finally:
            beating.cancel()
            with contextlib.suppress(BaseException):
                await beating
            with contextlib.suppress(Exception):
                await driver.fetchval("SELECT email.feed_listener_stop()")
                await driver.remove_listener(CHANNEL, notified)
