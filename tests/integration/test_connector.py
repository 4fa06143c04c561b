"""The connection holder under the tracker: its limit, its queue, and the faults it survives.

Every test runs real statements as the worker login; a statement is held inside the server
by an advisory lock that a separate owner connection holds, so "busy" is the server's state,
not a sleep.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool, QueuePool
from sqlalchemy.util import greenlet_spawn

from email_delivery import DatabaseUnavailable, InvalidInput, make_engine
from email_delivery.connector import Connector
from tests.support.cluster import WORKER_LOGIN, Cluster

LOCK = 4242
BLOCKED = "SELECT pg_backend_pid() AS pid, pg_advisory_xact_lock(4242)::text"
PID = "SELECT pg_backend_pid() AS pid"
T = TypeVar("T")


async def soon(awaitable: Awaitable[T]) -> T:
    """A leaked connection makes later callers wait forever: fail instead of hanging."""
    return await asyncio.wait_for(awaitable, timeout=20)


@pytest.fixture
async def engine(cluster: Cluster, database: str) -> AsyncIterator[AsyncEngine]:
    """The worker login with room in the pool for more than any connector below uses."""
    engine = make_engine(cluster.url(database, WORKER_LOGIN), pool_size=8, max_overflow=0)
    yield engine
    await engine.dispose()


@pytest.fixture
async def lock(owner_conn: asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    """Holds advisory lock ``LOCK``: a ``BLOCKED`` statement waits until it is released."""
    await owner_conn.execute("SELECT pg_advisory_lock($1)", LOCK)
    yield owner_conn
    await owner_conn.execute("SELECT pg_advisory_unlock_all()")


def pool_checked_out(engine: AsyncEngine) -> int:
    pool = engine.sync_engine.pool
    assert isinstance(pool, QueuePool)
    return pool.checkedout()


async def blocked_backends(conn: asyncpg.Connection, count: int) -> list[int]:
    """Wait until ``count`` statements wait for the advisory lock; their pids."""
    pids: list[int] = []
    for _ in range(500):
        pids = [
            r["pid"]
            for r in await conn.fetch(
                # pg_locks, unlike pg_stat_activity, shows other roles' waits to a non-superuser.
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                "AND objid = $1 AND database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())",
                LOCK,
            )
        ]
        if len(pids) >= count:
            return pids
        await asyncio.sleep(0.01)
    raise AssertionError(f"{count} statements never blocked on the lock (saw {len(pids)})")


async def test_the_limit_defaults_to_the_pool_size_and_is_checked(
    cluster: Cluster, database: str, engine: AsyncEngine
) -> None:
    assert Connector(engine).limit == 8
    assert Connector(async_sessionmaker(engine)).limit == 8
    assert Connector(engine, connections=2).limit == 2
    unpooled = create_async_engine(cluster.url(database, WORKER_LOGIN), poolclass=NullPool)
    try:
        assert Connector(unpooled).limit == 0
    finally:
        await unpooled.dispose()
    with pytest.raises(InvalidInput) as caught:
        Connector(engine, connections=-1)
    assert caught.value.field == "connections"
    with pytest.raises(TypeError, match="bind=engine"):
        Connector(async_sessionmaker())
    with pytest.raises(TypeError, match="AsyncEngine"):
        Connector("postgresql://nowhere")  # type: ignore[arg-type]


async def test_many_tasks_share_at_most_limit_connections(
    engine: AsyncEngine, owner_conn: asyncpg.Connection, database: str
) -> None:
    async with Connector(engine, connections=2) as connector:
        rows = await asyncio.gather(
            *(connector.fetch("SELECT pg_backend_pid() AS pid, pg_sleep(0.005)") for _ in range(40))
        )
        # Every statement ran, on no more than two server sessions, and both were used.
        assert len({r[0]["pid"] for r in rows}) == 2
        assert connector.checked_out == pool_checked_out(engine) == 2
        backends = await owner_conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND usename = $2",
            database,
            WORKER_LOGIN,
        )
        assert backends == 2


async def test_waiters_are_served_first_come_first_served(
    engine: AsyncEngine, lock: asyncpg.Connection
) -> None:
    async with Connector(engine, connections=1) as connector:
        await connector.fetch(PID)  # kept idle: the first caller below takes it at once
        holder = asyncio.create_task(connector.fetch(BLOCKED))
        await blocked_backends(lock, 1)
        served: list[int] = []

        async def call(number: int) -> None:
            rows = await connector.fetch("SELECT $1::int AS n", number)
            served.append(rows[0]["n"])

        waiting = []
        for number in range(6):
            waiting.append(asyncio.create_task(call(number)))
            await asyncio.sleep(0)  # each is queued before the next arrives
        await asyncio.sleep(0.05)
        assert served == []  # nobody overtook the holder
        await lock.execute("SELECT pg_advisory_unlock($1)", LOCK)
        await soon(holder)
        await soon(asyncio.gather(*waiting))
        assert served == [0, 1, 2, 3, 4, 5]
        assert connector.checked_out == 1


async def test_cancelled_waiters_leak_nothing(
    engine: AsyncEngine, lock: asyncpg.Connection
) -> None:
    async with Connector(engine, connections=2) as connector:
        holders = [asyncio.create_task(connector.fetch(BLOCKED)) for _ in range(2)]
        await blocked_backends(lock, 2)
        waiting = [asyncio.create_task(connector.fetch(PID)) for _ in range(10)]
        await asyncio.sleep(0)
        for task in waiting[::2]:
            task.cancel()
        await lock.execute("SELECT pg_advisory_unlock($1)", LOCK)
        results = await soon(asyncio.gather(*holders, *waiting, return_exceptions=True))
        cancelled = [r for r in results if isinstance(r, asyncio.CancelledError)]
        assert len(cancelled) == 5
        assert all(isinstance(r, list) for r in results if r not in cancelled)
        # The two connections are still the connector's, idle, and serve a new burst.
        assert connector.checked_out == pool_checked_out(engine) == 2
        rows = await soon(asyncio.gather(*(connector.fetch(PID) for _ in range(20))))
        assert len({r[0]["pid"] for r in rows}) <= 2
    assert pool_checked_out(engine) == 0


async def test_a_waiter_cancelled_after_it_was_handed_a_connection_gives_it_back(
    engine: AsyncEngine,
) -> None:
    # The interleaving driven step by step: the holder hands its connection to the waiter,
    # and the waiter is cancelled before it gets to run.
    connector = Connector(engine, connections=1)
    try:
        fairy = await connector._acquire()
        assert fairy is not None
        waiting = asyncio.create_task(connector._acquire())
        await asyncio.sleep(0)  # queued behind the held connection
        connector._release(fairy)  # handed to the waiter ...
        waiting.cancel()  # ... which is cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert connector.checked_out == pool_checked_out(engine) == 1
        assert (await soon(connector.fetch("SELECT 1 AS one")))[0]["one"] == 1
    finally:
        await connector.aclose()
    assert pool_checked_out(engine) == 0


async def test_a_cancelled_waiter_passes_a_freed_slot_on(engine: AsyncEngine) -> None:
    # The interleaving of a real fault, driven step by step: the connector's only connection
    # breaks while a call waits for it, and that waiting call is cancelled before it runs.
    connector = Connector(engine, connections=1)
    try:
        fairy = await connector._acquire()
        assert fairy is not None
        waiting = asyncio.create_task(connector._acquire())
        await asyncio.sleep(0)  # queued behind the held connection
        connector._discard(fairy)  # broken: the waiter is woken to open its own connection
        waiting.cancel()  # ... and cancelled before it gets to run
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await greenlet_spawn(fairy.invalidate)
        # The slot was not lost or poisoned.
        assert (await soon(connector.fetch("SELECT 1 AS one")))[0]["one"] == 1
        assert connector.checked_out == 1
    finally:
        await connector.aclose()


async def test_a_kept_connection_the_server_closed_while_idle_is_replaced(
    cluster: Cluster, engine: AsyncEngine
) -> None:
    async with Connector(engine, connections=1) as connector:
        before = (await connector.fetch(PID))[0]["pid"]
        admin = await cluster.admin()
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", before)
            for _ in range(100):  # until the server has ended it
                if not await admin.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", before
                ):
                    break
                await asyncio.sleep(0.01)
        finally:
            await admin.close()
        await asyncio.sleep(0.05)  # the event loop sees the closed socket
        after = (await connector.fetch(PID))[0]["pid"]
        assert after != before
        assert connector.checked_out == pool_checked_out(engine) == 1


async def test_a_connection_killed_mid_statement_is_discarded_not_reused(
    cluster: Cluster, engine: AsyncEngine, lock: asyncpg.Connection
) -> None:
    async with Connector(engine, connections=1) as connector:
        killed = asyncio.create_task(connector.fetch(BLOCKED))
        (pid,) = await blocked_backends(lock, 1)
        admin = await cluster.admin()
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await admin.close()
        with pytest.raises(DatabaseUnavailable, match="lost the connection"):
            await killed
        assert (await connector.fetch(PID))[0]["pid"] != pid
        assert connector.checked_out == pool_checked_out(engine) == 1


async def test_a_connection_cancelled_mid_statement_is_discarded_not_reused(
    engine: AsyncEngine, lock: asyncpg.Connection
) -> None:
    async with Connector(engine, connections=1) as connector:
        cancelled = asyncio.create_task(connector.fetch(BLOCKED))
        (pid,) = await blocked_backends(lock, 1)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        # Its session may still be inside the statement: the next call gets another one.
        assert (await connector.fetch(PID))[0]["pid"] != pid
        assert connector.checked_out == pool_checked_out(engine) == 1


@pytest.mark.parametrize("connections", [3, 0])
async def test_aclose_returns_every_connection_to_the_pool(
    engine: AsyncEngine, connections: int
) -> None:
    connector = Connector(engine, connections=connections)
    rows: list[Any] = await asyncio.gather(
        *(connector.fetch("SELECT pg_sleep(0.005)") for _ in range(12))
    )
    assert len(rows) == 12
    assert connector.checked_out == connections
    await connector.aclose()
    # With connections=0 each statement's connection is closed in the background: aclose
    # waits for those too.
    assert connector.checked_out == pool_checked_out(engine) == 0
    # The connector stays usable, and follows the engine across dispose (a new pool).
    await engine.dispose()
    assert (await connector.fetch("SELECT 1 AS one"))[0]["one"] == 1
    await connector.aclose()
    assert pool_checked_out(engine) == 0
