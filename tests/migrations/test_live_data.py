"""Revisions that reshape a busy table, run over a database that holds data (the README's
migration path): 0006 turns delivery_events into a partitioned table, 0007 swaps indexes of
deliveries and adds the rollups. Up, down and up again, nothing is lost or changed."""

from __future__ import annotations

import asyncpg

from tests.support.cluster import Cluster


async def _events(conn: asyncpg.Connection) -> list[tuple[object, ...]]:
    rows = await conn.fetch(
        "SELECT id, delivery_id, status::text, attempt, error_code, created_at "
        "FROM email.delivery_events ORDER BY id"
    )
    return [tuple(r) for r in rows]


async def _deliveries(conn: asyncpg.Connection) -> list[tuple[object, ...]]:
    rows = await conn.fetch(
        "SELECT delivery_id, status::text, attempts, queued_at, sent_at, updated_at "
        "FROM email.deliveries ORDER BY 1"
    )
    return [tuple(r) for r in rows]


async def _indexes(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch(
        "SELECT indexname FROM pg_indexes WHERE schemaname = 'email' AND tablename = 'deliveries'"
    )
    return {r["indexname"] for r in rows}


async def _work(conn: asyncpg.Connection, prefix: str, count: int) -> None:
    """Deliveries through the lifecycle functions, as the worker would write them."""
    for i in range(count):
        delivery_id = f"{prefix}{i}"
        await conn.execute(
            "SELECT FROM email.enqueue_delivery($1, 'invite', 'a@b.io', '{}', NULL)", delivery_id
        )
        await conn.execute("SELECT FROM email.claim_delivery($1, '5 minutes')", delivery_id)
        if i % 3:
            await conn.execute("SELECT FROM email.mark_delivery_sent($1, 1, NULL)", delivery_id)
        else:
            await conn.execute(
                "SELECT FROM email.mark_delivery_failed($1, 1, 'SMTP_421', 'busy', true, 5, NULL)",
                delivery_id,
            )


async def test_the_audit_log_is_partitioned_and_unpartitioned_with_its_events(
    cluster: Cluster, empty_database: str
) -> None:
    cluster.migrate(empty_database, "0005")
    conn = await asyncpg.connect(cluster.dsn(empty_database))
    try:
        await _work(conn, "old", 30)
        events, deliveries = await _events(conn), await _deliveries(conn)
        assert len(events) == 30 * 3

        cluster.migrate(empty_database, "0006")
        assert await _events(conn) == events
        partitions = await conn.fetch("SELECT name FROM email.event_partitions()")
        assert {"delivery_events_legacy", "delivery_events_default"} <= {
            r["name"] for r in partitions
        }
        # New events continue after the old ids (in the legacy partition until its range, the
        # month of the conversion, ends; monthly partitions follow it); a purge takes a
        # delivery's events from every partition they are in.
        await _work(conn, "new", 5)
        assert await conn.fetchval(
            "SELECT min(id) FROM email.delivery_events WHERE delivery_id LIKE 'new%'"
        ) > max(e[0] for e in events)
        bounds = {r["name"]: r for r in await conn.fetch("SELECT * FROM email.event_partitions()")}
        monthly = [name for name in bounds if name.startswith("delivery_events_p")]
        assert (
            monthly
            and min(bounds[name]["lower_bound"] for name in monthly)
            == (bounds["delivery_events_legacy"]["upper_bound"])
        )
        await conn.execute("DELETE FROM email.deliveries WHERE delivery_id IN ('old1', 'new1')")
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM email.delivery_events WHERE delivery_id IN ('old1', 'new1')"
            )
            == 0
        )

        cluster.migrate(empty_database, "0005", downgrade=True)
        after = await _events(conn)
        assert [e for e in after if not str(e[1]).startswith("new")] == [
            e for e in events if e[1] != "old1"
        ]
        assert len([e for e in after if str(e[1]).startswith("new")]) == 4 * 3
        # The foreign key is back, validated: every event's delivery exists.
        assert await conn.fetchval(
            "SELECT convalidated FROM pg_constraint "
            "WHERE conname = 'fk_delivery_events_delivery_id_deliveries'"
        )
        cluster.migrate(empty_database, "head")
        assert len(await _events(conn)) == len(after)
        assert [d for d in await _deliveries(conn) if d[0].startswith("old")] == [
            d for d in deliveries if d[0] != "old1"
        ]
    finally:
        await conn.close()


async def test_the_index_diet_and_rollups_come_and_go_with_the_data(
    cluster: Cluster, empty_database: str
) -> None:
    cluster.migrate(empty_database, "0006")
    conn = await asyncpg.connect(cluster.dsn(empty_database))
    try:
        await _work(conn, "d", 24)
        deliveries, events = await _deliveries(conn), await _events(conn)
        stats = await conn.fetch("SELECT * FROM email.delivery_stats(now() - interval '1 day')")
        assert {"ix_deliveries_queued_at", "ix_deliveries_status_queued_at"} <= await _indexes(conn)

        cluster.migrate(empty_database, "0007")
        indexes = await _indexes(conn)
        assert "ix_deliveries_finished" in indexes
        assert not {"ix_deliveries_queued_at", "ix_deliveries_status_queued_at"} & indexes
        assert await conn.fetchval(
            "SELECT bool_and(indisvalid) FROM pg_index "
            "WHERE indrelid = 'email.deliveries'::regclass"
        )
        await conn.execute("SELECT * FROM email.maintain()")
        again = await conn.fetch("SELECT * FROM email.delivery_stats(now() - interval '1 day')")
        assert [(r["workflow"], r["total"], r["sent"], r["mean_attempts"]) for r in again] == [
            (r["workflow"], r["total"], r["sent"], r["mean_attempts"]) for r in stats
        ]

        cluster.migrate(empty_database, "0006", downgrade=True)
        indexes = await _indexes(conn)
        assert {"ix_deliveries_queued_at", "ix_deliveries_status_queued_at"} <= indexes
        assert "ix_deliveries_finished" not in indexes
        assert await _deliveries(conn) == deliveries and await _events(conn) == events
        cluster.migrate(empty_database, "head")
    finally:
        await conn.close()
