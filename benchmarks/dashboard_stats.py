"""Dashboard statistics before and after a revision, on the same data, in one run.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python benchmarks/dashboard_stats.py --before 0013 \\
        [--deliveries 1000000] [--days 100] [--runs 7] [--json]

Creates a scratch database, migrates it to ``--before`` (a revision number, or ``head``),
seeds ``--deliveries`` deliveries evenly over the last ``--days`` days (``_seed.py``, as
``read_side.py`` and ``scale.py`` do), runs ``maintain`` (the rollups current) and times
``email.delivery_stats`` over 30 and 90 days, total and daily (median of ``--runs`` calls
through asyncpg); then migrates to head, runs ``maintain`` again and times the same calls
on the same rows; then installs the ``--before`` revision's function beside the head one
(``email.delivery_stats_before``, from its frozen file) and times both in alternation, call
by call, so that other load on the machine weighs on both alike. It also checks that both
versions answer identically (30 and 90 days up to a fixed instant, every bucket).

The cost of the statistics follows the rollup rows a window reads more than the deliveries:
at 1 M deliveries over 100 days a workflow-hour holds about as many rollup rows as at 10 M
over 11 months (the table reports both counts). Without ``DATABASE_URL`` it uses the
embedded PostgreSQL 18 (fsync on). The database is dropped at the end (``--keep`` keeps
it, named by ``--database``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
from _seed import seed
from scale import _dsn, server_url
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from email_delivery import migrate
from email_delivery.maintenance import maintain

RESULTS = Path(__file__).resolve().parent / "results"
VERSIONS = Path(__file__).resolve().parent.parent / "alembic" / "versions"
STATS = (
    ("30d", "SELECT * FROM email.delivery_stats(now() - interval '30 days')"),
    (
        "30d_day",
        "SELECT * FROM email.delivery_stats(now() - interval '30 days', p_bucket => 'day')",
    ),
    ("90d", "SELECT * FROM email.delivery_stats(now() - interval '90 days')"),
    (
        "90d_day",
        "SELECT * FROM email.delivery_stats(now() - interval '90 days', p_bucket => 'day')",
    ),
    ("90d_day_view", "SELECT * FROM email.delivery_stats_daily"),
)


async def timed(conn: asyncpg.Connection, runs: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, sql in STATS:
        await conn.fetch(sql)  # warm
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            rows = await conn.fetch(sql)
            times.append((time.perf_counter() - started) * 1000)
        out[f"{name}_ms"] = round(statistics.median(times), 1)
        out[f"{name}_min_ms"] = round(min(times), 1)
        out[f"{name}_rows"] = len(rows)
        out[f"{name}_deliveries"] = sum(row["total"] for row in rows)
    return out


def frozen_stats(before: str) -> str:
    """``email.delivery_stats`` as revision ``before`` left it (the frozen file of the last
    revision up to it that wrote one), renamed ``email.delivery_stats_before``."""
    files = sorted(
        path
        for path in VERSIONS.glob("*/functions/delivery_stats.sql")
        if before == "head" or path.parent.parent.name <= before
    )
    return (
        files[-1]
        .read_text(encoding="utf-8")
        .replace("FUNCTION email.delivery_stats(", "FUNCTION email.delivery_stats_before(", 1)
    )


async def interleaved(conn: asyncpg.Connection, runs: int) -> dict[str, Any]:
    """The before and head functions on the same rows, call by call in alternation, so
    that the machine's other load weighs on both alike."""
    times: dict[str, list[float]] = {}
    for _ in range(runs):
        for name, sql in STATS[:4]:
            for version, statement in (
                ("before", sql.replace("email.delivery_stats(", "email.delivery_stats_before(")),
                ("head", sql),
            ):
                started = time.perf_counter()
                await conn.fetch(statement)
                times.setdefault(f"{name}_{version}", []).append(
                    (time.perf_counter() - started) * 1000
                )
    out: dict[str, Any] = {}
    for key, values in times.items():
        out[f"{key}_ms"] = round(statistics.median(values), 1)
        out[f"{key}_min_ms"] = round(min(values), 1)
    return out


async def snapshot(conn: asyncpg.Connection, until: Any) -> list[str]:
    """Every statistic of 30 and 90 days up to ``until`` (fixed, so that the clock does not
    move the windows), in every bucket, as text: before and after must agree."""
    out = []
    for days in (30, 90):
        for bucket in (None, "hour", "day"):
            rows = await conn.fetch(
                "SELECT * FROM email.delivery_stats($1::timestamptz - $2::int * interval '1 day', "
                "$1::timestamptz, $3)",
                until,
                days,
                bucket,
            )
            out.append(json.dumps([dict(r) for r in rows], default=str, sort_keys=True))
    return out


async def rollup_rows(conn: asyncpg.Connection) -> dict[str, Any]:
    out = {}
    for days in (30, 90):
        out[f"hourly_rows_{days}d"] = await conn.fetchval(
            "SELECT count(*) FROM email.delivery_rollups "
            "WHERE hour >= now() - $1::int * interval '1 day'",
            days,
        )
        if await conn.fetchval("SELECT to_regclass('email.delivery_rollups_daily') IS NOT NULL"):
            out[f"daily_rows_{days}d"] = await conn.fetchval(
                "SELECT count(*) FROM email.delivery_rollups_daily "
                "WHERE day >= now() - $1::int * interval '1 day'",
                days,
            )
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    def log(message: str) -> None:
        if not args.quiet:
            print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr)

    result: dict[str, Any] = {
        "benchmark": "dashboard_stats",
        "deliveries": args.deliveries,
        "days": args.days,
        "before": args.before,
        "runs": args.runs,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
    }
    async with server_url() as (url, source):
        admin = await asyncpg.connect(_dsn(url, make_url(url).database or "postgres"))
        database = args.database or f"email_delivery_dashboard_{os.getpid()}"
        await admin.execute(f'CREATE DATABASE "{database}"')
        try:
            result["server"] = (
                f"PostgreSQL {await admin.fetchval('SHOW server_version')} ({source}), "
                f"fsync {await admin.fetchval('SHOW fsync')}"
            )
            bench_url = make_url(url).set(database=database)
            await migrate.upgrade(bench_url.render_as_string(False), args.before)
            engine = create_async_engine(bench_url, poolclass=NullPool)
            conn = await asyncpg.connect(_dsn(url, database))
            try:
                log(f"seeding {args.deliveries:,} deliveries over {args.days} days …")
                await seed(
                    conn,
                    args.deliveries,
                    span=f"interval '{args.days} days'",
                    recipients=max(1000, args.deliveries // 10),
                    log=log,
                )
                started = time.perf_counter()
                await maintain(engine)
                result["maintain_before_s"] = round(time.perf_counter() - started, 2)
                result["rollups_before"] = await rollup_rows(conn)
                log(f"timing at {args.before} …")
                result["before_stats"] = await timed(conn, args.runs)
                until = await conn.fetchval("SELECT now() - interval '17 minutes'")
                before = await snapshot(conn, until)
                await engine.dispose()
                log("migrating to head …")
                started = time.perf_counter()
                await migrate.upgrade(bench_url.render_as_string(False))
                result["upgrade_s"] = round(time.perf_counter() - started, 2)
                started = time.perf_counter()
                await maintain(engine)
                result["maintain_after_s"] = round(time.perf_counter() - started, 2)
                result["rollups_after"] = await rollup_rows(conn)
                log("timing at head …")
                result["after_stats"] = await timed(conn, args.runs)
                # Then both functions in alternation, after the rollups' statistics are
                # current (autovacuum may not have analysed the new tier yet).
                await conn.execute(frozen_stats(args.before))
                await conn.execute(
                    "VACUUM ANALYZE email.delivery_rollups, email.delivery_rollups_daily"
                )
                log("timing both in alternation …")
                result["interleaved"] = await interleaved(conn, args.runs)
                result["identical_results"] = before == await snapshot(conn, until)
            finally:
                await conn.close()
                await engine.dispose()
        finally:
            if not args.keep:
                await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            await admin.close()
    result["load_average_1m_after"] = round(os.getloadavg()[0], 2)
    return result


def table(r: dict[str, Any]) -> str:
    b, a = r["before_stats"], r["after_stats"]
    lines = [
        f"{r['server']}; {r['machine']}",
        f"{r['deliveries']:,} deliveries over {r['days']} days; rollup rows at "
        f"{r['before']}: {r['rollups_before']}; at head: {r['rollups_after']}",
        f"maintain {r['maintain_before_s']} s at {r['before']}; upgrade {r['upgrade_s']} s, "
        f"maintain {r['maintain_after_s']} s at head",
        "",
        f"{'statistics':<14} {r['before'] + ' (ms)':>14} {'head (ms)':>12}  deliveries",
    ]
    for name, _ in STATS:
        lines.append(
            f"{name:<14} {b[name + '_ms']:>14} {a[name + '_ms']:>12}  {a[name + '_deliveries']:,}"
        )
    i = r["interleaved"]
    lines.append("")
    lines.append(f"in alternation, median (min) of {r['runs']} calls each:")
    for name, _ in STATS[:4]:
        lines.append(
            f"{name:<14} {i[name + '_before_ms']:>8} ({i[name + '_before_min_ms']})"
            f" {i[name + '_head_ms']:>8} ({i[name + '_head_min_ms']})"
        )
    lines.append("")
    lines.append(f"identical results before and after: {r['identical_results']}")
    lines.append(f"load average (1 min) after the run: {r['load_average_1m_after']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--before", default="head", help="revision number to time first")
    parser.add_argument("--deliveries", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=100)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--database", help="scratch database name (default: per process)")
    parser.add_argument("--keep", action="store_true", help="keep the database")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    document = json.dumps(result, indent=2, default=str)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"dashboard_stats_{args.deliveries}.json").write_text(document + "\n", "utf-8")
    print(document if args.json else table(result))


if __name__ == "__main__":
    main()
