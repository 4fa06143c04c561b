"""Retention benchmark: ``retention.prune`` on copies of one seeded database, round after round.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python benchmarks/retention.py --template NAME [--deliveries 10000000]
        [--rounds 2] [--batch-size 5000] [--keep-template] [--json]

Needs ``DATABASE_URL`` (a superuser: seeding turns triggers off, copies use CREATE DATABASE
… TEMPLATE). The first run with a ``--template`` name that does not exist creates it: it is
migrated (to the head of the ``email_delivery`` being imported), given ``--months`` monthly
partitions and seeded exactly as ``scale.py`` does (``_seed.py``; 93 % sent, ~4 events per
delivery, spread evenly from the first partition's start to now), then ``maintain`` and
``VACUUM ANALYZE``. Each round copies it (``CREATE DATABASE … TEMPLATE``, not timed),
upgrades the copy to head (a no-op unless the template is older), runs ``CHECKPOINT``, and
then measures what ``scale.py`` measures for retention: the expired partitions dropped
whole and ``retention.prune`` deleting the oldest two and a half months of sent deliveries
with their events; deliveries/s over both, and the longest single statement.

Several rounds (and the template kept with ``--keep-template``) let two versions of the
package be compared on the same data in alternating rounds: run the old one with
``PYTHONPATH=<its checkout>/src``; the template is seeded once, at the older head, and the
newer version upgrades each copy first. docs/benchmarks.md has the commands and figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
from _seed import seed
from scale import monthly_partitions, prune
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

import email_delivery
from email_delivery import migrate
from email_delivery.maintenance import maintain

RESULTS = Path(__file__).resolve().parent / "results"


def _dsn(url: str, database: str) -> str:
    return (
        make_url(url)
        .set(drivername="postgresql", database=database)
        .render_as_string(hide_password=False)
    )


def _async(url: str, database: str) -> str:
    return (
        make_url(url)
        .set(drivername="postgresql+asyncpg", database=database)
        .render_as_string(hide_password=False)
    )


async def _seed_template(url: str, template: str, args: argparse.Namespace) -> dict[str, Any]:
    admin = await asyncpg.connect(_dsn(url, make_url(url).database or "postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{template}"')
    finally:
        await admin.close()
    await migrate.upgrade(_async(url, template))
    conn = await asyncpg.connect(_dsn(url, template))
    try:
        first = await monthly_partitions(conn, args.months)
        span = f"(now() - timestamptz '{first.isoformat()}')"
        timings = await seed(
            conn,
            args.deliveries,
            span=span,
            recipients=max(1000, args.deliveries // 10),
            log=lambda message: print(message, file=sys.stderr),
        )
        engine = create_async_engine(_async(url, template), poolclass=NullPool)
        try:
            await maintain(engine)
        finally:
            await engine.dispose()
        await conn.execute("VACUUM ANALYZE")
        await conn.execute(
            "CREATE TABLE public.retention_benchmark AS "
            "SELECT $1::timestamptz AS first_partition, $2::bigint AS deliveries",
            first,
            args.deliveries,
        )
        return {k: round(v, 1) for k, v in timings.items() if k != "events"}
    finally:
        await conn.close()


async def _round(url: str, template: str, copy: str, batch_size: int) -> dict[str, Any]:
    admin = await asyncpg.connect(_dsn(url, make_url(url).database or "postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{copy}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{copy}" TEMPLATE "{template}"')
        try:
            await migrate.upgrade(_async(url, copy))
            conn = await asyncpg.connect(_dsn(url, copy))
            engine = create_async_engine(_async(url, copy), poolclass=NullPool)
            try:
                first = await conn.fetchval(
                    "SELECT first_partition FROM public.retention_benchmark"
                )
                revision = await conn.fetchval("SELECT version_num FROM email.alembic_version")
                await conn.execute("CHECKPOINT")
                result: dict[str, Any] = {"plans": {}, "revision": revision}
                await prune(conn, engine, first, argparse.Namespace(batch_size=batch_size), result)
                result.pop("plans")
                return result
            finally:
                await engine.dispose()
                await conn.close()
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{copy}" WITH (FORCE)')
    finally:
        await admin.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("DATABASE_URL is required (a superuser's)")
    admin = await asyncpg.connect(_dsn(url, make_url(url).database or "postgres"))
    try:
        exists = await admin.fetchval(
            "SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", args.template
        )
        server = (
            f"PostgreSQL {await admin.fetchval('SHOW server_version')}, fsync "
            f"{await admin.fetchval('SHOW fsync')}, synchronous_commit "
            f"{await admin.fetchval('SHOW synchronous_commit')}, shared_buffers "
            f"{await admin.fetchval('SHOW shared_buffers')}"
        )
    finally:
        await admin.close()
    result: dict[str, Any] = {
        "benchmark": "retention",
        "package": os.path.dirname(email_delivery.__file__),
        "server": server,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "template": args.template,
        "batch_size": args.batch_size,
    }
    if not exists:
        started = time.perf_counter()
        result["seed"] = await _seed_template(url, args.template, args)
        result["seed_total_s"] = round(time.perf_counter() - started, 1)
    conn = await asyncpg.connect(_dsn(url, args.template))
    try:
        result["deliveries"] = await conn.fetchval(
            "SELECT deliveries FROM public.retention_benchmark"
        )
    finally:
        await conn.close()
    rounds = []
    try:
        for number in range(args.rounds):
            copy = f"{args.template}_round_{os.getpid()}"
            outcome = await _round(url, args.template, copy, args.batch_size)
            rounds.append(
                {
                    "round": number + 1,
                    "revision": outcome["revision"],
                    "deleted_deliveries": outcome["prune_deleted_deliveries"],
                    "deleted_events": outcome["prune_deleted_events"],
                    "dropped_events": outcome["prune_dropped_events"],
                    "events_row_by_row": outcome["prune"]["deleted_events"],
                    "batches": outcome["prune"]["batches"],
                    "elapsed_s": outcome["prune_elapsed_s"],
                    "deliveries_per_s": outcome["prune_deliveries_per_s"],
                    "longest_statement_s": outcome["prune_longest_statement_s"],
                    "load_average_1m": round(os.getloadavg()[0], 2),
                }
            )
            if not args.quiet:
                print(f"round {number + 1}: {rounds[-1]}", file=sys.stderr)
    finally:
        if not args.keep_template:
            admin = await asyncpg.connect(_dsn(url, make_url(url).database or "postgres"))
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{args.template}" WITH (FORCE)')
            finally:
                await admin.close()
    result["rounds"] = rounds
    result["best_deliveries_per_s"] = max((r["deliveries_per_s"] for r in rounds), default=0)
    result["worst_longest_statement_s"] = max(
        (r["longest_statement_s"] for r in rounds), default=0.0
    )
    return result


def table(r: dict[str, Any]) -> str:
    lines = [
        f"server: {r['server']}; {r['machine']}",
        f"package: {r['package']}; template {r['template']} ({r['deliveries']:,} deliveries)",
        "| round | revision | deliveries | events (dropped / row by row) | batches "
        "| elapsed s | deliveries/s | longest statement s | load 1m |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for x in r["rounds"]:
        lines.append(
            f"| {x['round']} | {x['revision']} | {x['deleted_deliveries']:,} "
            f"| {x['deleted_events']:,} ({x['dropped_events']:,} / {x['events_row_by_row']:,}) "
            f"| {x['batches']} | {x['elapsed_s']} | {x['deliveries_per_s']:,} "
            f"| {x['longest_statement_s']} | {x['load_average_1m']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--template", required=True, help="the seeded database to copy")
    parser.add_argument("--deliveries", type=int, default=10_000_000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--keep-template", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    document = json.dumps(result, indent=2, default=str)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"retention_{result['deliveries']}.json").write_text(
        document + "\n", encoding="utf-8"
    )
    print(document if args.json else table(result))


if __name__ == "__main__":
    main()
