"""The one set of helpers the tests share to look at and arrange the database directly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from tests.support.cluster import OWNER, Cluster


@asynccontextmanager
async def connect(
    cluster: Cluster, db: str, user: str = OWNER
) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(cluster.dsn(db, user))
    try:
        yield conn
    finally:
        await conn.close()


async def insert_delivery(conn: asyncpg.Connection, delivery_id: str, **columns: Any) -> None:
    """Insert one delivery with valid defaults; ``columns`` override them (jsonb as text)."""
    values = {"workflow": "welcome", "recipient": "user@example.com", **columns}
    names = ", ".join(["delivery_id", *values])
    params = ", ".join(f"${i}" for i in range(1, len(values) + 2))
    await conn.execute(
        f"INSERT INTO email.deliveries ({names}) VALUES ({params})", delivery_id, *values.values()
    )


async def events(conn: asyncpg.Connection, delivery_id: str) -> list[asyncpg.Record]:
    """The delivery's events, oldest first: status, attempt, error code and message, payload
    (as JSON text). Left out: the events of ``expire_claim`` and ``skip_backoff``, whose
    owner's edits stand in for time passing (and are audited like any other edit)."""
    return await conn.fetch(
        "SELECT status::text, attempt, error_code, error_message, payload::text "
        "FROM email.delivery_events WHERE delivery_id = $1 "
        "AND changed_columns IS DISTINCT FROM ARRAY['last_attempted_at', 'lease_expires_at'] "
        "AND changed_columns IS DISTINCT FROM ARRAY['next_attempt_at'] ORDER BY id",
        delivery_id,
    )


async def expire_claim(conn: asyncpg.Connection, delivery_id: str, age: str) -> None:
    """Move the claim into the past by ``age``, its stored expiry with it (the database clock
    decides leases); ``conn`` is the owner's, the one login that may edit a row by hand."""
    await conn.execute(
        "UPDATE email.deliveries SET last_attempted_at = now() - $2::text::interval, "
        "lease_expires_at = now() - $2::text::interval + (lease_expires_at - last_attempted_at) "
        "WHERE delivery_id = $1",
        delivery_id,
        age,
    )


async def skip_backoff(conn: asyncpg.Connection, delivery_id: str) -> None:
    """Let a ``retrying`` delivery be claimed now, as if its backoff had passed (the owner's
    edit; the backoff itself is tested in test_policies.py)."""
    await conn.execute(
        "UPDATE email.deliveries SET next_attempt_at = now() WHERE delivery_id = $1 "
        "AND status = 'retrying'",
        delivery_id,
    )


HORIZON_WAIT_S = 60


async def wait_for_horizon(conn: asyncpg.Connection) -> None:
    """Until every transaction begun so far has ended, cluster-wide (for up to
    ``HORIZON_WAIT_S``): a rollup refresh only takes in what lies below its snapshot's xmin,
    which another session's open transaction (on a shared server) holds back."""
    last = await conn.fetchval("SELECT pg_current_xact_id()::text::bigint")
    async with asyncio.timeout(HORIZON_WAIT_S):
        while True:
            xmin = await conn.fetchval(
                "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
            )
            if xmin > last:
                return
            await asyncio.sleep(0.05)
