"""The dashboards' rollups (revision 0007): the statistics read ``email.delivery_rollups`` for
closed hours and the deliveries for the rest, and say exactly what the rows say.

Since revision 0016 whole closed days come from ``email.delivery_rollups_daily``: the head
function must answer exactly (percentiles included) what revision 0007's function (hourly
rollups and raw rows, frozen) answers on the same snapshot, through every refresh state,
touched hours and retention's deletions included.

The reference is the statistics function as revision 0005 froze it (every row, exact
``percentile_cont``), installed beside the head one: counts and rates must be identical,
latency percentiles within ``rules.LATENCY_RELATIVE_ERROR``, before the first refresh, after
it, after changes the refresh has not seen yet, after deletions, and after the next refresh.
"""

from __future__ import annotations

import asyncio
import math
import random
from datetime import UTC, time, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from email_delivery import DeliveryTracker, InvalidInput, PermissionDenied, maintenance, rules
from email_delivery.migrate import script_location
from tests.support.cluster import DASHBOARD_LOGIN, WORKER_LOGIN, Cluster
from tests.support.db import wait_for_horizon
from tests.support.seed import superuser_dsn

FROZEN_STATS = Path(script_location()) / "versions" / "0005" / "functions" / "delivery_stats.sql"
HOURLY_STATS = Path(script_location()) / "versions" / "0007" / "functions" / "delivery_stats.sql"
WINDOWS = (
    ("now() - interval '24 hours'", "NULL", "NULL", "NULL"),
    ("now() - interval '73 hours'", "NULL", "'hour'", "NULL"),
    ("now() - interval '73 hours'", "NULL", "'day'", "NULL"),
    (
        "now() - interval '50 hours 17 minutes'",
        "now() - interval '5 hours 3 minutes'",
        "NULL",
        "NULL",
    ),
    ("now() - interval '73 hours'", "now()", "'day'", "'team-invite'"),
    (
        "date_bin('1 hour', now() - interval '30 hours', TIMESTAMPTZ '2000-01-01 00:00:00+00')",
        "date_bin('1 hour', now() - interval '2 hours', TIMESTAMPTZ '2000-01-01 00:00:00+00')",
        "'hour'",
        "NULL",
    ),
)
PERCENTILES = ("latency_p50_s", "latency_p95_s", "latency_p99_s")

SEED = """
INSERT INTO email.deliveries (delivery_id, workflow, recipient, status, attempts,
    last_error_code, last_attempted_at, queued_at, sent_at, created_at, updated_at,
    lease_expires_at)
SELECT 'd' || g,
       (ARRAY['verification-code', 'team-invite', 'password-reset'])[1 + g % 3],
       'r' || (g % 50) || '@example.com',
       s.status::email.delivery_status,
       CASE WHEN s.status = 'queued' THEN 0 ELSE 1 + g % 4 END,
       CASE WHEN s.status IN ('failed', 'dead_letter', 'retrying')
            THEN (ARRAY['SMTP_550', 'SMTP_421', 'TIMEOUT'])[1 + g % 3] END,
       CASE WHEN s.status <> 'queued' THEN q + interval '1 second' END,
       q,
       CASE WHEN s.status = 'sent'
            THEN q + ((g * 7919) % 30000) * interval '1 ms' + interval '5 ms' END,
       q, q,
       CASE WHEN s.status = 'in_progress' THEN q + interval '5 minutes' END
FROM generate_series(1, $1) AS g,
     LATERAL (SELECT now() - (g::double precision / $1) * $2::int * interval '1 hour' AS q) AS t,
     LATERAL (SELECT CASE WHEN g % 50 = 0 THEN 'failed' WHEN g % 37 = 0 THEN 'dead_letter'
                          WHEN g % 41 = 0 THEN 'retrying' WHEN g % 43 = 0 THEN 'queued'
                          WHEN g % 47 = 0 THEN 'in_progress' ELSE 'sent' END AS status) AS s
"""


async def _seed(cluster: Cluster, database: str, rows: int, hours: int = 72) -> None:
    """Deliveries over the last ``hours`` hours in every status (triggers off: no events, so
    only the refresh's first pass, not the audit trail, can put them in the rollups)."""
    conn = await asyncpg.connect(superuser_dsn(cluster, database))
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute(SEED, rows, hours)
        await conn.execute("ANALYZE email.deliveries")
    finally:
        await conn.close()


async def _install_reference(owner: asyncpg.Connection) -> None:
    text = FROZEN_STATS.read_text().replace(
        "FUNCTION email.delivery_stats(", "FUNCTION email.delivery_stats_reference(", 1
    )
    await owner.execute(text)


async def _compare(conn: asyncpg.Connection) -> int:
    """Every window through both functions; returns how many rows were compared."""
    compared = 0
    for since, until, bucket, workflow in WINDOWS:
        args = f"{since}, {until}, {bucket}, {workflow}"
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            # One snapshot (and one now()) for both.
            reference = await conn.fetch(f"SELECT * FROM email.delivery_stats_reference({args})")
            head = await conn.fetch(f"SELECT * FROM email.delivery_stats({args})")
        assert [(r["workflow"], r["bucket"]) for r in head] == [
            (r["workflow"], r["bucket"]) for r in reference
        ], args
        for want, got in zip(reference, head, strict=True):
            for column, value in want.items():
                if column in PERCENTILES:
                    if value is None:
                        assert got[column] is None, (args, column)
                    else:
                        assert got[column] == pytest.approx(
                            value, rel=rules.LATENCY_RELATIVE_ERROR, abs=1e-9
                        ), (args, want["workflow"], want["bucket"], column)
                else:
                    assert got[column] == value, (args, want["workflow"], want["bucket"], column)
            compared += 1
    return compared


async def test_statistics_equal_the_rows_through_every_refresh_state(
    cluster: Cluster,
    database: str,
    owner_conn: asyncpg.Connection,
    worker_engine: AsyncEngine,
) -> None:
    await _seed(cluster, database, 3000)
    await _install_reference(owner_conn)
    # Never refreshed: every row is read.
    assert await _compare(owner_conn) > 50
    assert await owner_conn.fetchval("SELECT count(*) FROM email.delivery_rollups") == 0

    first = await owner_conn.fetchrow("SELECT * FROM email.maintain()")
    assert first["rollup_hours_added"] >= 72
    assert await owner_conn.fetchval("SELECT count(*) FROM email.delivery_rollups") > 0
    await _compare(owner_conn)

    # Changes the refresh has not seen: retried deliveries queued hours ago finish now.
    retrying = [
        r["delivery_id"]
        for r in await owner_conn.fetch(
            "SELECT delivery_id FROM email.deliveries WHERE status = 'retrying' "
            "AND queued_at < now() - interval '3 hours' ORDER BY 1 LIMIT 12"
        )
    ]
    assert len(retrying) == 12
    async with DeliveryTracker(worker_engine) as tracker:
        for index, delivery_id in enumerate(retrying):
            claim = await tracker.claim(delivery_id)
            assert claim is not None
            if index % 2:
                await tracker.mark_sent(delivery_id, attempt=claim.attempt)
            else:
                await tracker.mark_failed(
                    delivery_id, attempt=claim.attempt, error=("SMTP_554", "no"), retryable=False
                )
    await _compare(owner_conn)

    # Deletions (retention) write no event: the purge trigger records their hours.
    deleted = await owner_conn.execute(
        "DELETE FROM email.deliveries WHERE status = 'sent' AND delivery_id LIKE '%7'"
    )
    assert int(deleted.split()[-1]) > 100
    assert await owner_conn.fetchval("SELECT count(*) FROM email.delivery_rollup_deletions") > 0
    await _compare(owner_conn)

    await wait_for_horizon(owner_conn)
    second = await owner_conn.fetchrow("SELECT * FROM email.maintain()")
    assert second["rollup_hours_recomputed"] > 0
    assert await owner_conn.fetchval("SELECT count(*) FROM email.delivery_rollup_deletions") == 0
    await _compare(owner_conn)
    # Nothing changed since: the next refresh recomputes nothing, the answers stay.
    third = await owner_conn.fetchrow("SELECT * FROM email.refresh_delivery_rollups()")
    assert third["hours_recomputed"] == 0
    await _compare(owner_conn)


async def test_a_reader_gets_the_statistics_and_nobody_but_the_owner_refreshes(
    cluster: Cluster, database: str, owner_conn: asyncpg.Connection
) -> None:
    await _seed(cluster, database, 200)
    await owner_conn.execute("SELECT * FROM email.maintain()")
    for login in (DASHBOARD_LOGIN, WORKER_LOGIN):
        conn = await asyncpg.connect(cluster.dsn(database, login))
        try:
            if login == DASHBOARD_LOGIN:
                rows = await conn.fetch("SELECT * FROM email.delivery_stats_daily")
                assert sum(r["total"] for r in rows) == 200
            for call in ("email.refresh_delivery_rollups()", "email.maintain()"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.fetch(f"SELECT * FROM {call}")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("DELETE FROM email.delivery_rollups")
        finally:
            await conn.close()


async def test_concurrent_refreshes_wait_for_each_other(
    cluster: Cluster, database: str, owner_conn: asyncpg.Connection
) -> None:
    await _seed(cluster, database, 500)

    async def refresh() -> Any:
        conn = await asyncpg.connect(cluster.dsn(database))
        try:
            return await conn.fetchrow("SELECT * FROM email.refresh_delivery_rollups()")
        finally:
            await conn.close()

    results = await asyncio.gather(refresh(), refresh(), refresh())
    added = sorted(r["hours_added"] for r in results)
    assert added[:2] == [0, 0] and added[2] in (72, 73)
    total = await owner_conn.fetchval("SELECT sum(deliveries) FROM email.delivery_rollups")
    in_open_hour = await owner_conn.fetchval(
        "SELECT count(*) FROM email.deliveries WHERE queued_at >= "
        "(SELECT rolled_until FROM email.delivery_rollup_state)"
    )
    assert total + in_open_hour == 500


def _percentile_cont(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    rank = fraction * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (rank - low) * (ordered[high] - ordered[low])


async def test_histogram_percentiles_stay_within_the_documented_error(
    owner_conn: asyncpg.Connection,
) -> None:
    generator = random.Random(7)
    for sample in range(40):
        size = generator.randint(1, 400)
        values = [10 ** generator.uniform(-2.9, 5.9) for _ in range(size)]
        if sample % 4 == 0:  # clustered, as real latencies are
            values = [generator.lognormvariate(0.5, 0.3) for _ in range(size)]
        buckets: dict[int, int] = {}
        for value in values:
            bucket = rules.latency_bucket(value)
            buckets[bucket] = buckets.get(bucket, 0) + 1
        keys = sorted(buckets)
        sql_buckets = await owner_conn.fetch(
            "SELECT (SELECT CASE WHEN latency_s IS NULL THEN NULL "
            f"ELSE {rules.placeholders()['latency_bucket']} END) AS b "
            "FROM unnest($1::double precision[]) AS latency_s",
            values,
        )
        # Python and SQL bucket alike (values on an exact boundary aside, which floats miss).
        assert sorted(r["b"] for r in sql_buckets) == sorted(map(rules.latency_bucket, values))
        for fraction in (0.5, 0.95, 0.99):
            estimate = await owner_conn.fetchval(
                "SELECT email.latency_percentile($1::smallint[], $2::bigint[], $3)",
                keys,
                [buckets[k] for k in keys],
                fraction,
            )
            exact = _percentile_cont(values, fraction)
            assert abs(estimate - exact) <= rules.LATENCY_RELATIVE_ERROR * exact + 1e-12, (
                sample,
                fraction,
            )


async def test_maintain_reports_and_verify_warns_until_it_runs(
    owner_engine: AsyncEngine, owner_conn: asyncpg.Connection
) -> None:
    from email_delivery import verify

    async def warnings() -> list[str]:
        async with owner_engine.connect() as conn:
            return await conn.run_sync(verify.maintenance_warnings)

    assert [line.split(" end ")[0] for line in await warnings()] == [
        "warning: the dashboards' rollups"
    ]
    # An event beyond the last partition is kept in the default partition, and said so.
    await owner_conn.execute(
        "INSERT INTO email.delivery_events (delivery_id, status, attempt, created_at) "
        "VALUES ('d1', 'queued', 0, now() + interval '5 months')"
    )
    assert any("1 events are in the default partition" in line for line in await warnings())
    report = await maintenance.maintain(owner_engine, ahead="7 months")
    assert report.default_partition_rows == 0 and report.partitions_created
    assert report.rollup_hours_added >= 0
    assert await warnings() == []
    assert (
        await owner_conn.fetchval(
            "SELECT count(*) FROM email.delivery_events WHERE delivery_id = 'd1'"
        )
        == 1
    )
    with pytest.raises(InvalidInput) as caught:
        await maintenance.maintain(owner_engine, ahead="3 fortnights")
    assert caught.value.field == "ahead"


async def test_maintain_is_refused_to_the_worker(worker_engine: AsyncEngine) -> None:
    with pytest.raises(PermissionDenied):
        await maintenance.maintain(worker_engine)


DAY_WINDOWS = (
    # Starting and ending mid-day, in every bucket.
    ("now() - interval '7 days 5 hours 17 minutes'", "now() - interval '1 day 3 hours 11 minutes'"),
    ("now() - interval '6 days 13 hours'", "now() - interval '20 hours 30 minutes'"),
    # Open-ended: the open hour and the hours since the last refresh too.
    ("now() - interval '8 days'", "NULL"),
    # On midnights exactly.
    (
        "date_bin('1 day', now() - interval '6 days', TIMESTAMPTZ '2000-01-01 00:00:00+00')",
        "date_bin('1 day', now() - interval '1 day', TIMESTAMPTZ '2000-01-01 00:00:00+00')",
    ),
    # Inside one day or two: no whole day, or one.
    ("now() - interval '20 hours'", "now() - interval '3 hours'"),
    ("now() - interval '47 hours 59 minutes'", "NULL"),
)


async def _compare_with_hourly(conn: asyncpg.Connection) -> int:
    """Every window, bucket and workflow filter through the head function and revision
    0007's (hourly rollups and raw rows): identical, percentiles included."""
    compared = 0
    for since, until in DAY_WINDOWS:
        for bucket in ("NULL", "'hour'", "'day'"):
            for workflow in ("NULL", "'team-invite'"):
                args = f"{since}, {until}, {bucket}, {workflow}, 5"
                async with conn.transaction(isolation="repeatable_read", readonly=True):
                    want = await conn.fetch(
                        f"SELECT * FROM email.delivery_stats_hourly_ref({args})"
                    )
                    got = await conn.fetch(f"SELECT * FROM email.delivery_stats({args})")
                assert [dict(r) for r in got] == [dict(r) for r in want], args
                compared += len(got)
    return compared


async def _assert_days_sum_their_hours(conn: asyncpg.Connection) -> None:
    """Every day of the daily tier is the sum of its hourly rows, and every closed day with
    hourly rows is in it."""
    mismatched = await conn.fetchval(
        """
        WITH days AS (
            SELECT date_bin('1 day', r.hour, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS day,
                   r.workflow, r.status, r.error_code, r.latency_bucket,
                   sum(r.deliveries) AS deliveries, sum(r.attempts) AS attempts,
                   sum(r.retried) AS retried
            FROM email.delivery_rollups AS r
            WHERE r.hour < (SELECT s.days_until FROM email.delivery_rollup_state AS s)
            GROUP BY 1, 2, 3, 4, 5
        )
        SELECT count(*) FROM days AS h
        FULL JOIN email.delivery_rollups_daily AS d
            ON d.day = h.day AND d.workflow = h.workflow AND d.status = h.status
           AND d.error_code IS NOT DISTINCT FROM h.error_code
           AND d.latency_bucket IS NOT DISTINCT FROM h.latency_bucket
        WHERE d.id IS NULL OR h.day IS NULL OR d.deliveries <> h.deliveries
           OR d.attempts <> h.attempts OR d.retried <> h.retried
        """
    )
    assert mismatched == 0
    state = await conn.fetchrow("SELECT * FROM email.delivery_rollup_state")
    assert state["days_until"] <= state["rolled_until"]
    assert state["days_until"] > state["rolled_until"] - timedelta(days=1)
    assert state["days_until"].astimezone(UTC).time() == time(0)


async def test_the_daily_tier_answers_exactly_what_the_hours_and_rows_do(
    cluster: Cluster,
    database: str,
    owner_conn: asyncpg.Connection,
    worker_engine: AsyncEngine,
) -> None:
    await _seed(cluster, database, 6000, hours=9 * 24)
    await _install_reference(owner_conn)
    await owner_conn.execute(
        HOURLY_STATS.read_text().replace(
            "FUNCTION email.delivery_stats(", "FUNCTION email.delivery_stats_hourly_ref(", 1
        )
    )
    # Never refreshed: no tier, every row read.
    assert await _compare_with_hourly(owner_conn) > 100
    await owner_conn.fetchrow("SELECT * FROM email.maintain()")
    days = await owner_conn.fetchval("SELECT count(DISTINCT day) FROM email.delivery_rollups_daily")
    assert days >= 8
    await _assert_days_sum_their_hours(owner_conn)
    assert await _compare_with_hourly(owner_conn) > 100
    await _compare(owner_conn)

    # The tier is read (whole days, bucket NULL or day) and only then (bucket hour): a
    # day's rows changed behind the refresh's back change the first answers only.
    window = "date_bin('1 day', now() - interval '3 days', TIMESTAMPTZ '2000-01-01 00:00:00+00')"
    totals = (
        f"SELECT sum(total) FROM email.delivery_stats({window} - interval '1 day', "
        f"{window} + interval '1 day 5 hours', {{}})"
    )
    before = [await owner_conn.fetchval(totals.format(b)) for b in ("NULL", "'day'", "'hour'")]
    await owner_conn.execute(
        "UPDATE email.delivery_rollups_daily SET deliveries = deliveries + 1000 "
        f"WHERE id = (SELECT min(id) FROM email.delivery_rollups_daily WHERE day = {window})"
    )
    after = [await owner_conn.fetchval(totals.format(b)) for b in ("NULL", "'day'", "'hour'")]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1000, 1000, 0]
    await owner_conn.execute(
        "UPDATE email.delivery_rollups_daily SET deliveries = deliveries - 1000 "
        f"WHERE id = (SELECT min(id) FROM email.delivery_rollups_daily WHERE day = {window})"
    )

    # Touched by transactions the refresh has not seen: deliveries of closed days finish.
    retrying = [
        r["delivery_id"]
        for r in await owner_conn.fetch(
            "SELECT delivery_id FROM email.deliveries WHERE status = 'retrying' "
            "AND queued_at < now() - interval '30 hours' ORDER BY 1 LIMIT 10"
        )
    ]
    assert len(retrying) == 10
    async with DeliveryTracker(worker_engine) as tracker:
        for index, delivery_id in enumerate(retrying):
            claim = await tracker.claim(delivery_id)
            assert claim is not None
            if index % 2:
                await tracker.mark_sent(delivery_id, attempt=claim.attempt)
            else:
                await tracker.mark_failed(
                    delivery_id, attempt=claim.attempt, error=("SMTP_554", "no"), retryable=False
                )
    await _compare_with_hourly(owner_conn)
    await _compare(owner_conn)

    # Retention's deletions in closed days (no event: the purge trigger records the hours).
    deleted = await owner_conn.execute(
        "DELETE FROM email.deliveries WHERE status = 'sent' AND delivery_id LIKE '%3' "
        "AND queued_at < now() - interval '2 days'"
    )
    assert int(deleted.split()[-1]) > 100
    await _compare_with_hourly(owner_conn)
    await _compare(owner_conn)

    # The next refresh sums those days again (those whose transactions it can see: another
    # session's open transaction holds the horizon back, and those hours stay read raw).
    await owner_conn.fetchrow("SELECT * FROM email.maintain()")
    await _assert_days_sum_their_hours(owner_conn)
    await _compare_with_hourly(owner_conn)
    await _compare(owner_conn)

    # Reset for a bulk load (docs/scaling.md): the next refresh rebuilds both tiers.
    await owner_conn.execute("UPDATE email.delivery_rollup_state SET rolled_until = '-infinity'")
    await _compare_with_hourly(owner_conn)
    await owner_conn.fetchrow("SELECT * FROM email.maintain()")
    await _assert_days_sum_their_hours(owner_conn)
    await _compare_with_hourly(owner_conn)


async def test_nobody_but_the_owner_writes_the_daily_tier(
    cluster: Cluster, database: str, owner_conn: asyncpg.Connection
) -> None:
    await _seed(cluster, database, 300, hours=3 * 24)
    await owner_conn.execute("SELECT * FROM email.maintain()")
    assert await owner_conn.fetchval("SELECT count(*) FROM email.delivery_rollups_daily") > 0
    for login in (DASHBOARD_LOGIN, WORKER_LOGIN):
        conn = await asyncpg.connect(cluster.dsn(database, login))
        try:
            if login == DASHBOARD_LOGIN:
                assert await conn.fetchval("SELECT count(*) FROM email.delivery_rollups_daily")
            else:
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.fetch("SELECT * FROM email.delivery_rollups_daily")
            for statement in (
                "DELETE FROM email.delivery_rollups_daily",
                "UPDATE email.delivery_rollups_daily SET deliveries = 1",
                "UPDATE email.delivery_rollup_state SET days_until = '-infinity'",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(statement)
        finally:
            await conn.close()


async def test_the_statistics_never_pay_for_jit(owner_conn: asyncpg.Connection) -> None:
    # At 10 M rows the generic plans of the raw edges pass jit_above_cost; compiling them
    # cost 70-90 ms per call (docs/benchmarks.md): the function turns it off for the call.
    config = await owner_conn.fetchval(
        "SELECT proconfig FROM pg_proc WHERE oid = 'email.delivery_stats'::regproc"
    )
    assert "jit=off" in config
