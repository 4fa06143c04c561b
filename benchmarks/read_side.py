"""Read-side benchmark: queries, statistics and retention on 1,000,000 deliveries.

    .venv/bin/python benchmarks/read_side.py [--deliveries 1000000] [--samples 2000] [--json]

Without ``DATABASE_URL`` it starts the embedded PostgreSQL 18 with fsync and synchronous
commit on (``embedded_server(durable=True)``); with it, it uses that server. Either way it
creates a scratch database (the URL's role must be a superuser: seeding turns triggers off),
migrates it to head and drops it at the end.

Seeding, in seconds rather than minutes (``_seed.py``, shared with ``scale.py``): the
indexes and keys of both tables are dropped, deliveries and events are generated
server-side by ``INSERT … SELECT`` over ``generate_series`` with
``session_replication_role = replica`` (no audit or purge trigger: the events are generated
consistently instead, 1 + 2 x attempts per delivery, about 4 on average), the indexes are
rebuilt from their exact definitions (one per partition of the audit log, attached to the
parent's) and ``VACUUM ANALYZE`` runs. Deliveries span 30 days over three workflows and
100,000 recipients: 93 % sent, 3 % failed, 2 % dead_letter, 2 % in flight.

Measured (each query's ``EXPLAIN (ANALYZE, BUFFERS)`` goes to ``benchmarks/results/``):
by-id and recipient history latency through the package's statement builders on an async
SQLAlchemy engine (asyncpg); statistics for 24 hours and 30 days; then ``retention.prune``
deleting the oldest 10 days of sent deliveries (about a third of the table) with their
events: throughput and the longest single statement.
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
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import _seed
import asyncpg
from sqlalchemy import Select
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from email_delivery import health, maintenance, migrate, queries, retention
from email_delivery.embedded import embedded_server
from email_delivery.urls import async_url

RESULTS = Path(__file__).resolve().parent / "results"
RECIPIENTS = 100_000
TARGETS = {
    "by_id_p99_ms": 1.0,
    "recipient_history_p99_ms": 2.0,
    "stats_24h_ms": 300.0,
    "prune_deliveries_per_s": 50_000.0,
    "prune_longest_statement_s": 1.0,
}


@contextlib.asynccontextmanager
async def server_url() -> AsyncIterator[str]:
    if os.environ.get("DATABASE_URL"):
        yield str(async_url(os.environ["DATABASE_URL"]))
        return
    with embedded_server(durable=True) as url:
        yield url


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


async def seed(conn: asyncpg.Connection, n: int, log: Any) -> dict[str, float]:
    timings = await _seed.seed(conn, n, span="interval '30 days'", recipients=RECIPIENTS, log=log)
    timings.pop("events")
    return {key: float(value) for key, value in timings.items()}


async def explain(conn: asyncpg.Connection, name: str, statement: Select[Any]) -> str:
    return await explain_sql(conn, name, _sql(statement))


async def explain_sql(conn: asyncpg.Connection, name: str, sql: str) -> str:
    plan = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")
    text = "\n".join(row[0] for row in plan)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.txt").write_text(f"{sql}\n\n{text}\n", encoding="utf-8")
    return text


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
    """The same SQL as a prepared asyncpg statement: the floor without SQLAlchemy."""
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


async def run(args: argparse.Namespace) -> dict[str, Any]:
    log = (lambda message: print(message, file=sys.stderr)) if not args.quiet else (lambda m: None)
    rng = random.Random(7)
    result: dict[str, Any] = {
        "deliveries": args.deliveries,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
    }
    async with server_url() as url:
        admin = await asyncpg.connect(_dsn(url, make_url(url).database or "postgres"))
        database = f"email_delivery_bench_{os.getpid()}"
        await admin.execute(f'CREATE DATABASE "{database}"')
        try:
            result["server"] = await admin.fetchval("SHOW server_version")
            result["fsync"] = await admin.fetchval("SHOW fsync")
            bench_url = str(
                make_url(url).set(database=database).render_as_string(hide_password=False)
            )
            await migrate.upgrade(bench_url)
            conn = await asyncpg.connect(_dsn(url, database))
            try:
                log(f"seeding {args.deliveries:,} deliveries …")
                result["seed"] = await seed(conn, args.deliveries, log)
                result["events"] = await conn.fetchval("SELECT count(*) FROM email.delivery_events")
                result["table_mb"] = round(
                    await conn.fetchval(
                        "SELECT (pg_total_relation_size('email.deliveries') "
                        "+ pg_total_relation_size('email.delivery_events')) / 1048576.0::float8"
                    ),
                    1,
                )
                await measure(url, database, conn, args, rng, result, log)
            finally:
                await conn.close()
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            await admin.close()
    return result


async def measure(
    url: str,
    database: str,
    conn: asyncpg.Connection,
    args: argparse.Namespace,
    rng: random.Random,
    result: dict[str, Any],
    log: Any,
) -> None:
    n = args.deliveries
    now = datetime.now(UTC)
    engine = create_async_engine(make_url(url).set(database=database), poolclass=NullPool)
    plans: dict[str, str] = {}
    try:
        # As in production: the scheduler's maintain keeps partitions ahead and the hourly
        # rollups current (the seed bypassed the triggers, so this first run rolls up all).
        started = time.perf_counter()
        await maintenance.maintain(engine)
        result["first_maintain_s"] = round(time.perf_counter() - started, 2)
        log(f"  first maintain (rollups of every hour) in {result['first_maintain_s']} s")
        async with engine.connect() as sa:
            by_id = [
                queries.delivery(delivery_id=f"bench-{rng.randint(1, n)}")
                for _ in range(args.samples)
            ]
            await timed_many(sa, by_id[:200])  # warm the statement cache and buffers
            latencies = await timed_many(sa, by_id)
            result["by_id_p50_ms"] = round(statistics.median(latencies), 3)
            result["by_id_p99_ms"] = round(_percentile(latencies, 0.99), 3)
            ids = [f"bench-{rng.randint(1, n)}" for _ in range(args.samples)]
            raw = await timed_raw(
                conn, "SELECT * FROM email.deliveries WHERE delivery_id = $1", ids
            )
            result["by_id_raw_asyncpg_p50_ms"] = round(statistics.median(raw), 3)
            result["by_id_raw_asyncpg_p99_ms"] = round(_percentile(raw, 0.99), 3)
            history_raw = await timed_raw(
                conn,
                "SELECT * FROM email.deliveries WHERE recipient = $1 "
                "ORDER BY queued_at DESC, delivery_id DESC LIMIT 50",
                [f"user{rng.randrange(RECIPIENTS)}@example.com" for _ in range(args.samples)],
            )
            result["recipient_history_raw_asyncpg_p99_ms"] = round(
                _percentile(history_raw, 0.99), 3
            )
            with_events = [
                queries.delivery_with_events(delivery_id=f"bench-{rng.randint(1, n)}")
                for _ in range(args.samples)
            ]
            latencies = await timed_many(sa, with_events)
            result["with_events_p50_ms"] = round(statistics.median(latencies), 3)
            result["with_events_p99_ms"] = round(_percentile(latencies, 0.99), 3)

            history = [
                queries.recipient_deliveries(
                    recipient=f"user{rng.randrange(RECIPIENTS)}@example.com", limit=50
                )
                for _ in range(args.samples)
            ]
            await timed_many(sa, history[:200])
            latencies = await timed_many(sa, history)
            result["recipient_history_p50_ms"] = round(statistics.median(latencies), 3)
            result["recipient_history_p99_ms"] = round(_percentile(latencies, 0.99), 3)

            for name, since, bucket in (
                ("stats_24h", timedelta(hours=24), None),
                ("stats_24h_hourly", timedelta(hours=24), "hour"),
                ("stats_30d", timedelta(days=30), None),
                ("stats_30d_daily", timedelta(days=30), "day"),
            ):
                statement = queries.workflow_stats(since=now - since, bucket=bucket)
                runs = await timed_many(sa, [statement] * (5 if "24h" in name else 2))
                result[f"{name}_ms"] = round(min(runs), 1)
                plans[name] = await explain(conn, name, statement)
            stuck = queries.pending_deliveries(older_than=timedelta(minutes=10))
            runs = await timed_many(sa, [stuck] * 5)
            result["stuck_ms"] = round(min(runs), 2)
            plans["stuck"] = await explain(conn, "stuck", stuck)
        # email-delivery health: every check in one round trip (the on-call path).
        health_runs = []
        for _ in range(5):
            started = time.perf_counter()
            await health.health(engine)
            health_runs.append((time.perf_counter() - started) * 1000)
        result["health_ms"] = round(min(health_runs), 2)
        result["health_max_ms"] = round(max(health_runs), 2)
        plans["health"] = await explain_sql(conn, "health", "SELECT * FROM email.delivery_health")
        plans["by_id"] = await explain(conn, "by_id", by_id[0])
        plans["with_events"] = await explain(conn, "with_events", with_events[0])
        plans["recipient_history"] = await explain(conn, "recipient_history", history[0])

        log("pruning the oldest 10 days of sent deliveries …")
        expected = await conn.fetchval(
            "SELECT count(*) FROM email.deliveries WHERE status = 'sent' "
            "AND queued_at < now() - interval '20 days'"
        )
        report = await retention.prune(
            engine,
            older_than=timedelta(days=20),
            keep_failed_for=timedelta(days=365),
            batch_size=args.batch_size,
        )
        result["prune"] = report.as_dict()
        result["prune_expected_deliveries"] = expected
        result["prune_deliveries_per_s"] = round(report.deleted_deliveries / report.elapsed_s)
        result["prune_events_per_s"] = round(report.deleted_events / report.elapsed_s)
        result["prune_longest_statement_s"] = round(report.longest_statement_s, 3)
    finally:
        await engine.dispose()
    result["load_average_1m_after"] = round(os.getloadavg()[0], 2)
    result["plans"] = {
        name: next((line.strip() for line in text.splitlines() if "Execution Time" in line), "")
        for name, text in plans.items()
    }
    result["targets"] = {
        key: {
            "target": target,
            "measured": result[key],
            "met": result[key] >= target if key.endswith("_per_s") else result[key] < target,
        }
        for key, target in TARGETS.items()
    }


def table(result: dict[str, Any]) -> str:
    rows = [
        ("server", f"PostgreSQL {result['server']} (fsync {result['fsync']}), {result['machine']}"),
        (
            "data",
            f"{result['deliveries']:,} deliveries, {result['events']:,} events, "
            f"{result['table_mb']} MB with indexes",
        ),
        ("seed", ", ".join(f"{k.removesuffix('_s')} {v:.1f} s" for k, v in result["seed"].items())),
        ("by id p50 / p99", f"{result['by_id_p50_ms']} / {result['by_id_p99_ms']} ms"),
        (
            "by id, raw asyncpg p50 / p99",
            f"{result['by_id_raw_asyncpg_p50_ms']} / {result['by_id_raw_asyncpg_p99_ms']} ms",
        ),
        (
            "by id + events p50 / p99",
            f"{result['with_events_p50_ms']} / {result['with_events_p99_ms']} ms",
        ),
        (
            "recipient history (50) p50 / p99",
            f"{result['recipient_history_p50_ms']} / {result['recipient_history_p99_ms']} ms",
        ),
        ("recipient history, raw p99", f"{result['recipient_history_raw_asyncpg_p99_ms']} ms"),
        ("stats 24 h / hourly", f"{result['stats_24h_ms']} / {result['stats_24h_hourly_ms']} ms"),
        ("stats 30 d / daily", f"{result['stats_30d_ms']} / {result['stats_30d_daily_ms']} ms"),
        ("stuck (> 10 min)", f"{result['stuck_ms']} ms"),
        ("health (every check)", f"{result['health_ms']} ms (max {result['health_max_ms']} ms)"),
        (
            "prune",
            f"{result['prune']['deleted_deliveries']:,} deliveries + "
            f"{result['prune']['deleted_events']:,} events in {result['prune']['elapsed_s']:.2f} s "
            f"= {result['prune_deliveries_per_s']:,} deliveries/s, "
            f"{result['prune']['batches']} batches, longest statement "
            f"{result['prune_longest_statement_s']} s",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    lines.append("")
    for key, check in result["targets"].items():
        mark = "met" if check["met"] else "MISSED"
        lines.append(f"target {key}: {check['measured']} vs {check['target']} -> {mark}")
    lines.append(f"load average (1 min) after the run: {result['load_average_1m_after']}")
    lines.append(f"plans: {RESULTS}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deliveries", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    document = json.dumps(result, indent=2, default=str)
    (RESULTS / "read_side.json").write_text(document + "\n", encoding="utf-8")
    print(document if args.json else table(result))


if __name__ == "__main__":
    main()
