"""Scale benchmark: reads, dashboards, retention and partition upkeep at 10 M deliveries.

    .venv/bin/python benchmarks/scale.py [--deliveries 10000000] [--months 12] [--json]

Without ``DATABASE_URL`` it starts the embedded PostgreSQL 18 with fsync and synchronous
commit on (``embedded_server(durable=True)``); with it, it uses that server (its role must
be a superuser: seeding turns triggers off). Either way it creates a scratch database,
migrates it to head and drops it at the end (``--keep`` keeps it, with ``DATABASE_URL``).

Setup: the audit log gets ``--months`` monthly partitions ending with the current month.
The package's maintenance only creates partitions forward from the last one, so the first
(oldest) is created here by hand with the statements ``email.create_event_partitions``
runs, after the empty ones the migration made are detached and dropped; ``maintain`` then
creates every later one (and three months ahead). Deliveries and ~4 events each are seeded
as ``read_side.py`` does (``_seed.py``: server-side ``generate_series``, triggers off,
indexes rebuilt per partition afterwards), spread evenly from the first partition's start
to now, one recipient per 10 deliveries, the newest 20,000 in flight; then ``maintain``
runs, so the rollups are current.

Measured (plans go to ``benchmarks/results/scale_*.txt``):

- by id and recipient history (50 newest): p50/p99 through the package's statement
  builders on an async SQLAlchemy engine, and the same SQL as a prepared asyncpg statement;
  and p50/p99 of the server's own execution time (``EXPLAIN (ANALYZE, TIMING OFF)``);
- the stuck list (``pending_deliveries``, older than 10 minutes, 100 rows);
- statistics: the ``delivery_stats_24h`` view, ``delivery_stats`` over 30 days (total and
  daily) and 90 days (total, and the ``delivery_stats_daily`` view), median of 5 runs;
- the time to add next month's partition (``email.create_event_partitions``) while a
  lifecycle load (``DeliveryTracker``, enqueue -> claim -> mark_sent, 8 tasks over 4
  connections) runs, and that load's worst lifecycle latency meanwhile;
- retention: the expired partitions dropped (``email.drop_expired_event_partitions``, as
  ``prune`` does first) and then ``retention.prune`` deleting the rest row by row: the
  oldest two and a half months of sent deliveries; deliveries/s (with their events) over
  both, and the longest single statement; then the ``VACUUM`` that retention leaves for
  ``email.deliveries``;
- sizes of both tables and of each index.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from _seed import seed
from sqlalchemy import Select
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from email_delivery import DeliveryTracker, make_engine, migrate, queries, retention
from email_delivery.embedded import embedded_server
from email_delivery.maintenance import maintain
from email_delivery.urls import async_url

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = {
    "by_id_p99_ms": 1.0,
    "recipient_history_p99_ms": 2.0,
    "stats_30d_ms": 100.0,
    "stats_30d_daily_ms": 100.0,
    "stats_90d_ms": 100.0,
    "stats_90d_daily_view_ms": 100.0,
    "prune_deliveries_per_s": 200_000.0,
    "prune_longest_statement_s": 1.0,
}
STATS = (
    ("stats_24h_view", "SELECT * FROM email.delivery_stats_24h"),
    ("stats_7d_hourly_view", "SELECT * FROM email.delivery_stats_hourly"),
    ("stats_30d", "SELECT * FROM email.delivery_stats(now() - interval '30 days')"),
    (
        "stats_30d_daily",
        "SELECT * FROM email.delivery_stats(now() - interval '30 days', p_bucket => 'day')",
    ),
    ("stats_90d", "SELECT * FROM email.delivery_stats(now() - interval '90 days')"),
    ("stats_90d_daily_view", "SELECT * FROM email.delivery_stats_daily"),
)
LEASE = timedelta(minutes=5)
Log = Callable[[str], None]


@contextlib.asynccontextmanager
async def server_url() -> AsyncIterator[tuple[str, str]]:
    if os.environ.get("DATABASE_URL"):
        yield str(async_url(os.environ["DATABASE_URL"]).render_as_string(False)), "DATABASE_URL"
        return
    with embedded_server(durable=True) as url:
        yield url, "embedded"


def _dsn(url: str, database: str) -> str:
    return (
        make_url(url)
        .set(drivername="postgresql", database=database)
        .render_as_string(hide_password=False)
    )


def _sql(statement: Select[Any]) -> str:
    return str(
        statement.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
    )


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def explain(conn: asyncpg.Connection, name: str, sql: str) -> str:
    plan = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")
    text = "\n".join(row[0] for row in plan)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"scale_{name}.txt").write_text(f"{sql}\n\n{text}\n", encoding="utf-8")
    return next((line.strip() for line in text.splitlines() if "Execution Time" in line), "")


async def timed_many(conn: AsyncConnection, statements: list[Select[Any]]) -> list[float]:
    latencies = []
    gc.disable()  # a collection inside one sample is the client's pause, not the query's
    try:
        for statement in statements:
            started = time.perf_counter()
            (await conn.execute(statement)).all()
            latencies.append((time.perf_counter() - started) * 1000)
    finally:
        gc.enable()
    return latencies


async def timed_raw(conn: asyncpg.Connection, sql: str, values: list[str]) -> list[float]:
    prepared = await conn.prepare(sql)
    latencies = []
    gc.disable()
    try:
        for value in values:
            started = time.perf_counter()
            await prepared.fetch(value)
            latencies.append((time.perf_counter() - started) * 1000)
    finally:
        gc.enable()
    return latencies


async def monthly_partitions(conn: asyncpg.Connection, months: int) -> datetime:
    """``months`` monthly partitions ending with the current one; returns the first's start."""
    first: datetime = await conn.fetchval(
        "SELECT date_trunc('month', now(), 'UTC') - ($1::int - 1) * interval '1 month'", months
    )
    for row in await conn.fetch(
        "SELECT name FROM email.event_partitions() WHERE NOT is_default"
    ):  # the migration's: empty in a new database, and the legacy one reaches back forever
        await conn.execute(f'ALTER TABLE email.delivery_events DETACH PARTITION email."{row[0]}"')
        await conn.execute(f'DROP TABLE email."{row[0]}"')
    name = f"delivery_events_p{first.astimezone(UTC):%Y%m%d}"
    # What email.create_event_partitions does for each partition it adds.
    await conn.execute(
        f'CREATE TABLE email."{name}" (LIKE email.delivery_events '
        "INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
    )
    upper = await conn.fetchval("SELECT $1::timestamptz + interval '1 month'", first)
    await conn.execute(
        f'ALTER TABLE email.delivery_events ATTACH PARTITION email."{name}" '
        f"FOR VALUES FROM ('{first.isoformat()}') TO ('{upper.isoformat()}')"
    )
    # Every later month up to three months ahead: the partition half of ``maintain``. (The
    # rollups are first built after seeding: a refresh after rows appeared in rolled hours
    # recomputes each such hour on its own, far slower than the first roll-up.)
    await conn.execute("SELECT email.create_event_partitions()")
    return first


async def sizes(conn: asyncpg.Connection) -> dict[str, Any]:
    def mb(value: int) -> float:
        return round(float(value) / 1048576, 1)

    deliveries = await conn.fetchrow(
        "SELECT pg_relation_size('email.deliveries') AS heap, "
        "pg_indexes_size('email.deliveries') AS indexes, "
        "pg_total_relation_size('email.deliveries') AS total, "
        "(SELECT reltuples::bigint FROM pg_class WHERE oid = 'email.deliveries'::regclass) AS rows"
    )
    per_index = {
        row["name"]: mb(row["size"])
        for row in await conn.fetch(
            "SELECT indexrelid::regclass::text AS name, pg_relation_size(indexrelid) AS size "
            "FROM pg_index WHERE indrelid = 'email.deliveries'::regclass ORDER BY 2 DESC"
        )
    }
    events = await conn.fetchrow(
        "SELECT sum(pg_relation_size(relid)) AS heap, sum(pg_indexes_size(relid)) AS indexes, "
        "sum(pg_total_relation_size(relid)) AS total, count(*) AS partitions "
        "FROM pg_partition_tree('email.delivery_events') WHERE isleaf"
    )
    event_indexes = {
        row["name"]: mb(row["size"])
        for row in await conn.fetch(
            "SELECT x.indexrelid::regclass::text AS name, "
            "(SELECT sum(pg_relation_size(l.relid)) FROM pg_partition_tree(x.indexrelid) l "
            "WHERE l.isleaf) AS size "
            "FROM pg_index x WHERE x.indrelid = 'email.delivery_events'::regclass "
            "ORDER BY 2 DESC"
        )
    }
    rollups = await conn.fetchrow(
        "SELECT pg_total_relation_size('email.delivery_rollups') AS total, "
        "(SELECT count(*) FROM email.delivery_rollups) AS rows"
    )
    return {
        "deliveries_heap_mb": mb(deliveries["heap"]),
        "deliveries_indexes_mb": mb(deliveries["indexes"]),
        "deliveries_total_mb": mb(deliveries["total"]),
        "deliveries_index_mb": per_index,
        "events_heap_mb": mb(events["heap"]),
        "events_indexes_mb": mb(events["indexes"]),
        "events_total_mb": mb(events["total"]),
        "events_index_mb": event_indexes,
        "event_partitions": events["partitions"],
        "rollups_total_mb": mb(rollups["total"]),
        "rollup_rows": rollups["rows"],
        "database_mb": mb(await conn.fetchval("SELECT pg_database_size(current_database())")),
    }


async def partition_under_load(
    url: str, conn: asyncpg.Connection, seconds: float, result: dict[str, Any]
) -> None:
    """Add next month's partition while a lifecycle load runs; the load's latencies."""
    engine = make_engine(url, pool_size=4, max_overflow=0)
    tracker = DeliveryTracker(engine)
    done: list[tuple[float, float]] = []
    stop = asyncio.Event()

    async def worker(w: int) -> None:
        i = 0
        while not stop.is_set():
            did = f"load-{w}-{i}"
            i += 1
            started = time.perf_counter()
            await tracker.enqueue(did, workflow="invite", recipient=f"load{i % 997}@example.com")
            claim = await tracker.claim(did, lease=LEASE)
            if claim is None:
                raise RuntimeError(f"claim of {did} lost")
            await tracker.mark_sent(did, attempt=claim.attempt)
            done.append((started, time.perf_counter()))

    try:
        workers = [asyncio.create_task(worker(w)) for w in range(8)]
        await asyncio.sleep(seconds / 2)
        ahead = await conn.fetchval(
            "SELECT max(upper_bound) - now() + interval '1 day' FROM email.event_partitions()"
        )
        ddl_started = time.perf_counter()
        created = await conn.fetch("SELECT * FROM email.create_event_partitions($1)", ahead)
        ddl_ended = time.perf_counter()
        await asyncio.sleep(seconds / 2)
        stop.set()
        await asyncio.gather(*workers)
    finally:
        await tracker.aclose()
        await engine.dispose()
    during = [e - s for s, e in done if s < ddl_ended and e > ddl_started]
    outside = [e - s for s, e in done if not (s < ddl_ended and e > ddl_started)]
    result["partition_created"] = [row[0] for row in created]
    result["partition_add_ms"] = round((ddl_ended - ddl_started) * 1000, 1)
    result["load_lifecycles"] = len(done)
    result["load_lifecycles_per_s"] = round(len(done) / seconds, 1)
    result["load_lifecycle_p50_ms"] = round(statistics.median(outside) * 1000, 1)
    result["load_lifecycle_p99_ms"] = round(_percentile(outside, 0.99) * 1000, 1)
    result["load_lifecycle_max_outside_ms"] = round(max(outside) * 1000, 1)
    result["load_lifecycle_max_during_ms"] = round(max(during, default=0.0) * 1000, 1)


async def prune(
    conn: asyncpg.Connection,
    engine: Any,
    first: datetime,
    args: argparse.Namespace,
    result: dict[str, Any],
) -> None:
    """Retention of the oldest 2.5 months of sent deliveries, as ``prune`` does it: expired
    partitions dropped whole (timed here on their own), then rows in batches."""
    now, cutoff = await conn.fetchrow(
        "SELECT now(), $1::timestamptz + interval '2 months 15 days'", first
    )
    older_than: timedelta = now - cutoff
    result["prune_cutoff"] = cutoff.isoformat()
    result["prune_expected_deliveries"] = await conn.fetchval(
        "SELECT count(*) FROM email.deliveries WHERE status = 'sent' "
        "AND coalesce(sent_at, last_attempted_at, queued_at) < $1",
        cutoff,
    )
    dropped_events = 0
    for row in await conn.fetch(
        "SELECT name FROM email.event_partitions() WHERE NOT is_default AND upper_bound <= $1",
        cutoff,
    ):
        dropped_events += await conn.fetchval(f'SELECT count(*) FROM email."{row[0]}"')
    # The in-flight check email.drop_expired_event_partitions makes before each partition.
    result["plans"]["partition_drop_check"] = await explain(
        conn,
        "partition_drop_check",
        "SELECT EXISTS (SELECT FROM email.deliveries AS d WHERE d.status IN "
        f"('queued', 'in_progress', 'retrying') AND d.created_at < '{cutoff.isoformat()}')",
    )
    started = time.perf_counter()
    dropped = await conn.fetch("SELECT * FROM email.drop_expired_event_partitions($1)", cutoff)
    drop_s = time.perf_counter() - started
    report = await retention.prune(
        engine,
        older_than=older_than,
        keep_failed_for=timedelta(days=365),
        batch_size=args.batch_size,
    )
    elapsed = drop_s + report.elapsed_s
    result["prune"] = report.as_dict()
    result["prune_dropped_partitions"] = [row[0] for row in dropped]
    result["prune_partition_drop_s"] = round(drop_s, 3)
    result["prune_dropped_events"] = dropped_events
    result["prune_deleted_deliveries"] = report.deleted_deliveries
    result["prune_deleted_events"] = dropped_events + report.deleted_events
    result["prune_elapsed_s"] = round(elapsed, 2)
    result["prune_deliveries_per_s"] = round(report.deleted_deliveries / elapsed)
    result["prune_longest_statement_s"] = round(max(drop_s, report.longest_statement_s), 3)
    started = time.perf_counter()
    await conn.execute("VACUUM email.deliveries")
    result["vacuum_deliveries_after_prune_s"] = round(time.perf_counter() - started, 1)


async def measure(
    url: str,
    database: str,
    conn: asyncpg.Connection,
    args: argparse.Namespace,
    result: dict[str, Any],
    log: Log,
) -> None:
    n = args.deliveries
    recipients = result["recipients"]
    rng = random.Random(7)
    engine = create_async_engine(make_url(url).set(database=database), poolclass=NullPool)
    plans: dict[str, str] = {}
    try:
        async with engine.connect() as sa:
            by_id = [
                queries.delivery(delivery_id=f"bench-{rng.randint(1, n)}")
                for _ in range(args.samples)
            ]
            await timed_many(sa, by_id[:200])  # warm the statement cache and buffers
            latencies = await timed_many(sa, by_id)
            result["by_id_p50_ms"] = round(statistics.median(latencies), 3)
            result["by_id_p99_ms"] = round(_percentile(latencies, 0.99), 3)
            raw = await timed_raw(
                conn,
                "SELECT * FROM email.deliveries WHERE delivery_id = $1",
                [f"bench-{rng.randint(1, n)}" for _ in range(args.samples)],
            )
            result["by_id_raw_p99_ms"] = round(_percentile(raw, 0.99), 3)
            with_events = [
                queries.delivery_with_events(delivery_id=f"bench-{rng.randint(1, n)}")
                for _ in range(args.samples)
            ]
            await timed_many(sa, with_events[:200])
            latencies = await timed_many(sa, with_events)
            result["with_events_p50_ms"] = round(statistics.median(latencies), 3)
            result["with_events_p99_ms"] = round(_percentile(latencies, 0.99), 3)
            history = [
                queries.recipient_deliveries(
                    recipient=f"user{rng.randrange(recipients)}@example.com", limit=50
                )
                for _ in range(args.samples)
            ]
            await timed_many(sa, history[:200])
            latencies = await timed_many(sa, history)
            result["recipient_history_p50_ms"] = round(statistics.median(latencies), 3)
            result["recipient_history_p99_ms"] = round(_percentile(latencies, 0.99), 3)
            raw = await timed_raw(
                conn,
                "SELECT * FROM email.deliveries WHERE recipient = $1 "
                "ORDER BY queued_at DESC, delivery_id DESC LIMIT 50",
                [f"user{rng.randrange(recipients)}@example.com" for _ in range(args.samples)],
            )
            result["recipient_history_raw_p99_ms"] = round(_percentile(raw, 0.99), 3)
            stuck = queries.pending_deliveries(older_than=timedelta(minutes=10))
            runs = await timed_many(sa, [stuck] * 5)
            result["stuck_ms"] = round(statistics.median(runs), 2)
            result["stuck_rows"] = len((await sa.execute(stuck)).all())
        # The same two reads timed by the server alone (EXPLAIN ANALYZE's execution time,
        # no per-node timing): what the query costs, without the client's and the
        # scheduler's share, which on a loaded machine dominate the client-side p99.
        for name, sql, values in (
            (
                "by_id",
                "SELECT * FROM email.deliveries WHERE delivery_id = $1",
                [f"bench-{rng.randint(1, n)}" for _ in range(args.samples // 2)],
            ),
            (
                "recipient_history",
                "SELECT * FROM email.deliveries WHERE recipient = $1 "
                "ORDER BY queued_at DESC, delivery_id DESC LIMIT 50",
                [f"user{rng.randrange(recipients)}@example.com" for _ in range(args.samples // 2)],
            ),
        ):
            prepared = await conn.prepare(f"EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) {sql}")
            server = []
            for value in values:
                plan = json.loads(await prepared.fetchval(value))
                server.append(float(plan[0]["Execution Time"]))
            result[f"{name}_server_p50_ms"] = round(statistics.median(server), 3)
            result[f"{name}_server_p99_ms"] = round(_percentile(server, 0.99), 3)
        plans["by_id"] = await explain(conn, "by_id", _sql(by_id[0]))
        plans["with_events"] = await explain(conn, "with_events", _sql(with_events[0]))
        plans["recipient_history"] = await explain(conn, "recipient_history", _sql(history[0]))
        plans["stuck"] = await explain(conn, "stuck", _sql(stuck))

        for name, sql in STATS:
            runs = []
            for _ in range(5):
                started = time.perf_counter()
                rows = await conn.fetch(sql)
                runs.append((time.perf_counter() - started) * 1000)
            result[f"{name}_ms"] = round(statistics.median(runs), 1)
            result[f"{name}_min_ms"] = round(min(runs), 1)
            result[f"{name}_deliveries"] = sum(row["total"] for row in rows)
        for days in (30, 90):  # what a window's statistics read from the rollups
            started = time.perf_counter()
            rows = await conn.fetchval(
                "SELECT count(*) FROM email.delivery_rollups "
                "WHERE hour >= now() - $1::int * interval '1 day'",
                days,
            )
            result[f"rollup_rows_{days}d"] = rows
            result[f"rollup_rows_{days}d_count_ms"] = round(
                (time.perf_counter() - started) * 1000, 1
            )
        log("statistics measured; adding next month's partition under load …")

        await partition_under_load(
            str(make_url(url).set(database=database).render_as_string(False)),
            conn,
            args.load_seconds,
            result,
        )
        log("pruning …")
        result["plans"] = plans
        await prune(conn, engine, datetime.fromisoformat(result["first_partition"]), args, result)
    finally:
        await engine.dispose()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    def log(message: str) -> None:
        if not args.quiet:
            print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr)

    result: dict[str, Any] = {
        "benchmark": "scale",
        "deliveries": args.deliveries,
        "months": args.months,
        "recipients": max(1000, args.deliveries // 10),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
    }
    async with server_url() as (url, source):
        admin = await asyncpg.connect(_dsn(url, make_url(url).database or "postgres"))
        database = f"email_delivery_scale_{os.getpid()}"
        await admin.execute(f'CREATE DATABASE "{database}"')
        try:
            result["server"] = (
                f"PostgreSQL {await admin.fetchval('SHOW server_version')} ({source}), "
                f"fsync {await admin.fetchval('SHOW fsync')}, synchronous_commit "
                f"{await admin.fetchval('SHOW synchronous_commit')}, shared_buffers "
                f"{await admin.fetchval('SHOW shared_buffers')}"
            )
            bench_url = make_url(url).set(database=database).render_as_string(False)
            await migrate.upgrade(bench_url)
            engine = create_async_engine(make_url(url).set(database=database), poolclass=NullPool)
            conn = await asyncpg.connect(_dsn(url, database))
            try:
                first = await monthly_partitions(conn, args.months)
                result["first_partition"] = first.isoformat()
                log(f"seeding {args.deliveries:,} deliveries from {first:%Y-%m-%d} …")
                started = time.perf_counter()
                span = f"(now() - timestamptz '{first.isoformat()}')"
                timings = await seed(
                    conn, args.deliveries, span=span, recipients=result["recipients"], log=log
                )
                result["events"] = timings.pop("events")
                started_maintain = time.perf_counter()
                report = await maintain(engine)
                timings["maintain_s"] = time.perf_counter() - started_maintain
                result["seed"] = {k: round(v, 1) for k, v in timings.items()}
                result["seed_total_s"] = round(time.perf_counter() - started, 1)
                result["maintain_after_seed"] = {
                    "rollup_hours_added": report.rollup_hours_added,
                    "default_partition_rows": report.default_partition_rows,
                }
                log(f"seeded in {result['seed_total_s']} s; rollups current")
                result["sizes"] = await sizes(conn)
                result["seq_scan_deliveries_s"] = await _timed_scalar(
                    conn, "SELECT count(*) FROM email.deliveries"
                )
                await measure(url, database, conn, args, result, log)
            finally:
                await conn.close()
                await engine.dispose()
        finally:
            if not args.keep:
                await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            await admin.close()
    result["load_average_1m_after"] = round(os.getloadavg()[0], 2)
    result["targets"] = {
        key: {
            "target": target,
            "measured": result[key],
            "met": result[key] >= target if key.endswith("_per_s") else result[key] < target,
        }
        for key, target in TARGETS.items()
    }
    return result


async def _timed_scalar(conn: asyncpg.Connection, sql: str) -> float:
    started = time.perf_counter()
    await conn.fetchval(sql)
    return round(time.perf_counter() - started, 2)


def table(r: dict[str, Any]) -> str:
    s = r["sizes"]
    rows = [
        ("server", f"{r['server']}; {r['machine']}"),
        (
            "data",
            f"{r['deliveries']:,} deliveries ({r['recipients']:,} recipients), "
            f"{r['events']:,} events in {s['event_partitions']} partitions "
            f"({r['months']} months from {r['first_partition'][:10]}, default, ahead)",
        ),
        (
            "seed",
            ", ".join(f"{k.removesuffix('_s')} {v} s" for k, v in r["seed"].items())
            + f"; total {r['seed_total_s']} s",
        ),
        (
            "email.deliveries",
            f"heap {s['deliveries_heap_mb']:,} MB + indexes {s['deliveries_indexes_mb']:,} MB "
            "(" + ", ".join(f"{k} {v:,}" for k, v in s["deliveries_index_mb"].items()) + ")",
        ),
        (
            "email.delivery_events",
            f"heap {s['events_heap_mb']:,} MB + indexes {s['events_indexes_mb']:,} MB "
            "(" + ", ".join(f"{k} {v:,}" for k, v in s["events_index_mb"].items()) + ")",
        ),
        (
            "rollups / database",
            f"{s['rollups_total_mb']} MB ({s['rollup_rows']:,} rows) / {s['database_mb']:,} MB",
        ),
        ("seq scan of deliveries", f"{r['seq_scan_deliveries_s']} s"),
        (
            "server time p50 / p99: by id, history",
            f"{r['by_id_server_p50_ms']} / {r['by_id_server_p99_ms']} ms, "
            f"{r['recipient_history_server_p50_ms']} / "
            f"{r['recipient_history_server_p99_ms']} ms",
        ),
        (
            "by id p50 / p99",
            f"{r['by_id_p50_ms']} / {r['by_id_p99_ms']} ms "
            f"(raw asyncpg p99 {r['by_id_raw_p99_ms']})",
        ),
        ("by id + events p50 / p99", f"{r['with_events_p50_ms']} / {r['with_events_p99_ms']} ms"),
        (
            "recipient history (50) p50 / p99",
            f"{r['recipient_history_p50_ms']} / {r['recipient_history_p99_ms']} ms "
            f"(raw asyncpg p99 {r['recipient_history_raw_p99_ms']})",
        ),
        ("stuck (> 10 min, 100 rows)", f"{r['stuck_ms']} ms"),
    ]
    for name, _ in STATS:
        rows.append(
            (
                name.replace("_", " "),
                f"{r[name + '_ms']} ms (min {r[name + '_min_ms']}; "
                f"{r[name + '_deliveries']:,} deliveries)",
            )
        )
    rows.append(
        (
            "rollup rows read (30 d / 90 d)",
            f"{r['rollup_rows_30d']:,} / {r['rollup_rows_90d']:,} "
            f"(count(*): {r['rollup_rows_30d_count_ms']} / {r['rollup_rows_90d_count_ms']} ms)",
        )
    )
    p = r["prune"]
    rows += [
        (
            "add next month's partition",
            f"{r['partition_add_ms']} ms ({', '.join(r['partition_created'])}) under "
            f"{r['load_lifecycles_per_s']} lifecycles/s; lifecycle p50/p99 "
            f"{r['load_lifecycle_p50_ms']}/{r['load_lifecycle_p99_ms']} ms, worst "
            f"{r['load_lifecycle_max_outside_ms']} ms otherwise, "
            f"{r['load_lifecycle_max_during_ms']} ms during the DDL",
        ),
        (
            "retention",
            f"{r['prune_deleted_deliveries']:,} deliveries + {r['prune_deleted_events']:,} "
            f"events ({r['prune_dropped_events']:,} in {len(r['prune_dropped_partitions'])} "
            f"partitions dropped in {r['prune_partition_drop_s']} s, "
            f"{p['deleted_events']:,} row by row) in {r['prune_elapsed_s']} s = "
            f"{r['prune_deliveries_per_s']:,} deliveries/s; {p['batches']} batches, "
            f"longest statement {r['prune_longest_statement_s']} s",
        ),
        ("VACUUM deliveries after it", f"{r['vacuum_deliveries_after_prune_s']} s"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    lines.append("")
    for key, check in r["targets"].items():
        mark = "met" if check["met"] else "MISSED"
        lines.append(f"target {key}: {check['measured']} vs {check['target']} -> {mark}")
    lines.append(f"load average (1 min) after the run: {r['load_average_1m_after']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--deliveries", type=int, default=10_000_000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--load-seconds", type=float, default=10.0)
    parser.add_argument("--keep", action="store_true", help="keep the database (DATABASE_URL)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    document = json.dumps(result, indent=2, default=str)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"scale_{args.deliveries}.json").write_text(document + "\n", encoding="utf-8")
    print(document if args.json else table(result))


if __name__ == "__main__":
    main()
