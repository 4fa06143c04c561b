"""Schema-cost benchmark: what one lifecycle costs the server before and after revision 0007.

    .venv/bin/python benchmarks/schema_cost.py [--n 20000] [--tasks 16] [--connections 8]
                                               [--rounds 4] [--json]

The same unit of work as ``peers.py`` (idempotent enqueue -> claim -> mark sent, --tasks
concurrent tasks over --connections connections) through ``DeliveryTracker``, in one run,
in alternating rounds, on two scratch databases of one server:

- ``0006 per-call``: the schema as revision 0006 left it (six btree indexes on
  ``deliveries``, no batch functions);
- ``head per-call``: the head schema (the index diet of revision 0007);
- ``head group-commit``: the head schema with ``DeliveryTracker(group_commit=True)``.

Per variant: jobs/s (median of rounds), WAL bytes per job, server and client CPU µs per job
(``/proc``, as ``peers.py``; server "n/a" unless the server runs here), and from
``pg_stat_user_tables`` of ``email.deliveries``: updates per job and the share of them that
were HOT, with the table's index count. Each round ends by closing the tracker's
connections, which flushes their statistics (pg_stat_statements is not assumed: it needs
``shared_preload_libraries``). Without ``DATABASE_URL`` it starts the embedded PostgreSQL 18
with fsync on.
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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from lifecycle import LEASE, database, drive
from peers import ServerCpu, client_cpu, dsn_of
from sqlalchemy.engine import make_url

from email_delivery import DeliveryTracker, make_engine, migrate

WORKFLOW = "verification-code"
VARIANTS = (("0006 per-call", "0006", False), ("head per-call", "head", False),
            ("head group-commit", "head", True))  # fmt: skip


@dataclass
class Totals:
    rates: list[float] = field(default_factory=list)
    jobs: int = 0
    wal: int = 0
    server: float | None = 0.0
    client: float = 0.0
    updates: int = 0
    hot: int = 0
    indexes: int = 0

    def result(self) -> dict[str, Any]:
        return {
            "jobs_per_s": round(statistics.median(self.rates), 1),
            "jobs_per_s_rounds": [round(r, 1) for r in self.rates],
            "wal_bytes_per_job": round(self.wal / self.jobs),
            "server_cpu_us_per_job": None
            if self.server is None
            else round(self.server / self.jobs * 1e6),
            "client_cpu_us_per_job": round(self.client / self.jobs * 1e6),
            "updates_per_job": round(self.updates / self.jobs, 2),
            "hot_update_pct": round(100 * self.hot / self.updates, 1) if self.updates else None,
            "deliveries_indexes": self.indexes,
        }


@asynccontextmanager
async def scratch(url: str, name: str, revision: str) -> AsyncIterator[str]:
    admin = await asyncpg.connect(dsn_of(url))
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        scratch_url = make_url(url).set(database=name).render_as_string(hide_password=False)
        await migrate.upgrade(scratch_url, revision)
        yield scratch_url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def table_stats(conn: asyncpg.Connection) -> tuple[int, int]:
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    row = await conn.fetchrow(
        "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
        "WHERE schemaname = 'email' AND relname = 'deliveries'"
    )
    return int(row[0]), int(row[1])


async def one_round(
    url: str, group: bool, n: int, args: argparse.Namespace, prefix: str,
    monitor: asyncpg.Connection, server: ServerCpu | None, totals: Totals | None,
) -> None:  # fmt: skip
    conn = await asyncpg.connect(dsn_of(url))
    try:
        await conn.execute(
            "TRUNCATE email.deliveries, email.delivery_attempts, email.delivery_outcomes, "
            "email.outcome_events, email.delivery_events CASCADE"
        )
        await monitor.execute("CHECKPOINT")
        updates_before, hot_before = await table_stats(conn)
        engine = make_engine(url, pool_size=args.connections, max_overflow=0)
        tracker = DeliveryTracker(engine, group_commit=group)
        lsn = await monitor.fetchval("SELECT pg_current_wal_insert_lsn()::text")
        server_before = server.seconds() if server else 0.0
        client_before = client_cpu()

        async def job(i: int) -> None:
            did = f"{prefix}-{i}"
            await tracker.enqueue(did, workflow=WORKFLOW, recipient=f"u{i % 997}@example.com")
            claim = await tracker.claim(did, lease=LEASE)
            if claim is None:
                raise RuntimeError(f"claim of {did} lost")
            await tracker.mark_sent(did, attempt=claim.attempt)

        started = time.perf_counter()
        await drive(list(range(n)), args.tasks, job)  # type: ignore[arg-type]
        elapsed = time.perf_counter() - started
        client_used = client_cpu() - client_before
        server_used = server.seconds() - server_before if server else None
        wal = await monitor.fetchval(
            "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1::text::pg_lsn)::bigint", lsn
        )
        await tracker.aclose()
        await engine.dispose()  # the backends exit and flush their table statistics
        await asyncio.sleep(0.5)
        updates_after, hot_after = await table_stats(conn)
        sent = await conn.fetchval("SELECT count(*) FROM email.deliveries WHERE status = 'sent'")
        if sent != n:
            raise RuntimeError(f"{sent} of {n} deliveries sent")
        indexes = await conn.fetchval(
            "SELECT count(*) FROM pg_index WHERE indrelid = 'email.deliveries'::regclass"
        )
    finally:
        await conn.close()
    if totals is None:
        return
    totals.rates.append(n / elapsed)
    totals.jobs += n
    totals.wal += wal
    totals.client += client_used
    totals.server = (
        None if server_used is None or totals.server is None else totals.server + server_used
    )
    totals.updates += updates_after - updates_before
    totals.hot += hot_after - hot_before
    totals.indexes = indexes


async def run(args: argparse.Namespace) -> dict[str, Any]:
    per_round = max(1, args.n // args.rounds)
    async with (
        database() as (url, source),
        scratch(url, f"email_cost_0006_{os.getpid()}", "0006") as before,
        scratch(url, f"email_cost_head_{os.getpid()}", args.after) as after,
    ):
        urls = {"0006": before, "head": after}
        monitor = await asyncpg.connect(dsn_of(url))
        try:
            info = await monitor.fetchrow(
                "SELECT current_setting('server_version') AS version,"
                " current_setting('fsync') AS fsync,"
                " current_setting('synchronous_commit') AS synchronous_commit"
            )
            server = await ServerCpu.find(monitor)
            totals = {name: Totals() for name, _, _ in VARIANTS}
            for _name, revision, group in VARIANTS:  # warm-up
                await one_round(urls[revision], group, 200, args, "warm", monitor, None, None)
            for r in range(args.rounds):
                order = VARIANTS[r % 3 :] + VARIANTS[: r % 3]
                for name, revision, group in order:
                    await one_round(
                        urls[revision], group, per_round, args, f"r{r}", monitor, server,
                        totals[name],
                    )  # fmt: skip
                if not args.json:
                    print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
        finally:
            await monitor.close()
    measured = {name: totals[name].result() for name, _, _ in VARIANTS}
    results = {name.replace("head", args.after): measured[name] for name, _, _ in VARIANTS}
    return {
        "benchmark": "schema_cost",
        "n": per_round * args.rounds,
        "tasks": args.tasks,
        "connections": args.connections,
        "rounds": args.rounds,
        "server": f"PostgreSQL {info['version']} ({source}), fsync={info['fsync']}, "
        f"synchronous_commit={info['synchronous_commit']}",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}",
        "variants": results,
        "head_vs_0006": round(
            measured["head per-call"]["jobs_per_s"] / measured["0006 per-call"]["jobs_per_s"], 3
        ),
        "group_vs_per_call": round(
            measured["head group-commit"]["jobs_per_s"] / measured["head per-call"]["jobs_per_s"],
            3,
        ),
    }


def print_table(report: dict[str, Any]) -> None:
    print(
        f"schema cost: {report['n']} jobs per variant (enqueue -> claim -> sent), "
        f"{report['tasks']} tasks over {report['connections']} connections, "
        f"{report['rounds']} alternating rounds"
    )
    print(f"server:  {report['server']}\nmachine: {report['machine']}\n")
    header = ("variant", "jobs/s", "WAL B/job", "server CPU µs/job", "client CPU µs/job",
              "updates/job", "HOT %", "indexes")  # fmt: skip
    rows = [
        (
            name,
            f"{r['jobs_per_s']:,.0f}",
            f"{r['wal_bytes_per_job']:,}",
            "n/a" if r["server_cpu_us_per_job"] is None else f"{r['server_cpu_us_per_job']:,}",
            f"{r['client_cpu_us_per_job']:,}",
            f"{r['updates_per_job']}",
            "n/a" if r["hot_update_pct"] is None else f"{r['hot_update_pct']}",
            str(r["deliveries_indexes"]),
        )
        for name, r in report["variants"].items()
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    print(
        f"\njobs/s ratios: head_vs_0006 {report['head_vs_0006']:.3f}, "
        f"group_vs_per_call {report['group_vs_per_call']:.3f}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20_000, help="jobs per variant")
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--after",
        default="head",
        help="the revision compared with 0006 (e.g. 0007: the index diet without 0008's policy)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = asyncio.run(run(args))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)


if __name__ == "__main__":
    main()
