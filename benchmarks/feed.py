"""Change-feed and webhook benchmark (issue 12).

    .venv/bin/python benchmarks/feed.py [--events 1000000] [--jobs 4000] [--rounds 3]
                                        [--messages 5000] [--tasks 16]
                                        [--baseline-src DIR] [--database-name NAME] [--json]

On a scratch database at head (of ``DATABASE_URL``'s server, else the embedded PostgreSQL 18
with fsync on):

1. **Feed read**: ``--events`` audit events (10 per transaction id, more on a young cluster),
   then read from the beginning to the end in pages of 1,000 through
   ``email_delivery.feed.page`` (one round trip per page, as a consumer does): events/s and
   milliseconds per page (median, p99). ``--events 0`` skips it.
2. **Lifecycle cost of a subscribed endpoint**: the same job (enqueue -> claim -> mark sent,
   ``DeliveryTracker``, ``--tasks`` concurrent over 8 connections) in alternating rounds:
   ``no endpoint``; ``endpoint + sender`` (one endpoint subscribed to every change, and
   ``email-delivery webhooks run`` running in **its own process**, sending to the local
   receiver, which runs in **a third process**); with ``--baseline-src DIR`` also
   ``endpoint + sender, baseline``: the same with the sender of another source tree (``DIR``
   holds its ``email_delivery`` package, e.g. ``git archive main src``), in the same run.
   Measured per round, by ``/proc`` (user + system time):

   - the lifecycle driver: jobs/s, its client CPU (this process) and its server CPU (its 8
     backends, by pid) per job, over the timed round;
   - the sender: its process's CPU and its backends' (found by matching its TCP connections
     to ``pg_stat_activity.client_port``), from just before the round until every change
     of the round has been delivered, per webhook message; the receiver's likewise.

   Reported (medians of the rounds): the lifecycle's own added CPU per job, (lifecycle CPU
   with the endpoint and the sender running - without) / without, and the machine's, with
   the sender's CPU per job (per message x messages per job) added. The server's background
   processes (WAL writer, checkpointer, autovacuum) are in neither; the whole server's CPU
   per job is reported beside them. A backend that ends mid-round is lost (counted).
3. **HTTP floor**: 3,000 POSTs of a message-sized body to the receiver through a bare
   ``aiohttp`` session (no signing, no database): client CPU per request, the floor under
   the sender's client CPU per message.
4. **Sender throughput**: ``--messages`` changes for one endpoint: messages built from the
   feed per second (``outbox.fan_out``), and messages sent, signed, to the local receiver and
   recorded, per second (``Sender.deliver``, concurrency 16). ``--messages 0`` skips it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
import psutil
from aiohttp import web
from lifecycle import LEASE, database, drive
from peers import ServerCpu, _stat, dsn_of
from schema_cost import scratch
from sqlalchemy.engine import make_url

from email_delivery import DeliveryTracker, feed, make_engine
from email_delivery.webhooks import outbox
from email_delivery.webhooks.sender import Sender

WORKFLOW = "verification-code"
PAGE = 1000
DEV = {"allow_insecure": True, "allow_private": True}
TICK = os.sysconf("SC_CLK_TCK")
PG_PORT = 5432


async def receiver() -> tuple[web.AppRunner, str, list[int]]:
    count = [0]

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        count[0] += 1
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hooks", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/hooks", count


async def feed_read(url: str, events: int) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn_of(url))
    try:
        await conn.execute(
            "TRUNCATE email.deliveries, email.delivery_attempts, email.delivery_outcomes, "
            "email.outcome_events, email.delivery_events CASCADE"
        )
        # Transaction ids below any snapshot's xmin, so that every row is readable at once:
        # 10 events per id, or more on a young cluster whose xmin is still low.
        xmin = await conn.fetchval("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
        base = min(1000, xmin // 2)
        per = max(10, -(-events // max(xmin - base - 1, 1)))
        chunk = 200_000
        started = time.perf_counter()
        for first in range(0, events, chunk):
            await conn.execute(
                "INSERT INTO email.delivery_events (delivery_id, status, attempt, xact_id) "
                "SELECT 'bench-' || g, 'queued', 0, $1 + g / $4 "
                "FROM generate_series($2::bigint, $3::bigint) AS g",
                base,
                first,
                min(first + chunk, events) - 1,
                per,
            )
        fill = time.perf_counter() - started
        await conn.execute("VACUUM ANALYZE email.delivery_events")
    finally:
        await conn.close()
    engine = make_engine(url, pool_size=1)
    try:
        cursor = feed.START
        await feed.page(engine, after=cursor, limit=PAGE)  # warm-up: connection, plan
        timings: list[float] = []
        read = 0
        started = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            page = await feed.page(engine, after=cursor, limit=PAGE)
            timings.append((time.perf_counter() - t0) * 1000)
            read += len(page.events)
            cursor = page.cursor
            if not page.full:
                break
        elapsed = time.perf_counter() - started
    finally:
        await engine.dispose()
    if read != events:
        raise RuntimeError(f"read {read} of {events} events")
    timings.sort()
    return {
        "events": events,
        "fill_s": round(fill, 1),
        "events_per_s": round(read / elapsed),
        "page_ms_median": round(statistics.median(timings), 2),
        "page_ms_p99": round(timings[int(len(timings) * 0.99) - 1], 2),
        "pages": len(timings),
        "events_per_transaction_id": per,
    }


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (``/proc/<pid>/stat``)."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / TICK


def _process_cpu(pid: int) -> float:
    try:
        return _cpu_seconds(pid)
    except (OSError, ValueError):
        return 0.0


@dataclass
class Sample:
    """CPU seconds at one moment: a client process and the server backends serving it."""

    client: float
    backends: dict[int, float]

    def minus(self, before: Sample) -> tuple[float, float, int]:
        """(client seconds, backend seconds, backends lost) since ``before``: a backend
        that appeared meanwhile counts from zero (its whole life is in the interval); one
        that ended meanwhile is lost (its last CPU is not readable) and counted."""
        server = sum(cpu - before.backends.get(pid, 0.0) for pid, cpu in self.backends.items())
        lost = len(set(before.backends) - set(self.backends))
        return self.client - before.client, server, lost


class Watch:
    """A client process (this one, the sender's, the receiver's) and its backends, found by
    matching the process's TCP connections to ``pg_stat_activity.client_port``."""

    def __init__(self, monitor: asyncpg.Connection, pid: int, backends: Sequence[int] = ()) -> None:
        self.monitor = monitor
        self.pid = pid
        self.fixed = list(backends)

    async def _backends(self) -> list[int]:
        if self.fixed:
            return self.fixed
        try:
            ports = [
                c.laddr.port
                for c in psutil.Process(self.pid).net_connections(kind="tcp")
                if c.raddr and c.raddr.port == PG_PORT
            ]
        except psutil.Error:
            return []
        rows = await self.monitor.fetch(
            "SELECT pid FROM pg_stat_activity WHERE client_port = ANY($1::int[]) "
            "AND backend_type = 'client backend'",
            ports,
        )
        return [row["pid"] for row in rows]

    async def sample(self) -> Sample:
        backends = {}
        for pid in await self._backends():
            with contextlib.suppress(OSError, ValueError):
                backends[pid] = _cpu_seconds(pid)
        client = time.process_time() if self.pid == os.getpid() else _process_cpu(self.pid)
        return Sample(client, backends)


async def lifecycle_round(
    url: str, jobs: int, tasks: int, prefix: str, monitor: asyncpg.Connection,
    others: dict[str, Watch], server: ServerCpu | None,
) -> dict[str, Any]:  # fmt: skip
    """One timed round of the lifecycle in this process; CPU of this process and of its
    backends over the round, and of the ``others`` (sender, receiver) over the same time."""
    engine = make_engine(url, pool_size=8, max_overflow=0)
    tracker = DeliveryTracker(engine)

    async def job(i: int) -> None:
        did = f"{prefix}-{i}"
        await tracker.enqueue(did, workflow=WORKFLOW, recipient=f"u{i % 997}@example.com")
        claim = await tracker.claim(did, lease=LEASE)
        if claim is None:
            raise RuntimeError(f"claim of {did} lost")
        await tracker.mark_sent(did, attempt=claim.attempt)

    try:
        # Open the pool's 8 connections first: their backends are the driver's server side.
        async with contextlib.AsyncExitStack() as stack:
            conns = [await stack.enter_async_context(engine.connect()) for _ in range(8)]
            pids = [
                (await c.exec_driver_sql("SELECT pg_backend_pid()")).scalar_one() for c in conns
            ]
            for c in conns:
                await c.rollback()
        driver = Watch(monitor, os.getpid(), pids)
        before = {"driver": await driver.sample()}
        before |= {name: await watch.sample() for name, watch in others.items()}
        server_before = server.seconds() if server else 0.0
        started = time.perf_counter()
        await drive(list(range(jobs)), tasks, job)  # type: ignore[arg-type]
        elapsed = time.perf_counter() - started
        server_used = server.seconds() - server_before if server else None
        after = {"driver": await driver.sample()}
        after |= {name: await watch.sample() for name, watch in others.items()}
    finally:
        await tracker.aclose()
        await engine.dispose()
    client, backends, lost = after["driver"].minus(before["driver"])
    result: dict[str, Any] = {
        "jobs_per_s": jobs / elapsed,
        "client_us_per_job": client / jobs * 1e6,
        "server_us_per_job": backends / jobs * 1e6,
        "whole_server_us_per_job": None if server_used is None else server_used / jobs * 1e6,
        "lost_backends": lost,
        "before": before,
    }
    for name in others:
        client, backends, lost = after[name].minus(before[name])
        result[f"{name}_during_round_us_per_job"] = (client + backends) / jobs * 1e6
    return result


@contextlib.asynccontextmanager
async def sender_process(url: str, source: str | None) -> AsyncIterator[int]:
    """``email-delivery webhooks run`` in its own process (``source``: a directory holding
    the ``email_delivery`` package to run instead of this checkout's: the baseline)."""
    env = dict(os.environ, DATABASE_URL=url)
    if source is not None:
        env["PYTHONPATH"] = source
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "email_delivery.cli", "webhooks", "run", "--interval", "0.1",
        "--timeout", "5", "--allow-insecure", "--allow-private", "--json",
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        await process.wait()


@contextlib.asynccontextmanager
async def receiver_process() -> AsyncIterator[tuple[int, str]]:
    """The local receiver (``feed.py --receive``) in its own process; its URL."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--receive", stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    hook_url = (await process.stdout.readline()).decode().strip()
    try:
        yield process.pid, hook_url
    finally:
        process.send_signal(signal.SIGTERM)
        await process.wait()


async def drained(conn: asyncpg.Connection, within: float = 600.0) -> int:
    """Wait until every event has its message and every message is delivered; their count."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        row = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM email.delivery_events) AS events, "
            "(SELECT count(*) FROM email.webhook_messages WHERE state = 'delivered') AS done, "
            "(SELECT count(*) FROM email.webhook_messages) AS messages"
        )
        if row["done"] == row["events"] == row["messages"]:
            return int(row["done"])
        await asyncio.sleep(0.05)
    raise RuntimeError(f"the sender did not drain in {within} s: {dict(row)}")


async def attempt_rows(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM email.webhook_attempts"))


async def lifecycle_cost(
    url: str, hook_url: str, receiver_pid: int, args: argparse.Namespace
) -> dict[str, Any]:
    owner = make_engine(url, pool_size=2, max_overflow=0)
    conn = await asyncpg.connect(dsn_of(url))
    server = await ServerCpu.find(conn)
    variants: dict[str, str | None] = {"no endpoint": None}
    if args.baseline_src:
        variants["endpoint + sender, baseline"] = args.baseline_src
    variants["endpoint + sender"] = ""
    rounds: dict[str, list[dict[str, Any]]] = {variant: [] for variant in variants}
    try:
        for round_number in range(args.rounds):
            for variant, source in variants.items():
                await conn.execute(
                    "TRUNCATE email.deliveries, email.delivery_attempts, email.delivery_outcomes, "
                    "email.outcome_events, email.delivery_events, email.webhook_endpoints "
                    "CASCADE"
                )
                await conn.execute("CHECKPOINT")
                prefix = f"r{round_number}-v{list(variants).index(variant)}"
                receiver = Watch(conn, receiver_pid)
                if source is None:
                    figures = await lifecycle_round(
                        url, args.jobs, args.tasks, prefix, conn, {"receiver": receiver}, server
                    )
                    rounds[variant].append(figures)
                    continue
                await outbox.add(owner, url=hook_url, **DEV)  # type: ignore[arg-type]
                async with sender_process(url, source or None) as sender_pid:
                    sender = Watch(conn, sender_pid)
                    await asyncio.sleep(1.0)  # started, connected, idle
                    others = {"sender": sender, "receiver": receiver}
                    figures = await lifecycle_round(
                        url, args.jobs, args.tasks, prefix, conn, others, server
                    )
                    messages = await drained(conn)
                    for name, watch in others.items():
                        client, backends, lost = (await watch.sample()).minus(
                            figures["before"][name]
                        )
                        figures[f"{name}_client_us_per_message"] = client / messages * 1e6
                        figures[f"{name}_server_us_per_message"] = backends / messages * 1e6
                        figures["lost_backends"] += lost
                    figures["messages_per_job"] = messages / args.jobs
                    figures["attempt_rows_per_message"] = await attempt_rows(conn) / messages
                rounds[variant].append(figures)
    finally:
        await conn.close()
        await owner.dispose()
    return summarise(rounds)


def _median(values: list[dict[str, Any]], key: str) -> float | None:
    found = [v[key] for v in values if v.get(key) is not None]
    return statistics.median(found) if found else None


def summarise(rounds: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians of the rounds per variant, and the added cost against ``no endpoint``:
    the lifecycle's own (its process and its backends) and the machine's (the sender's
    process and backends added, per job)."""
    result: dict[str, Any] = {}
    base = rounds["no endpoint"]
    base_cpu = (_median(base, "client_us_per_job") or 0) + (_median(base, "server_us_per_job") or 0)
    base_rate = _median(base, "jobs_per_s") or 0
    for variant, values in rounds.items():
        figures: dict[str, Any] = {
            key: round(value, 2)
            for key in (
                "jobs_per_s",
                "client_us_per_job",
                "server_us_per_job",
                "whole_server_us_per_job",
                "messages_per_job",
                "attempt_rows_per_message",
                "sender_client_us_per_message",
                "sender_server_us_per_message",
                "receiver_client_us_per_message",
                "sender_during_round_us_per_job",
            )
            if (value := _median(values, key)) is not None
        }
        figures["jobs_per_s_rounds"] = [round(v["jobs_per_s"], 1) for v in values]
        figures["lost_backends"] = sum(v["lost_backends"] for v in values)
        lifecycle = figures["client_us_per_job"] + figures["server_us_per_job"]
        figures["lifecycle_cpu_us_per_job"] = round(lifecycle, 1)
        figures["lifecycle_added_cpu_pct"] = round((lifecycle / base_cpu - 1) * 100, 1)
        figures["added_time_per_job_pct"] = round((base_rate / figures["jobs_per_s"] - 1) * 100, 1)
        if "sender_client_us_per_message" in figures:
            sender = (
                figures["sender_client_us_per_message"] + figures["sender_server_us_per_message"]
            )
            figures["sender_cpu_us_per_message"] = round(sender, 1)
            per_job = sender * figures["messages_per_job"]
            figures["sender_cpu_us_per_job"] = round(per_job, 1)
            figures["with_sender_added_cpu_pct"] = round(
                ((lifecycle + per_job) / base_cpu - 1) * 100, 1
            )
        result[variant] = figures
    return result


async def sender_throughput(url: str, hook_url: str, messages: int) -> dict[str, Any]:
    owner = make_engine(url, pool_size=12, max_overflow=0)
    conn = await asyncpg.connect(dsn_of(url))
    try:
        await conn.execute(
            "TRUNCATE email.deliveries, email.delivery_attempts, email.delivery_outcomes, "
            "email.outcome_events, email.delivery_events, email.webhook_endpoints CASCADE"
        )
        await conn.execute(
            "UPDATE email.webhook_feed_state SET (after_xact_id, after_event_id) = "
            "(SELECT xact_id, id FROM email.delivery_feed_head())"
        )
        await outbox.add(owner, url=hook_url, **DEV)  # type: ignore[arg-type]
        for first in range(0, messages, 1000):
            ids = [f"s-{i}" for i in range(first, min(first + 1000, messages))]
            await conn.execute(
                "SELECT count(*) FROM email.enqueue_deliveries("
                "$1, $2, $3, $4::jsonb[], $5::timestamptz[])",
                ids,
                [WORKFLOW] * len(ids),
                [f"u{i}@example.com" for i in range(len(ids))],
                ["{}"] * len(ids),
                [None] * len(ids),
            )
        built = 0
        started = time.perf_counter()
        while built < messages:
            result = await outbox.fan_out(owner)
            if result is None or result[0] == 0:
                await asyncio.sleep(0.01)
                continue
            built += result[1]
        build_s = time.perf_counter() - started
        delivered = 0
        async with Sender(
            owner, timeout=5, lease=timedelta(seconds=30), batch=200, concurrency=16, **DEV
        ) as sender:
            started = time.perf_counter()
            while delivered < messages:
                report = await sender.deliver()
                delivered += report.delivered
            send_s = time.perf_counter() - started
    finally:
        await conn.close()
        await owner.dispose()
    return {
        "messages": messages,
        "built_per_s": round(messages / build_s),
        "sent_per_s": round(messages / send_s),
    }


async def http_floor(hook_url: str, requests: int, concurrency: int = 16) -> dict[str, Any]:
    """What one POST of a message-sized body to the local receiver costs this process with a
    bare ``aiohttp`` session (no signing, no database): the floor under the sender's client
    CPU per message (the kernel's loopback TCP work is charged to the sending process)."""
    import aiohttp

    body = b'{"x": "' + b"y" * 900 + b'"}'
    queue = iter(range(requests))
    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            for _ in queue:
                async with session.post(hook_url, data=body) as response:
                    await response.read()

        await asyncio.gather(*(worker() for _ in range(concurrency)))  # warm: connections
        queue = iter(range(requests))
        cpu = time.process_time()
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
    return {
        "requests": requests,
        "client_cpu_us_per_request": round(cpu / requests * 1e6, 1),
        "requests_per_s": round(requests / elapsed),
    }


async def serve_receiver() -> None:
    """``--receive``: the local receiver in this process until SIGTERM; prints its URL."""
    runner, hook_url, _ = await receiver()
    print(hook_url, flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    async with database() as (server_url, source):  # noqa: SIM117 - the second needs the first
        async with scratch(server_url, args.database_name, "head") as url:
            global PG_PORT
            PG_PORT = make_url(url).port or 5432
            async with receiver_process() as (receiver_pid, hook_url):
                conn = await asyncpg.connect(dsn_of(url))
                version = await conn.fetchval("SELECT current_setting('server_version')")
                await conn.close()
                report: dict[str, Any] = {
                    "server": f"PostgreSQL {version} ({source})",
                    "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                    f"Python {platform.python_version()}",
                    "baseline_src": args.baseline_src,
                }
                if args.events:
                    report["feed_read"] = await feed_read(url, args.events)
                report["lifecycle"] = await lifecycle_cost(url, hook_url, receiver_pid, args)
                report["http_floor"] = await http_floor(hook_url, 3000)
                if args.messages:
                    report["sender"] = await sender_throughput(url, hook_url, args.messages)
    return report


def print_report(report: dict[str, Any]) -> None:
    print(f"{report['server']}, {report['machine']}")
    if "feed_read" in report:
        read = report["feed_read"]
        print(
            f"feed read: {read['events']:,} events in pages of {PAGE}: "
            f"{read['events_per_s']:,} events/s, {read['page_ms_median']} ms per page "
            f"(p99 {read['page_ms_p99']} ms)"
        )
    print(
        "| variant | jobs/s (rounds) | lifecycle server CPU µs/job | lifecycle client CPU "
        "µs/job | lifecycle added CPU | messages/job | attempt rows/message | sender "
        "server + client CPU µs/message | sender CPU µs/job | lifecycle + sender added CPU |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for variant, f in report["lifecycle"].items():
        sender = (
            f"{f['sender_server_us_per_message']:,.0f} + {f['sender_client_us_per_message']:,.0f}"
            if "sender_cpu_us_per_message" in f
            else ""
        )
        added = f"{f['with_sender_added_cpu_pct']:+.1f} %" if sender else ""
        print(
            f"| {variant} | {f['jobs_per_s']:,.1f} ({', '.join(map(str, f['jobs_per_s_rounds']))})"
            f" | {f['server_us_per_job']:,.0f} | {f['client_us_per_job']:,.0f} "
            f"| {f['lifecycle_added_cpu_pct']:+.1f} % | {f.get('messages_per_job', '')} "
            f"| {f.get('attempt_rows_per_message', '')} | {sender} "
            f"| {f.get('sender_cpu_us_per_job', '')} "
            f"| {added} |"
        )
    floor = report["http_floor"]
    print(
        f"floor: a bare aiohttp POST of a message-sized body to the receiver: "
        f"{floor['client_cpu_us_per_request']} µs client CPU per request "
        f"({floor['requests_per_s']:,}/s)"
    )
    if "sender" in report:
        sender = report["sender"]
        print(
            f"sender: {sender['messages']:,} messages, built {sender['built_per_s']:,}/s, "
            f"sent to a local receiver {sender['sent_per_s']:,}/s"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="0: no feed read")
    parser.add_argument("--jobs", type=int, default=4000, help="lifecycle jobs per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--messages", type=int, default=5000, help="0: no sender throughput")
    parser.add_argument(
        "--baseline-src",
        help="a directory holding another email_delivery package (e.g. main's src/): its "
        "sender runs as the variant 'endpoint + sender, baseline'",
    )
    parser.add_argument("--database-name", default="ed_bench_feed", help="the scratch database")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--receive", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.receive:
        asyncio.run(serve_receiver())
        return
    report = asyncio.run(run(args))
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        print_report(report)


if __name__ == "__main__":
    main()
