"""Retention of the audit log by whole partitions (``email.drop_expired_event_partitions``,
run by ``retention.prune`` as the owner): a month whose range ended before the cutoff is
detached and dropped with its events, unless a delivery still in flight began in it or
before it — that delivery's history stays, and so does every later month."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest

from tests.support.cluster import Cluster
from tests.support.seed import superuser_dsn

JAN, FEB, MAR = (datetime(2025, month, 1, tzinfo=UTC) for month in (1, 2, 3))


async def _months(owner: asyncpg.Connection, cluster: Cluster, database: str) -> None:
    """Two monthly partitions in the past (a database converted long ago), one delivery and
    one event in each: sent in January, ``in_flight`` in February."""
    # The migration's legacy partition reaches back forever; it is empty here.
    await owner.execute(
        "ALTER TABLE email.delivery_events DETACH PARTITION email.delivery_events_legacy"
    )
    await owner.execute("DROP TABLE email.delivery_events_legacy")
    for lower, upper in ((JAN, FEB), (FEB, MAR)):
        await owner.execute(
            f"CREATE TABLE email.delivery_events_p{lower:%Y%m%d} PARTITION OF "
            f"email.delivery_events FOR VALUES FROM ('{lower.isoformat()}') "
            f"TO ('{upper.isoformat()}')"
        )
    admin = await asyncpg.connect(superuser_dsn(cluster, database))
    try:
        async with admin.transaction():
            # The past cannot be written through the triggers (created_at is the insert's).
            await admin.execute("SET LOCAL session_replication_role = replica")
            for delivery_id, status, month in (("jan", "sent", JAN), ("feb", "retrying", FEB)):
                await admin.execute(
                    "INSERT INTO email.deliveries (delivery_id, workflow, recipient, status, "
                    "attempts, queued_at, sent_at, created_at, updated_at) "
                    "VALUES ($1, 'invite', 'ada@example.com', $2::text::email.delivery_status, 1, "
                    "$3::timestamptz, CASE WHEN $2::text = 'sent' THEN $3::timestamptz END, "
                    "$3::timestamptz, $3::timestamptz)",
                    delivery_id,
                    status,
                    month,
                )
                await admin.execute(
                    "INSERT INTO email.delivery_events (delivery_id, status, attempt, created_at) "
                    "VALUES ($1, $2::text::email.delivery_status, 1, $3::timestamptz)",
                    delivery_id,
                    status,
                    month,
                )
    finally:
        await admin.close()


async def _partitions(owner: asyncpg.Connection) -> set[str]:
    rows = await owner.fetch("SELECT name FROM email.event_partitions()")
    return {row["name"] for row in rows}


@pytest.mark.parametrize(
    ("feb_status", "before", "dropped"),
    [
        # February's delivery is in flight: January goes, February and its history stay.
        ("retrying", datetime(2025, 6, 1, tzinfo=UTC), ["delivery_events_p20250101"]),
        # Nothing in flight: both months go.
        (
            "sent",
            datetime(2025, 6, 1, tzinfo=UTC),
            ["delivery_events_p20250101", "delivery_events_p20250201"],
        ),
        # February ends after the cutoff: only January goes.
        ("sent", datetime(2025, 2, 15, tzinfo=UTC), ["delivery_events_p20250101"]),
    ],
)
async def test_whole_months_are_dropped_unless_a_delivery_in_flight_began_in_them(
    cluster: Cluster,
    database: str,
    owner_conn: asyncpg.Connection,
    feb_status: str,
    before: datetime,
    dropped: list[str],
) -> None:
    await _months(owner_conn, cluster, database)
    if feb_status != "retrying":
        admin = await asyncpg.connect(superuser_dsn(cluster, database))
        try:
            await admin.execute(
                "SET session_replication_role = replica; "
                f"UPDATE email.deliveries SET status = '{feb_status}', sent_at = created_at "
                "WHERE delivery_id = 'feb'"
            )
        finally:
            await admin.close()
    before_partitions = await _partitions(owner_conn)

    rows = await owner_conn.fetch(
        "SELECT name FROM email.drop_expired_event_partitions($1)", before
    )

    assert [row["name"] for row in rows] == dropped
    assert await _partitions(owner_conn) == before_partitions - set(dropped)
    kept = await owner_conn.fetch("SELECT delivery_id FROM email.delivery_events ORDER BY 1")
    expected = [] if "delivery_events_p20250201" in dropped else ["feb"]
    assert [row["delivery_id"] for row in kept] == expected
