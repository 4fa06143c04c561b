"""Group commit (``DeliveryTracker(group_commit=True)``): concurrent calls share statements
and commits, and still each get their own committed result or their own error.

The rules themselves are checked in both modes by test_lifecycle_api.py and
test_lifecycle_model.py; these are about the batching.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from email_delivery import DeliveryStatus, DeliveryTracker, InvalidInput
from email_delivery.group_commit import GroupCommit
from tests.support.cluster import WORKER_LOGIN, Cluster

WF = "verification-code"


@pytest.fixture
async def grouped(worker_engine: AsyncEngine) -> AsyncIterator[DeliveryTracker]:
    async with DeliveryTracker(worker_engine, group_commit=GroupCommit(max_inflight=1)) as tracker:
        yield tracker


async def _transactions(conn: asyncpg.Connection, status: str) -> int:
    """How many transactions wrote the events of ``status``."""
    count: int = await conn.fetchval(
        "SELECT count(DISTINCT xact_id) FROM email.delivery_events WHERE status = $1", status
    )
    return count


async def test_concurrent_calls_share_statements_and_commits(
    grouped: DeliveryTracker, owner_conn: asyncpg.Connection
) -> None:
    ids = [f"g{i}" for i in range(40)]
    await asyncio.gather(*(grouped.enqueue(i, workflow=WF, recipient="a@b.io") for i in ids))
    claims = await asyncio.gather(*(grouped.claim(i) for i in ids))
    assert all(c is not None and c.attempt == 1 for c in claims)
    sent = await asyncio.gather(*(grouped.mark_sent(i, attempt=1) for i in ids))
    assert all(r.changed and r.status is DeliveryStatus.SENT for r in sent)
    # 40 calls of each kind, far fewer transactions (the first call of a kind goes alone,
    # the rest queue behind it): and every delivery has its full audit trail.
    for status in ("queued", "in_progress", "sent"):
        assert await _transactions(owner_conn, status) < 10, status
    assert await owner_conn.fetchval("SELECT count(*) FROM email.delivery_events") == 120


async def test_duplicates_in_one_batch_answer_as_serial_calls(
    grouped: DeliveryTracker, owner_conn: asyncpg.Connection
) -> None:
    await grouped.enqueue("d1", workflow=WF, recipient="a@b.io")
    first, second, third = await asyncio.gather(
        grouped.claim("d1"), grouped.claim("d1"), grouped.claim("d1")
    )
    winners = [c for c in (first, second, third) if c is not None]
    assert len(winners) == 1 and winners[0].attempt == 1
    results = await asyncio.gather(
        grouped.mark_failed("d1", attempt=7, error=("SMTP_421", "stale")),
        grouped.mark_failed("d1", attempt=1, error=("SMTP_421", "live")),
    )
    assert [r.changed for r in results] == [False, True]
    assert all(r.status is DeliveryStatus.RETRYING for r in results)
    row = await owner_conn.fetchrow(
        "SELECT attempts, last_error_message FROM email.deliveries WHERE delivery_id = 'd1'"
    )
    assert tuple(row) == (1, "live")


async def test_a_call_the_database_rejects_fails_alone(
    grouped: DeliveryTracker, worker_engine: AsyncEngine, owner_conn: asyncpg.Connection
) -> None:
    # A rule only the database knows (a CHECK the owner added): the batch statement fails,
    # each call runs again on its own, and only the poisoned one fails.
    await owner_conn.execute(
        "ALTER TABLE email.deliveries ADD CONSTRAINT no_poison "
        "CHECK (workflow <> 'poison') NOT VALID"
    )
    results = await asyncio.gather(
        *(grouped.enqueue(f"ok{i}", workflow=WF, recipient="a@b.io") for i in range(5)),
        grouped.enqueue("bad", workflow="poison", recipient="a@b.io"),
        return_exceptions=True,
    )
    *good, bad = results
    assert all(not isinstance(r, BaseException) and r.created for r in good)
    # Exactly the error the same call meets per call (a rule the package does not know is
    # not translated: it is the database's own).
    async with DeliveryTracker(worker_engine) as per_call:
        with pytest.raises(Exception) as alone:
            await per_call.enqueue("bad", workflow="poison", recipient="a@b.io")
    assert type(bad) is type(alone.value)
    assert str(bad).splitlines()[0] == str(alone.value).splitlines()[0]
    assert "no_poison" in str(bad)
    stored = await owner_conn.fetch("SELECT delivery_id FROM email.deliveries ORDER BY 1")
    assert [r["delivery_id"] for r in stored] == [f"ok{i}" for i in range(5)]


async def test_nothing_is_acknowledged_before_it_is_committed(
    grouped: DeliveryTracker, cluster: Cluster, database: str, owner_conn: asyncpg.Connection
) -> None:
    for i in range(3):
        await grouped.enqueue(f"d{i}", workflow=WF, recipient="a@b.io")
        assert await grouped.claim(f"d{i}") is not None
    blocker = await asyncpg.connect(cluster.dsn(database))
    try:
        lock = blocker.transaction()
        await lock.start()
        await blocker.execute("SELECT FROM email.deliveries WHERE delivery_id = 'd1' FOR UPDATE")
        calls = [asyncio.ensure_future(grouped.mark_sent(f"d{i}", attempt=1)) for i in range(3)]
        done, _ = await asyncio.wait(calls, timeout=0.5)
        # The batch waits for d1's lock: nobody has an answer, nothing is committed.
        assert not done
        assert (
            await owner_conn.fetchval("SELECT count(*) FROM email.deliveries WHERE status = 'sent'")
            == 0
        )
        await lock.rollback()
        results = await asyncio.gather(*calls)
    finally:
        await blocker.close()
    assert all(r.changed for r in results)
    assert (
        await owner_conn.fetchval("SELECT count(*) FROM email.deliveries WHERE status = 'sent'")
        == 3
    )


async def test_a_cancelled_caller_does_not_disturb_the_others(
    grouped: DeliveryTracker, owner_conn: asyncpg.Connection
) -> None:
    calls = [
        asyncio.ensure_future(grouped.enqueue(f"d{i}", workflow=WF, recipient="a@b.io"))
        for i in range(6)
    ]
    calls[2].cancel()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(results[2], asyncio.CancelledError)
    assert all(
        not isinstance(r, BaseException) and r.created for i, r in enumerate(results) if i != 2
    )


async def test_group_commit_settings_are_checked(worker_engine: AsyncEngine) -> None:
    with pytest.raises(InvalidInput) as caught:
        DeliveryTracker(worker_engine, group_commit="yes")  # type: ignore[arg-type]
    assert caught.value.field == "group_commit"


async def test_overlapping_batches_in_opposite_orders_never_deadlock(
    cluster: Cluster, database: str, owner_conn: asyncpg.Connection
) -> None:
    ids = [f"d{i:02}" for i in range(20)]
    writer = await asyncpg.connect(cluster.dsn(database, WORKER_LOGIN))
    try:
        await writer.fetch(
            "SELECT * FROM email.enqueue_deliveries($1::text[], $2::text[], $3::text[], "
            "$4::jsonb[], $5::timestamptz[])",
            ids, [WF] * 20, ["a@b.io"] * 20, [None] * 20, [None] * 20,
        )  # fmt: skip
    finally:
        await writer.close()

    async def claimer(order: list[str]) -> None:
        conn = await asyncpg.connect(cluster.dsn(database, WORKER_LOGIN))
        try:
            for _ in range(15):
                await conn.fetch("SELECT * FROM email.claim_deliveries($1::text[], '1 us')", order)
        finally:
            await conn.close()

    # Every batch takes its row locks in delivery_id order, whatever the input order.
    await asyncio.wait_for(
        asyncio.gather(claimer(ids), claimer(ids[::-1]), claimer(ids[5:] + ids[:5])), timeout=60
    )
    # (A claimer that began before another's commit may find a claim still live: some
    # statements claim fewer rows. None failed.)
    attempts = await owner_conn.fetchval("SELECT sum(attempts) FROM email.deliveries")
    assert 20 <= attempts <= 20 * 45
