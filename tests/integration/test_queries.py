"""Each statement of email_delivery.queries against hand-computed expectations, run through
an async engine (asyncpg), a sync engine (psycopg) and once through pandas.read_sql."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas
import pytest
from sqlalchemy import Engine, Select, create_engine, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from email_delivery import queries
from email_delivery.errors import InvalidInput
from email_delivery.rules import LATENCY_RELATIVE_ERROR
from email_delivery.urls import sync_url
from tests.support.cluster import Cluster
from tests.support.seed import ADA, I2_EVENTS, ROWS, STATS_24H, seed


class Engines:
    def __init__(self, async_engine: AsyncEngine, sync_engine: Engine, now: datetime) -> None:
        self.async_engine, self.sync_engine, self.now = async_engine, sync_engine, now

    async def rows(self, kind: str, statement: Select[Any]) -> list[dict[str, Any]]:
        if kind == "async":
            async with self.async_engine.connect() as conn:
                return [dict(r._mapping) for r in (await conn.execute(statement)).all()]
        with self.sync_engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(statement).all()]


@pytest.fixture(scope="module")
async def seeded(cluster: Cluster, template_database: str) -> AsyncIterator[Engines]:
    async with cluster.clone(template_database, "rq") as name:
        now = await seed(cluster, name)
        async_engine = create_async_engine(cluster.url(name), poolclass=NullPool)
        sync_engine = create_engine(sync_url(cluster.url(name)), poolclass=NullPool)
        yield Engines(async_engine, sync_engine, now)
        await async_engine.dispose()
        sync_engine.dispose()


KINDS = pytest.mark.parametrize("kind", ["async", "sync"])


@KINDS
async def test_delivery_by_id_and_unknown_id(seeded: Engines, kind: str) -> None:
    [row] = await seeded.rows(kind, queries.delivery(delivery_id="i2"))
    assert (row["status"], row["attempts"], row["recipient"]) == ("sent", 2, "bob@example.com")
    assert row["sent_at"] - row["queued_at"] == timedelta(seconds=30)
    assert await seeded.rows(kind, queries.delivery(delivery_id="nope")) == []


@KINDS
async def test_delivery_events_and_delivery_with_events(seeded: Engines, kind: str) -> None:
    events = await seeded.rows(kind, queries.delivery_events(delivery_id="i2"))
    got = [(e["status"], e["attempt"], e["error_code"], e["payload"]) for e in events]
    assert got == list(I2_EVENTS)
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)

    [row] = await seeded.rows(kind, queries.delivery_with_events(delivery_id="i2"))
    assert row["delivery_id"] == "i2"
    trail = [(e["status"], e["attempt"], e["error_code"], e["payload"]) for e in row["events"]]
    assert trail == list(I2_EVENTS)


@KINDS
async def test_recipient_history_is_normalised_newest_first_and_pages_by_cursor(
    seeded: Engines, kind: str
) -> None:
    expected = ["p1", "p5", "p3", "i1", "i3", "i5"]
    whole = await seeded.rows(kind, queries.recipient_deliveries(recipient="  Ada@Example.COM "))
    assert [r["delivery_id"] for r in whole] == expected
    assert {r["recipient"] for r in whole} == {ADA}

    pages: list[list[str]] = []
    after = None
    while True:
        page = await seeded.rows(
            kind, queries.recipient_deliveries(recipient=ADA, limit=2, after=after)
        )
        if not page:
            break
        pages.append([r["delivery_id"] for r in page])
        last = page[-1]
        token = queries.Cursor(
            queued_at=last["queued_at"], delivery_id=last["delivery_id"]
        ).encode()
        after = queries.Cursor.decode(token)
    assert pages == [["p1", "p5"], ["p3", "i1"], ["i3", "i5"]]


@KINDS
async def test_pending_and_stuck(seeded: Engines, kind: str) -> None:
    stuck = await seeded.rows(kind, queries.pending_deliveries(older_than=timedelta(minutes=10)))
    assert [r["delivery_id"] for r in stuck] == ["i4", "p5", "p3"]
    assert all(r["idle_for"] > timedelta(minutes=10) for r in stuck)
    pending = await seeded.rows(kind, queries.pending_deliveries())
    assert [r["delivery_id"] for r in pending] == ["i4", "p5", "p3", "p4"]
    only = await seeded.rows(
        kind,
        queries.pending_deliveries(workflow="password-reset", statuses=["in_progress"]),
    )
    assert [r["delivery_id"] for r in only] == ["p3"]


def _check_stats(rows: list[dict[str, Any]]) -> None:
    by_workflow = {r["workflow"]: r for r in rows}
    assert set(by_workflow) == set(STATS_24H)
    for workflow, expected in STATS_24H.items():
        got = by_workflow[workflow]
        for column, value in expected.items():
            if column.startswith("latency_"):
                # From the latency histogram: within its documented relative error.
                assert got[column] == pytest.approx(value, rel=LATENCY_RELATIVE_ERROR), column
            elif isinstance(value, float):
                assert got[column] == pytest.approx(value), (workflow, column)
            else:
                assert got[column] == value, (workflow, column)


@KINDS
async def test_stats_over_24_hours(seeded: Engines, kind: str) -> None:
    since = seeded.now - timedelta(hours=24)
    rows = await seeded.rows(kind, queries.workflow_stats(since=since))
    assert [r["workflow"] for r in rows] == ["invite", "password-reset"]
    assert list(rows[0]) == list(queries.WORKFLOW_STATS_COLUMNS)
    assert all(r["bucket"] is None for r in rows)
    _check_stats(rows)

    only = await seeded.rows(kind, queries.workflow_stats(since=since, workflow="invite"))
    assert [r["total"] for r in only] == [4]
    wide = await seeded.rows(kind, queries.workflow_stats(since=seeded.now - timedelta(days=2)))
    assert {r["workflow"]: r["total"] for r in wide} == {"invite": 5, "password-reset": 5}
    shut = await seeded.rows(
        kind, queries.workflow_stats(since=since, until=seeded.now - timedelta(hours=2))
    )
    # Only i3 (3 h) and p2 (5 h) were queued between 24 h and 2 h ago.
    assert {r["workflow"]: r["total"] for r in shut} == {"invite": 1, "password-reset": 1}


@KINDS
async def test_stats_bucketed_by_hour_and_day(seeded: Engines, kind: str) -> None:
    since = seeded.now - timedelta(days=2)
    for bucket, width in (("hour", timedelta(hours=1)), ("day", timedelta(days=1))):
        rows = await seeded.rows(kind, queries.workflow_stats(since=since, bucket=bucket))
        got = {(r["workflow"], r["bucket"]): r["total"] for r in rows}
        expected: dict[tuple[str, datetime], int] = {}
        origin = datetime(2000, 1, 1, tzinfo=UTC)
        for row in ROWS:
            queued_at = seeded.now - row.queued_ago
            start = origin + ((queued_at - origin) // width) * width
            key = (row.workflow, start)
            expected[key] = expected.get(key, 0) + 1
        assert got == expected, bucket


async def test_stats_through_pandas_read_sql(seeded: Engines) -> None:
    statement = queries.workflow_stats(since=seeded.now - timedelta(hours=24))
    frame = pandas.read_sql(statement, seeded.sync_engine)
    assert list(frame.columns) == list(queries.WORKFLOW_STATS_COLUMNS)
    _check_stats(frame.to_dict("records"))


async def test_views_match_the_query(seeded: Engines) -> None:
    async with seeded.async_engine.connect() as conn:
        view = [
            dict(r._mapping)
            for r in await conn.execute(
                text("SELECT * FROM email.delivery_stats_24h ORDER BY workflow")
            )
        ]
        assert [c for c in view[0]] == [c for c in queries.STATS_COLUMNS if c != "bucket"]
        _check_stats(view)
        daily = (
            await conn.execute(
                text(
                    "SELECT workflow, sum(total) FROM email.delivery_stats_daily "
                    "GROUP BY workflow ORDER BY workflow"
                )
            )
        ).all()
        assert [tuple(r) for r in daily] == [("invite", 5), ("password-reset", 5)]
        pending = (
            (
                await conn.execute(
                    text("SELECT delivery_id FROM email.pending_deliveries ORDER BY updated_at")
                )
            )
            .scalars()
            .all()
        )
        assert pending == ["i4", "p5", "p3", "p4"]


def test_bad_arguments_raise_typed_errors_naming_the_field() -> None:
    naive = datetime(2026, 1, 1)
    cases = [
        (lambda: queries.workflow_stats(since=naive), "since"),
        (lambda: queries.workflow_stats(since=datetime.now(UTC), bucket="week"), "bucket"),  # type: ignore[arg-type]
        (lambda: queries.recipient_deliveries(recipient=ADA, limit=0), "limit"),
        (lambda: queries.pending_deliveries(older_than=timedelta(-1)), "older_than"),
        (lambda: queries.pending_deliveries(statuses=["sent"]), "statuses"),
        (lambda: queries.Cursor.decode("not-a-cursor"), "cursor"),
    ]
    for build, field in cases:
        with pytest.raises(InvalidInput) as info:
            build()
        assert info.value.field == field
        assert isinstance(info.value, ValueError)
