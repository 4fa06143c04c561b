"""Retention honours both windows and never deletes a non-terminal row; the dashboard views
are readable by email_reader only, through RLS (security_invoker)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from email_delivery import catalog, retention, rules
from email_delivery.errors import InvalidInput, PermissionDenied
from tests.support.cluster import DASHBOARD_LOGIN, NOBODY_LOGIN, WORKER_LOGIN, Cluster
from tests.support.seed import ADA, BOB, D, Row, seed

# Each status at 10 d, 100 d and 400 d; sent keeps 90 d, failed/dead_letter 365 d.
AGES = {"young": 10 * D, "old": 100 * D, "ancient": 400 * D}
STATUSES = ("queued", "in_progress", "retrying", "sent", "failed", "dead_letter")


def _rows() -> tuple[Row, ...]:
    rows = []
    for status in STATUSES:
        for label, age in AGES.items():
            rows.append(
                Row(
                    f"{status}-{label}",
                    "invite",
                    ADA,
                    status,
                    1 if status != "queued" else 0,
                    age,
                    age,
                    sent_after=timedelta(seconds=3) if status == "sent" else None,
                    error_code=None if status in ("sent", "queued") else "SMTP_421",
                    error_message=None if status in ("sent", "queued") else "try later",
                    attempted_ago=None if status == "queued" else age - timedelta(seconds=1),
                    metadata={"link_sha256": "ab12", rules.DEAD_LETTER_REFERENCE_KEY: "m-1"},
                )
            )
    # Queued long ago, but requeued and sent yesterday: it finished recently, so it stays.
    rows.append(
        Row(
            "sent-late",
            "invite",
            BOB,
            "sent",
            3,
            200 * D,
            D,
            sent_after=199 * D,
            attempted_ago=D,
        )
    )
    return tuple(rows)


@pytest.fixture
async def retained(cluster: Cluster, database: str) -> AsyncIterator[AsyncEngine]:
    await seed(cluster, database, _rows())
    engine = create_async_engine(cluster.url(database), poolclass=NullPool)
    yield engine
    await engine.dispose()


async def _ids(cluster: Cluster, database: str) -> set[str]:
    conn = await asyncpg.connect(cluster.dsn(database))
    try:
        return {r[0] for r in await conn.fetch("SELECT delivery_id FROM email.deliveries")}
    finally:
        await conn.close()


async def test_prune_honours_both_windows_and_spares_non_terminal_rows(
    cluster: Cluster, database: str, retained: AsyncEngine
) -> None:
    before = await _ids(cluster, database)
    dry = await retention.prune(
        retained, older_than=90 * D, keep_failed_for=365 * D, batch_size=2, dry_run=True
    )
    assert await _ids(cluster, database) == before
    gone = {"sent-old", "sent-ancient", "failed-ancient", "dead_letter-ancient"}
    assert dry.deleted_deliveries == len(gone)

    seen: list[int] = []
    report = await retention.prune(
        retained,
        older_than=90 * D,
        keep_failed_for=365 * D,
        batch_size=2,
        progress=lambda r: seen.append(r.deleted_deliveries),
    )
    assert await _ids(cluster, database) == before - gone
    assert report.deleted_deliveries == 4
    assert report.deleted_events == 4  # one seeded event each
    assert report.by_status == {"sent": 2, "failed": 1, "dead_letter": 1, "suppressed": 0}
    assert report.batches >= 3 and seen and seen[-1] == 4
    conn = await asyncpg.connect(cluster.dsn(database))
    try:
        orphans = await conn.fetchval(
            "SELECT count(*) FROM email.delivery_events e WHERE NOT EXISTS "
            "(SELECT FROM email.deliveries d WHERE d.delivery_id = e.delivery_id)"
        )
        assert orphans == 0
    finally:
        await conn.close()
    again = await retention.prune(retained, older_than=90 * D, keep_failed_for=365 * D)
    assert again.deleted_deliveries == 0


async def test_prune_skips_a_row_locked_by_a_worker_and_spares_it_once_requeued(
    cluster: Cluster, database: str, retained: AsyncEngine
) -> None:
    worker = await asyncpg.connect(cluster.dsn(database))
    try:
        transaction = worker.transaction()
        await transaction.start()
        await worker.execute(
            "SELECT 1 FROM email.deliveries WHERE delivery_id = 'failed-ancient' FOR UPDATE"
        )
        report = await asyncio.wait_for(
            retention.prune(retained, older_than=90 * D, keep_failed_for=365 * D), timeout=30
        )
        assert "failed-ancient" in await _ids(cluster, database)
        assert report.by_status["failed"] == 0
        # The operator requeues it while holding the lock: it is live work again.
        await worker.execute(
            "UPDATE email.deliveries SET status = 'queued' WHERE delivery_id = 'failed-ancient'"
        )
        await transaction.commit()
    finally:
        await worker.close()
    await retention.prune(retained, older_than=90 * D, keep_failed_for=365 * D)
    assert "failed-ancient" in await _ids(cluster, database)


async def test_scrub_blanks_details_but_keeps_status_and_timestamps(
    cluster: Cluster, database: str, retained: AsyncEngine
) -> None:
    conn = await asyncpg.connect(cluster.dsn(database))
    try:
        before = {
            r["delivery_id"]: r
            for r in await conn.fetch(
                "SELECT delivery_id, status, attempts, last_error_code, queued_at, sent_at "
                "FROM email.deliveries"
            )
        }
        report = await retention.prune(
            retained, older_than=365 * D, keep_failed_for=3650 * D, scrub_after=30 * D
        )
        after = {
            r["delivery_id"]: r
            for r in await conn.fetch(
                "SELECT delivery_id, status, attempts, last_error_code, queued_at, sent_at, "
                "metadata, last_error_message FROM email.deliveries"
            )
        }
        scrubbed = {
            i
            for i, r in after.items()
            if r["metadata"] == f'{{"{rules.DEAD_LETTER_REFERENCE_KEY}": "m-1"}}'
        }
        terminal_old = {
            f"{s}-{a}" for s in ("sent", "failed", "dead_letter") for a in ("old", "ancient")
        } - {"sent-ancient"}  # deleted: older than 365 d
        assert scrubbed == terminal_old
        assert report.scrubbed_deliveries == len(terminal_old)
        for delivery_id, row in after.items():
            old = before[delivery_id]
            assert tuple(row)[:6] == tuple(old), delivery_id
            if delivery_id in terminal_old:
                assert row["last_error_message"] is None
            elif delivery_id.endswith("young") or delivery_id.split("-")[0] in (
                "queued",
                "in_progress",
                "retrying",
            ):
                assert "link_sha256" in row["metadata"], delivery_id
        events = await conn.fetch(
            "SELECT delivery_id, error_message, payload FROM email.delivery_events "
            "WHERE delivery_id = ANY($1::text[])",
            sorted(terminal_old),
        )
        assert events and all(e["error_message"] is None for e in events)
        assert (
            await conn.fetchval(
                "SELECT error_message FROM email.delivery_events WHERE delivery_id = 'failed-young'"
            )
        ) == "try later"
    finally:
        await conn.close()


async def test_bad_windows_are_rejected_before_any_write(retained: AsyncEngine) -> None:
    with pytest.raises(InvalidInput) as info:
        await retention.prune(retained, older_than=90 * D, keep_failed_for=30 * D)
    assert info.value.field == "keep_failed_for"
    with pytest.raises(InvalidInput) as info:
        await retention.prune(retained, older_than=timedelta(0), keep_failed_for=D)
    assert info.value.field == "older_than"
    with pytest.raises(InvalidInput) as info:
        await retention.prune(retained, older_than=D, keep_failed_for=D, batch_size=0)
    assert info.value.field == "batch_size"


async def test_pruning_is_refused_to_everyone_but_the_owner(
    cluster: Cluster, database: str, retained: AsyncEngine
) -> None:
    for login in (WORKER_LOGIN, DASHBOARD_LOGIN):
        engine = create_async_engine(cluster.url(database, login), poolclass=NullPool)
        try:
            with pytest.raises(PermissionDenied, match="permission denied"):
                await retention.prune(engine, older_than=90 * D, keep_failed_for=365 * D)
        finally:
            await engine.dispose()
    assert "sent-old" in await _ids(cluster, database)


VIEWS = [view.name for view in catalog.head().of_kind("view")]


@pytest.fixture
async def dashboard_data(cluster: Cluster, database: str) -> str:
    await seed(cluster, database)
    # Provider facts and an outcome still waiting for its message id (revision 0010), so
    # the provider views have rows too.
    worker = await asyncpg.connect(cluster.dsn(database, WORKER_LOGIN))
    try:
        await worker.execute(
            "SELECT email.enqueue_delivery('d-provider', 'welcome', 'p@example.com', '{}', NULL)"
        )
        await worker.execute("SELECT email.claim_delivery('d-provider')")
        await worker.execute(
            "SELECT email.mark_delivery_sent('d-provider', 1, NULL, 'ses', 'm-1', 250, 120)"
        )
        await worker.execute(
            "SELECT email.record_delivery_outcome('ses', 'e-1', 'delivered', now(), 'm-unknown')"
        )
    finally:
        await worker.close()
    return database


async def test_views_are_security_invoker_and_for_email_reader_only(
    cluster: Cluster, dashboard_data: str
) -> None:
    database = dashboard_data
    reader = await asyncpg.connect(cluster.dsn(database, DASHBOARD_LOGIN))
    try:
        for view in VIEWS:
            rows = await reader.fetch(f"SELECT * FROM email.{view}")
            assert rows, view
    finally:
        await reader.close()
    for login in (WORKER_LOGIN, NOBODY_LOGIN):
        conn = await asyncpg.connect(cluster.dsn(database, login))
        try:
            for view in VIEWS:
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.fetch(f"SELECT * FROM email.{view}")
        finally:
            await conn.close()
    owner = await asyncpg.connect(cluster.dsn(database))
    try:
        for role in ("anon", "authenticated"):
            for view in VIEWS:
                async with owner.transaction():
                    await owner.execute(f"SET LOCAL ROLE {role}")
                    with pytest.raises(asyncpg.InsufficientPrivilegeError):
                        await owner.fetch(f"SELECT * FROM email.{view}")
        # security_invoker: even grants on the schema and the view show anon nothing,
        # because the view reads the tables with anon's own privileges.
        transaction = owner.transaction()
        await transaction.start()
        await owner.execute("GRANT USAGE ON SCHEMA email TO anon")
        await owner.execute("GRANT SELECT ON email.pending_deliveries TO anon")
        await owner.execute("SET LOCAL ROLE anon")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="table deliveries"):
            await owner.fetch("SELECT * FROM email.pending_deliveries")
        await transaction.rollback()
        options = await owner.fetch(
            "SELECT relname, reloptions FROM pg_class WHERE relkind = 'v' "
            "AND relnamespace = 'email'::regnamespace"
        )
        assert {r["relname"]: r["reloptions"] for r in options} == {
            v: ["security_invoker=true"] for v in VIEWS
        }
    finally:
        await owner.close()


async def test_views_show_a_reader_only_what_rls_lets_it_see(
    cluster: Cluster, dashboard_data: str
) -> None:
    database = dashboard_data
    owner = await asyncpg.connect(cluster.dsn(database))
    reader = await asyncpg.connect(cluster.dsn(database, DASHBOARD_LOGIN))
    try:
        assert await reader.fetchval("SELECT count(*) FROM email.pending_deliveries") == 4
        # Narrow the reader's policy to queued rows: the views must follow it.
        await owner.execute(
            "ALTER POLICY deliveries_email_reader_select ON email.deliveries "
            "USING (status = 'queued')"
        )
        pending = await reader.fetch("SELECT delivery_id FROM email.pending_deliveries")
        assert sorted(r[0] for r in pending) == ["p4", "p5"]
        totals = await reader.fetch(
            "SELECT workflow, total, in_flight FROM email.delivery_stats_24h ORDER BY 1"
        )
        assert [tuple(r) for r in totals] == [("password-reset", 2, 2)]
    finally:
        await reader.close()
        await owner.close()
