"""Change-feed and webhook benchmark (issue 12).

    .venv/bin/python benchmarks/feed.py [--events 1000000] [--jobs 4000] [--rounds 3]
                                        [--messages 5000] [--tasks 16] [--json]

On a scratch database at head (of ``DATABASE_URL``'s server, else the embedded PostgreSQL 18
with fsync on):

1. **Feed read**: ``--events`` audit events (10 per transaction id, spread over the current
   partition), then read from the beginning to the end in pages of 1,000 through
   ``email_delivery.feed.page`` (one round trip per page, as a consumer does): events/s and
   milliseconds per page (median, p99). The issue's figure is at 10 M events; the page cost
   is an index range scan per partition from the cursor, so it does not grow with the table.
2. **Lifecycle cost of a subscribed endpoint**: the same job (enqueue → claim → mark sent,
   ``DeliveryTracker``, ``--tasks`` concurrent) in alternating rounds: ``no endpoint``;
   ``endpoint + sender`` (one endpoint subscribed to every change, a ``Sender`` running on
   the same machine, sending to a local receiver); ``feed listener`` (a ``feed.follow``
   registered and LISTENing: writers NOTIFY); and ``no notify trigger`` (the trigger
   disabled), which shows what the trigger costs while nobody listens. Jobs/s (median of rounds)
   and the added cost per job relative to ``no endpoint`` (target <= 15 %).
3. **Sender throughput**: ``--messages`` changes for one endpoint: messages built from the
   feed per second (``outbox.fan_out``), and messages sent, signed, to a local aiohttp
   receiver and recorded, per second (``Sender.deliver``, concurrency 16).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from datetime import timedelta
from typing import Any

import asyncpg
from aiohttp import web
from lifecycle import LEASE, database, drive
from peers import dsn_of
from schema_cost import scratch

from email_delivery import DeliveryTracker, feed, make_engine
from email_delivery.webhooks import outbox
from email_delivery.webhooks.sender import Sender

WORKFLOW = "verification-code"
PAGE = 1000
DEV = {"allow_insecure": True, "allow_private": True}


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
        await conn.execute("TRUNCATE email.deliveries, email.delivery_events CASCADE")
        base = 1000  # below any snapshot's xmin: every row is readable at once
        chunk = 200_000
        started = time.perf_counter()
        for first in range(0, events, chunk):
            await conn.execute(
                "INSERT INTO email.delivery_events (delivery_id, status, attempt, xact_id) "
                "SELECT 'bench-' || g, 'queued', 0, $1 + g / 10 "
                "FROM generate_series($2::bigint, $3::bigint) AS g",
                base,
                first,
                min(first + chunk, events) - 1,
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
    }


async def lifecycle_round(url: str, jobs: int, tasks: int, prefix: str) -> float:
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
        started = time.perf_counter()
        await drive(list(range(jobs)), tasks, job)  # type: ignore[arg-type]
        return jobs / (time.perf_counter() - started)
    finally:
        await tracker.aclose()
        await engine.dispose()


async def _follow(engine: Any) -> None:
    async for _ in feed.follow(engine, after=await feed.head(engine), poll_interval=5):
        pass


async def lifecycle_cost(url: str, hook_url: str, args: argparse.Namespace) -> dict[str, Any]:
    owner = make_engine(url, pool_size=8, max_overflow=0)
    conn = await asyncpg.connect(dsn_of(url))
    rates: dict[str, list[float]] = {"no endpoint": [], "endpoint + sender": [],
                                     "feed listener": [], "no notify trigger": []}  # fmt: skip
    try:
        for round_number in range(args.rounds):
            for variant in rates:
                await conn.execute(
                    "TRUNCATE email.deliveries, email.delivery_events, email.webhook_endpoints "
                    "CASCADE"
                )
                await conn.execute("CHECKPOINT")
                trigger = "DISABLE" if variant == "no notify trigger" else "ENABLE"
                await conn.execute(
                    f"ALTER TABLE email.delivery_events {trigger} TRIGGER delivery_events_notify"
                )
                stop = asyncio.Event()
                sending = None
                if variant == "endpoint + sender":
                    await outbox.add(owner, url=hook_url, **DEV)  # type: ignore[arg-type]
                    sender = Sender(owner, timeout=5, lease=timedelta(seconds=30), **DEV)
                    await sender.__aenter__()
                    sending = asyncio.create_task(sender.run(interval=0.1, stop=stop))
                following = None
                if variant == "feed listener":
                    follower = make_engine(url, pool_size=2)
                    following = asyncio.create_task(_follow(follower))
                    await asyncio.sleep(0.5)  # registered
                prefix = f"r{round_number}-{variant[:2]}"
                rates[variant].append(await lifecycle_round(url, args.jobs, args.tasks, prefix))
                if following is not None:
                    following.cancel()
                    await asyncio.gather(following, return_exceptions=True)
                    await follower.dispose()
                if sending is not None:
                    stop.set()
                    await sending
                    await sender.__aexit__()
        await conn.execute(
            "ALTER TABLE email.delivery_events ENABLE TRIGGER delivery_events_notify"
        )
    finally:
        await conn.close()
        await owner.dispose()
    base = statistics.median(rates["no endpoint"])
    result: dict[str, Any] = {}
    for variant, values in rates.items():
        median = statistics.median(values)
        result[variant] = {
            "jobs_per_s": round(median, 1),
            "rounds": [round(v, 1) for v in values],
            "added_cost_per_job_pct": round((base / median - 1) * 100, 1),
        }
    return result


async def sender_throughput(url: str, hook_url: str, messages: int) -> dict[str, Any]:
    owner = make_engine(url, pool_size=12, max_overflow=0)
    conn = await asyncpg.connect(dsn_of(url))
    try:
        await conn.execute(
            "TRUNCATE email.deliveries, email.delivery_events, email.webhook_endpoints CASCADE"
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


async def run(args: argparse.Namespace) -> dict[str, Any]:
    async with database() as (server_url, source):  # noqa: SIM117 - the second needs the first
        async with scratch(server_url, "ed_bench_feed", "head") as url:
            runner, hook_url, _ = await receiver()
            try:
                conn = await asyncpg.connect(dsn_of(url))
                version = await conn.fetchval("SELECT current_setting('server_version')")
                await conn.close()
                report: dict[str, Any] = {
                    "server": f"PostgreSQL {version} ({source})",
                    "machine": f"{platform.machine()}, {platform.python_version()}",
                    "feed_read": await feed_read(url, args.events),
                    "lifecycle": await lifecycle_cost(url, hook_url, args),
                    "sender": await sender_throughput(url, hook_url, args.messages),
                }
            finally:
                await runner.cleanup()
    return report


def print_report(report: dict[str, Any]) -> None:
    print(f"{report['server']}, {report['machine']}")
    read = report["feed_read"]
    print(
        f"feed read: {read['events']:,} events in pages of {PAGE}: {read['events_per_s']:,} "
        f"events/s, {read['page_ms_median']} ms per page (p99 {read['page_ms_p99']} ms)"
    )
    for variant, figures in report["lifecycle"].items():
        print(
            f"lifecycle, {variant:>18}: {figures['jobs_per_s']:>8} jobs/s "
            f"(rounds {figures['rounds']}), "
            f"added cost per job {figures['added_cost_per_job_pct']} %"
        )
    sender = report["sender"]
    print(
        f"sender: {sender['messages']:,} messages, built {sender['built_per_s']:,}/s, "
        f"sent to a local receiver {sender['sent_per_s']:,}/s"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--jobs", type=int, default=4000, help="lifecycle jobs per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = asyncio.run(run(args))
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        print_report(report)


if __name__ == "__main__":
    main()
