"""Shared helpers for the schema tests: raw asyncpg connections, a module-wide clone, rows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from tests.cluster import OWNER, Cluster


@asynccontextmanager
async def connect(
    cluster: Cluster, db: str, user: str = OWNER
) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(cluster.dsn(db, user))
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def owner(cluster: Cluster, database: str) -> AsyncIterator[asyncpg.Connection]:
    """The table owner on a fresh clone: may write anything the constraints allow."""
    async with connect(cluster, database) as conn:
        yield conn


@pytest.fixture(scope="module")
async def module_database(cluster: Cluster, template_database: str) -> AsyncIterator[str]:
    """One clone for a module whose tests each roll back or use their own rows."""
    async with cluster.clone(template_database, "m") as name:
        yield name


@pytest.fixture
async def owner_tx(cluster: Cluster, module_database: str) -> AsyncIterator[asyncpg.Connection]:
    """The table owner inside a transaction that is rolled back: cheap isolation per test.

    A statement expected to fail must run in its own savepoint (``async with
    conn.transaction():``) so the test can go on; ``now()`` is constant throughout.
    """
    async with connect(cluster, module_database) as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            yield conn
        finally:
            await transaction.rollback()


async def insert_delivery(conn: asyncpg.Connection, delivery_id: str, **columns: Any) -> None:
    """Insert one delivery with valid defaults; ``columns`` override them (jsonb as text)."""
    values = {"workflow": "welcome", "recipient": "user@example.com", **columns}
    names = ", ".join(["delivery_id", *values])
    params = ", ".join(f"${i}" for i in range(1, len(values) + 2))
    await conn.execute(
        f"INSERT INTO email.deliveries ({names}) VALUES ({params})", delivery_id, *values.values()
    )


async def events(conn: asyncpg.Connection, delivery_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT status::text, attempt, error_code, error_message, payload "
        "FROM email.delivery_events WHERE delivery_id = $1 ORDER BY id",
        delivery_id,
    )
