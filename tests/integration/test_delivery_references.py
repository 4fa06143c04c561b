"""The deliveries' children (``models.DELIVERY_REFERENCES``: delivery_attempts,
delivery_outcomes, outcome_events) without foreign keys (revision 0015): a cascade fired one
query per deleted delivery and table, most of retention's cost. The guarantees stay both
ways: a child names an existing delivery (``email.check_delivery_reference``, which locks
the deliveries FOR KEY SHARE as the key's check did), and purging a delivery removes its
children with its events (``email.purge_delivery_events``, once per statement)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from email_delivery.models import DELIVERY_REFERENCES
from tests.support.cluster import Cluster
from tests.support.seed import superuser_dsn


async def _enqueue(conn: asyncpg.Connection, *delivery_ids: str) -> None:
    for delivery_id in delivery_ids:
        await conn.execute(
            "SELECT * FROM email.enqueue_delivery($1, 'invite', 'ada@example.com', '{}', NULL)",
            delivery_id,
        )


async def _children(conn: asyncpg.Connection, delivery_id: str) -> None:
    """One row of each child table for the delivery."""
    await conn.execute(
        "INSERT INTO email.delivery_attempts (delivery_id, attempt, result, workflow, provider) "
        "VALUES ($1, 1, 'sent', 'invite', 'ses')",
        delivery_id,
    )
    await conn.execute(
        "INSERT INTO email.delivery_outcomes (delivery_id, workflow, outcome, provider, "
        "outcome_at) VALUES ($1, 'invite', 'delivered', 'ses', now())",
        delivery_id,
    )
    await conn.execute(
        "INSERT INTO email.outcome_events (provider, event_id, kind, occurred_at, "
        "echoed_delivery_id, delivery_id, matched_at, recipient) "
        "VALUES ('ses', 'e-' || $1, 'delivered', now(), $1, $1, now(), 'ada@example.com')",
        delivery_id,
    )


async def _counts(conn: asyncpg.Connection, delivery_id: str) -> list[int]:
    return [
        await conn.fetchval(
            f"SELECT count(*) FROM email.{table} WHERE delivery_id = $1", delivery_id
        )
        for table in DELIVERY_REFERENCES
    ]


async def test_no_query_per_deleted_delivery(owner_conn: asyncpg.Connection) -> None:
    """Nothing fires once per deleted delivery: no foreign key refers to email.deliveries
    (its cascade is a row trigger) and no row trigger runs on DELETE."""
    assert (
        await owner_conn.fetchval(
            "SELECT count(*) FROM pg_constraint WHERE confrelid = 'email.deliveries'::regclass"
        )
        == 0
    )
    row_delete_triggers = await owner_conn.fetch(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = 'email.deliveries'::regclass "
        "AND tgtype & 1 = 1 AND tgtype & 8 = 8"
    )
    assert row_delete_triggers == []


async def test_a_child_names_an_existing_delivery(owner_conn: asyncpg.Connection) -> None:
    await _enqueue(owner_conn, "d-1")
    await _children(owner_conn, "d-1")
    for table_insert in (
        "INSERT INTO email.delivery_attempts (delivery_id, attempt, result, workflow) "
        "VALUES ('d-1', 2, 'sent', 'invite'), ('ghost', 1, 'sent', 'invite')",
        "INSERT INTO email.delivery_outcomes (delivery_id, workflow, outcome, provider, "
        "outcome_at) VALUES ('ghost', 'invite', 'delivered', 'ses', now())",
        "INSERT INTO email.outcome_events (provider, event_id, kind, occurred_at, "
        "echoed_delivery_id, delivery_id, matched_at, recipient) "
        "VALUES ('ses', 'e-ghost', 'delivered', now(), 'ghost', 'ghost', now(), 'a@b.c')",
        "UPDATE email.outcome_events SET delivery_id = 'ghost' WHERE delivery_id = 'd-1'",
        "UPDATE email.delivery_attempts SET delivery_id = 'ghost'",
        "UPDATE email.delivery_outcomes SET delivery_id = 'ghost'",
    ):
        with pytest.raises(asyncpg.ForeignKeyViolationError, match=r"email\.deliveries") as err:
            await owner_conn.execute(table_insert)
        assert "ghost" in (err.value.detail or "")
    assert await _counts(owner_conn, "d-1") == [1, 1, 1]
    # An unmatched outcome event names no delivery: allowed, as with the key.
    await owner_conn.execute(
        "INSERT INTO email.outcome_events (provider, event_id, kind, occurred_at, "
        "echoed_delivery_id, recipient) "
        "VALUES ('ses', 'e-unmatched', 'delivered', now(), 'elsewhere', 'a@b.c')"
    )


async def test_purging_a_delivery_removes_its_children(owner_conn: asyncpg.Connection) -> None:
    await _enqueue(owner_conn, "d-1", "d-2", "d-3")
    for delivery_id in ("d-1", "d-2", "d-3"):
        await _children(owner_conn, delivery_id)
    await owner_conn.execute("DELETE FROM email.deliveries WHERE delivery_id IN ('d-1', 'd-3')")
    assert await _counts(owner_conn, "d-1") == [0, 0, 0]
    assert await _counts(owner_conn, "d-3") == [0, 0, 0]
    assert await _counts(owner_conn, "d-2") == [1, 1, 1]


async def test_a_child_written_during_a_purge_is_never_orphaned(
    cluster: Cluster, database: str, owner_conn: asyncpg.Connection
) -> None:
    """Both orders of a concurrent child write and delivery delete: the writer's lock makes
    the delete wait and then take the new child; the deleter's lock makes the write wait
    and then fail. No child is ever left without its delivery."""
    await _enqueue(owner_conn, "d-1", "d-2")
    other = await asyncpg.connect(superuser_dsn(cluster, database))
    try:
        # 1. The child first: the delete waits for its transaction, then removes it too.
        writer = owner_conn.transaction()
        await writer.start()
        await _children(owner_conn, "d-1")
        delete = asyncio.create_task(
            other.execute("DELETE FROM email.deliveries WHERE delivery_id = 'd-1'")
        )
        await asyncio.sleep(0.3)
        assert not delete.done()
        await writer.commit()
        assert await delete == "DELETE 1"
        assert await _counts(owner_conn, "d-1") == [0, 0, 0]

        # 2. The delete first: the child's write waits for it, then fails.
        deleter = other.transaction()
        await deleter.start()
        await other.execute("DELETE FROM email.deliveries WHERE delivery_id = 'd-2'")
        write = asyncio.create_task(_children(owner_conn, "d-2"))
        await asyncio.sleep(0.3)
        assert not write.done()
        await deleter.commit()
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await write
        assert await _counts(owner_conn, "d-2") == [0, 0, 0]
    finally:
        await other.close()


async def test_deliveries_are_deleted_in_read_committed_only(
    cluster: Cluster, database: str, owner_conn: asyncpg.Connection
) -> None:
    """A REPEATABLE READ transaction's snapshot predates a child committed meanwhile: its
    purge would leave that child behind (the foreign key raised a serialization error), so
    the delete is refused, and nothing is removed."""
    await _enqueue(owner_conn, "d-1")
    other = await asyncpg.connect(superuser_dsn(cluster, database))
    try:
        for isolation in ("repeatable_read", "serializable"):
            transaction = owner_conn.transaction(isolation=isolation)
            await transaction.start()
            try:
                await owner_conn.execute("SELECT 1")  # the snapshot is taken here
                await _children(other, "d-1")  # committed after it
                with pytest.raises(asyncpg.FeatureNotSupportedError, match="READ COMMITTED"):
                    await owner_conn.execute(
                        "DELETE FROM email.deliveries WHERE delivery_id = 'd-1'"
                    )
            finally:
                await transaction.rollback()
            assert await _counts(owner_conn, "d-1") == [1, 1, 1]
            await other.execute("DELETE FROM email.deliveries WHERE delivery_id = 'd-1'")
            await _enqueue(owner_conn, "d-1")
    finally:
        await other.close()


async def test_truncate_cannot_orphan_the_children(owner_conn: asyncpg.Connection) -> None:
    """TRUNCATE fires no DELETE trigger: the foreign keys refused ``TRUNCATE
    email.deliveries`` while a child named a delivery, and so does
    ``email.check_truncated_deliveries`` (CASCADE no longer reaches the children)."""
    await _enqueue(owner_conn, "d-1")
    await _children(owner_conn, "d-1")
    for statement in ("TRUNCATE email.deliveries", "TRUNCATE email.deliveries CASCADE"):
        with pytest.raises(asyncpg.ForeignKeyViolationError, match="names its deliveries"):
            await owner_conn.execute(statement)
    assert await _counts(owner_conn, "d-1") == [1, 1, 1]
    # An unmatched provider event names no delivery: it may stay.
    await owner_conn.execute(
        "INSERT INTO email.outcome_events (provider, event_id, kind, occurred_at, "
        "provider_message_id, recipient) "
        "VALUES ('ses', 'unmatched', 'delivered', now(), 'pm-unknown', 'bob@example.com')"
    )
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="outcome_events"):
        await owner_conn.execute(
            "TRUNCATE email.deliveries, email.delivery_attempts, email.delivery_outcomes"
        )
    await owner_conn.execute("DELETE FROM email.outcome_events WHERE delivery_id IS NOT NULL")
    assert (
        await owner_conn.execute(
            "TRUNCATE email.deliveries, email.delivery_attempts, email.delivery_outcomes"
        )
        == "TRUNCATE TABLE"
    )
    assert await owner_conn.fetchval("SELECT count(*) FROM email.outcome_events") == 1
