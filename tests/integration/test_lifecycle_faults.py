"""Faults: a claimer killed mid-statement, a worker that dies holding a claim."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import pytest

from email_delivery import DatabaseUnavailable, DeliveryStatus, DeliveryTracker
from tests.support.cluster import WORKER_LOGIN, Cluster
from tests.support.db import events, expire_claim, skip_backoff

LEASE = timedelta(minutes=5)


async def test_a_claimer_killed_mid_statement_leaves_the_row_as_it_was(
    cluster: Cluster,
    database: str,
    worker_tracker: DeliveryTracker,
    owner_conn: asyncpg.Connection,
) -> None:
    await worker_tracker.enqueue("d1", workflow="invite", recipient="a@b.io")
    before = await owner_conn.fetchrow("SELECT * FROM email.deliveries WHERE delivery_id = 'd1'")
    # Hold the row lock so the claim is inside its UPDATE when it is killed.
    blocker = await asyncpg.connect(cluster.dsn(database))
    admin = await cluster.admin()
    try:
        lock = blocker.transaction()
        await lock.start()
        await blocker.execute("SELECT 1 FROM email.deliveries WHERE delivery_id = 'd1' FOR UPDATE")
        claim = asyncio.create_task(worker_tracker.claim("d1", lease=LEASE))
        pid = None
        for _ in range(500):
            pid = await admin.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND usename = $2 "
                "AND wait_event_type = 'Lock' AND query LIKE '%claim_delivery%'",
                database,
                WORKER_LOGIN,
            )
            if pid is not None:
                break
            await asyncio.sleep(0.01)
        assert pid is not None, "the claim never blocked on the row lock"
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        with pytest.raises(DatabaseUnavailable, match="lost the connection"):
            await claim
        await lock.rollback()
    finally:
        await blocker.close()
        await admin.close()
    assert (
        await owner_conn.fetchrow("SELECT * FROM email.deliveries WHERE delivery_id = 'd1'")
        == before
    )
    assert [e["status"] for e in await events(owner_conn, "d1")] == ["queued"]
    # The killed connection was thrown away, not handed to the next call.
    retry = await worker_tracker.claim("d1", lease=LEASE)
    assert retry is not None
    assert retry.attempt == 1


async def test_a_dead_workers_claim_is_taken_over_after_the_lease_and_never_before(
    worker_tracker: DeliveryTracker, owner_conn: asyncpg.Connection
) -> None:
    await worker_tracker.enqueue("d1", workflow="invite", recipient="a@b.io")
    dead = await worker_tracker.claim("d1", lease=LEASE)
    assert dead is not None
    for age in ("0 seconds", "4 minutes", "4 minutes 59 seconds"):
        await expire_claim(owner_conn, "d1", age)
        assert await worker_tracker.claim("d1", lease=LEASE) is None, age
        assert await worker_tracker.reap_stale(lease=LEASE) == [], age
    await expire_claim(owner_conn, "d1", "5 minutes 1 second")
    taker = await worker_tracker.claim("d1", lease=LEASE)
    assert taker is not None
    assert taker.attempt == 2
    # The dead worker's late failure report is superseded; the new attempt's success counts.
    late = await worker_tracker.mark_failed("d1", attempt=dead.attempt, error=("X", "late"))
    assert not late.changed
    sent = await worker_tracker.mark_sent("d1", attempt=taker.attempt)
    assert sent.status is DeliveryStatus.SENT
    assert [(e["status"], e["attempt"]) for e in await events(owner_conn, "d1")] == [
        ("queued", 0),
        ("in_progress", 1),
        ("in_progress", 2),
        ("sent", 2),
    ]


async def test_a_dead_workers_claim_is_reaped_after_the_lease(
    worker_tracker: DeliveryTracker, owner_conn: asyncpg.Connection
) -> None:
    await worker_tracker.enqueue("d1", workflow="invite", recipient="a@b.io")
    assert await worker_tracker.claim("d1", lease=LEASE) is not None
    await expire_claim(owner_conn, "d1", "4 minutes 59 seconds")
    assert await worker_tracker.reap_stale(lease=LEASE) == []
    await expire_claim(owner_conn, "d1", "5 minutes 1 second")
    reaped = await worker_tracker.reap_stale(lease=LEASE)
    assert [(d.delivery_id, d.status) for d in reaped] == [("d1", DeliveryStatus.RETRYING)]
    await skip_backoff(owner_conn, "d1")  # a reaped claim waits for its backoff, too
    again = await worker_tracker.claim("d1", lease=LEASE)
    assert again is not None
    assert again.attempt == 2
