"""``Connector``: a few asyncpg connections kept out of an engine's pool, one statement each.

A pool checkout and check-in (SQLAlchemy's pool, its reset on return) cost more CPU than a
lifecycle call itself, so the connector keeps up to ``connections`` of the pool's
connections checked out between calls and runs each statement straight on the asyncpg
connection: one round trip, no SQLAlchemy compilation, no transaction block.

- At most ``limit`` connections are out at once; further callers wait and are served first
  come, first served: a connection given back goes straight to the longest waiter.
- A statement that fails with a connection-level error, or is cancelled mid-statement,
  leaves the connection in an unknown state: it is invalidated, never reused, and its slot
  passes to one waiter, which opens a connection of its own.
- A kept connection the server closed while idle (restart, pooler idle timeout) is replaced
  at the next checkout.
- ``connections=0`` keeps nothing: each statement checks a connection out and back in.
- Errors arrive translated by ``errors.translate_errors``: ``PermissionDenied``,
  ``IllegalTransition``, ``DatabaseUnavailable`` … instead of asyncpg's exceptions, so
  the tracker, and whatever else runs statements through a connector, speaks only those.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, TypeAlias

import asyncpg  # type: ignore[import-untyped]  # no stubs; Record is Any here
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.pool import PoolProxiedConnection, QueuePool
from sqlalchemy.util import greenlet_spawn

from email_delivery.errors import InvalidInput, translate_errors
from email_delivery.urls import location

__all__ = ["Connector", "Record"]

Record: TypeAlias = asyncpg.Record
"""A row as asyncpg returns it: indexable by position and by column name (``Any`` to mypy:
asyncpg ships no type stubs)."""

# Errors after which the connection's state is unknown: it must not be reused.
_BROKEN = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    OSError,
    asyncio.CancelledError,
    asyncio.TimeoutError,
)


def _engine_of(bind: AsyncEngine | async_sessionmaker[AsyncSession]) -> Engine:
    """The sync ``Engine`` behind an ``AsyncEngine`` or a bound ``async_sessionmaker``."""
    if isinstance(bind, AsyncEngine):
        return bind.sync_engine
    if isinstance(bind, async_sessionmaker):
        engine = bind.kw.get("bind")
        if isinstance(engine, AsyncEngine):
            return engine.sync_engine
        raise TypeError("the async_sessionmaker must be bound to an AsyncEngine (bind=engine)")
    raise TypeError(f"expected an AsyncEngine or an async_sessionmaker, not {type(bind)!r}")


class Connector:
    """Runs one statement at a time on one of a few connections of an engine's pool."""

    def __init__(
        self,
        bind: AsyncEngine | async_sessionmaker[AsyncSession],
        *,
        connections: int | None = None,
    ) -> None:
        """``connections``: how many of the pool's connections to use at most and keep
        between statements (default: the pool's ``pool_size``; 0 checks one out per
        statement). Other code sharing the engine gets only what the connector leaves."""
        # The engine, not its pool: engine.dispose() replaces the pool.
        self._engine = _engine_of(bind)
        if connections is None:
            pool = self._engine.pool
            connections = pool.size() if isinstance(pool, QueuePool) else 0
        if isinstance(connections, bool) or not isinstance(connections, int) or connections < 0:
            raise InvalidInput("connections", "must be an integer >= 0")
        self._limit = connections
        self._open = 0
        self._idle: list[PoolProxiedConnection] = []
        # A waiter gets a connection, or None: a free slot to open a connection in.
        self._waiters: collections.deque[asyncio.Future[PoolProxiedConnection | None]] = (
            collections.deque()
        )
        self._closing: set[asyncio.Task[None]] = set()
        # One instance for every statement: it keeps no state between uses.
        self._translate = translate_errors(database=location(self._engine.url))

    @property
    def limit(self) -> int:
        """The most connections out at once; 0: no limit of its own (the pool's applies),
        a connection per statement, none kept."""
        return self._limit

    @property
    def checked_out(self) -> int:
        """Connections the connector has out of the pool now, busy or kept idle."""
        return self._open

    async def __aenter__(self) -> Connector:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def fetch(self, sql: str, *args: object) -> list[Record]:
        """Run one statement (its own transaction) and return its rows.

        Database errors users meet arrive as ``email_delivery.errors`` exceptions; the
        driver's exception is their ``__cause__``."""
        with self._translate:
            fairy = await self._acquire()
            while fairy is None:
                fairy = await self._acquire()
            driver: Any = fairy.driver_connection
            try:
                rows: list[Record] = await driver.fetch(sql, *args)
            except BaseException as exc:
                if isinstance(exc, _BROKEN) or driver.is_closed():
                    # Killed, or cancelled mid-statement: its state is unknown, never reuse it.
                    self._discard(fairy)
                    await greenlet_spawn(fairy.invalidate)
                    await greenlet_spawn(fairy.close)
                else:
                    self._release(fairy)
                raise
            self._release(fairy)
            return rows

    async def aclose(self) -> None:
        """Return the idle connections to the engine's pool (the connector stays usable)."""
        idle, self._idle = self._idle, []
        self._open -= len(idle)
        for fairy in idle:
            await greenlet_spawn(fairy.close)
        # Closes started in the background must finish before the caller's loop ends.
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def _acquire(self) -> PoolProxiedConnection | None:
        """A connection, or None when a waiter was handed a free slot (call again)."""
        while self._idle:
            fairy = self._idle.pop()
            driver: Any = fairy.driver_connection
            if not driver.is_closed():
                return fairy
            # Closed while kept (server restart, pooler idle timeout): replace it.
            self._open -= 1
            await greenlet_spawn(fairy.invalidate)
            await greenlet_spawn(fairy.close)
        if self._limit == 0 or self._open < self._limit:
            self._open += 1
            try:
                connection: PoolProxiedConnection = await greenlet_spawn(self._engine.pool.connect)
            except BaseException:
                self._open -= 1
                raise
            return connection
        waiter: asyncio.Future[PoolProxiedConnection | None]
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                handed = waiter.result()
                if handed is None:
                    self._wake_one()  # a free slot, not a connection: pass it on
                else:
                    self._release(handed)
            raise

    def _release(self, fairy: PoolProxiedConnection) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(fairy)
                return
        if self._limit:
            self._idle.append(fairy)
        else:
            self._open -= 1
            self._spawn_close(fairy)

    def _discard(self, fairy: PoolProxiedConnection) -> None:
        self._open -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        """A slot is free: wake one waiter (with None) to open a connection of its own."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _spawn_close(self, fairy: PoolProxiedConnection) -> None:
        task = asyncio.get_running_loop().create_task(greenlet_spawn(fairy.close))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
