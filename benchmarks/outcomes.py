"""Provider outcomes benchmark: what recording an outcome costs beside a ``mark_sent``, and
how long the provider metrics query takes over many attempts.

    .venv/bin/python benchmarks/outcomes.py [--n 5000] [--concurrency 8] [--metrics-rows 1000000]
                                            [--metrics-days 90] [--json]

1. ``--n`` deliveries are enqueued and claimed, then (timed, ``--concurrency`` tasks) each is
   ``mark_sent`` with its provider facts, then (timed) one ``delivered`` outcome is recorded
   for each, matched by provider message id. Reported: calls per second and the median and
   p95 latency of each, and the ratio outcome / mark_sent.
2. ``--metrics-rows`` sent deliveries, each with its attempt and outcome, over 5 providers
   and 5 workflows, spread evenly over ``--metrics-days`` days, are bulk-loaded (owner,
   set-based INSERTs, not through the functions), then ``email.provider_metrics`` over the
   last 15 minutes, 24 hours, 7 and 30 days is timed (median of 5): first from the attempts
   alone (never refreshed), then after ``email.maintain()`` filled the provider rollups
   (revision 0014), whose refresh is timed too.

Without ``DATABASE_URL`` it starts the embedded PostgreSQL 18 (fsync and synchronous commit
on), migrates it and deletes it afterwards. With ``DATABASE_URL`` (a superuser or the schema
owner) it migrates that database to head and deletes its own rows at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from email_delivery import DeliveryTracker, make_engine, migrate
from email_delivery.embedded import embedded_server
from email_delivery.providers import OutcomeKind, ProviderEvent
from email_delivery.urls import async_url

WORKFLOW = "bench-outcomes"


@contextlib.asynccontextmanager
async def database() -> AsyncIterator[str]:
    url = os.environ.get("DATABASE_URL")
    if url:
        yield str(async_url(url).render_as_string(False))
        return
    with embedded_server(durable=True) as server_url:
        yield server_url


async def run_all(
    n: int, concurrency: int, metrics_rows: int, metrics_days: int, prefix: str
) -> dict[str, Any]:
    async with database() as url:
        await migrate.upgrade(url)
        raw_url = async_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        engine = make_engine(url, pool_size=concurrency)
        try:
            async with DeliveryTracker(engine) as tracker:
                lifecycle = await bench_lifecycle(tracker, n, concurrency, prefix)
            metrics = await bench_metrics(raw_url, metrics_rows, metrics_days, prefix)
        finally:
            conn = await asyncpg.connect(raw_url)
            try:
                await conn.execute(
                    "DELETE FROM email.deliveries WHERE delivery_id LIKE $1", f"{prefix}-%"
                )
            finally:
                await conn.close()
            await engine.dispose()
    return {"lifecycle": lifecycle, "metrics": metrics}


async def _timed(latencies: list[float], call: Awaitable[Any]) -> None:
    start = time.perf_counter()
    await call
    latencies.append(time.perf_counter() - start)


async def _in_parallel(calls: list[Awaitable[Any]], concurrency: int) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(call: Awaitable[Any]) -> None:
        async with gate:
            await call

    await asyncio.gather(*(one(call) for call in calls))


def _summary(latencies: list[float], elapsed: float) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "calls_per_s": round(len(ordered) / elapsed, 1),
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1] * 1000, 3),
    }


async def bench_lifecycle(
    tracker: DeliveryTracker, n: int, concurrency: int, prefix: str
) -> dict[str, Any]:
    ids = [f"{prefix}-{i}" for i in range(n)]
    claims = {}
    for delivery_id in ids:
        await tracker.enqueue(delivery_id, workflow=WORKFLOW, recipient="bench@example.com")
        claim = await tracker.claim(delivery_id)
        assert claim is not None
        claims[delivery_id] = claim.attempt

    sent: list[float] = []
    start = time.perf_counter()
    await _in_parallel(
        [
            _timed(
                sent,
                tracker.mark_sent(
                    delivery_id,
                    attempt=claims[delivery_id],
                    payload={"smtp": "250 2.0.0 OK"},
                    provider="ses",
                    provider_message_id=f"m-{delivery_id}",
                    reply_code=250,
                    duration=timedelta(milliseconds=120),
                ),
            )
            for delivery_id in ids
        ],
        concurrency,
    )
    sent_elapsed = time.perf_counter() - start

    now = datetime.now(UTC)
    outcomes: list[float] = []
    start = time.perf_counter()
    await _in_parallel(
        [
            _timed(
                outcomes,
                tracker.record_outcome(
                    ProviderEvent(
                        provider="ses",
                        event_id=f"e-{delivery_id}",
                        kind=OutcomeKind.DELIVERED,
                        occurred_at=now,
                        provider_message_id=f"m-{delivery_id}",
                        delivery_id=None,
                        recipient="bench@example.com",
                        permanent=None,
                        reason=None,
                        smtp_code=250,
                        provider_event_type="Delivery",
                    )
                ),
            )
            for delivery_id in ids
        ],
        concurrency,
    )
    outcome_elapsed = time.perf_counter() - start
    mark_sent = _summary(sent, sent_elapsed)
    record_outcome = _summary(outcomes, outcome_elapsed)
    return {
        "n": n,
        "concurrency": concurrency,
        "mark_sent_with_facts": mark_sent,
        "record_outcome": record_outcome,
        "outcome_over_mark_sent_p50": round(record_outcome["p50_ms"] / mark_sent["p50_ms"], 3),
    }


LOAD = """
WITH d AS (
    INSERT INTO email.deliveries (delivery_id, workflow, recipient, status, attempts,
                                  last_attempted_at, queued_at, sent_at, created_at, updated_at)
    SELECT $1 || '-m-' || i, 'wf-' || (i % 5), 'r' || i || '@example.com', 'sent', 1,
           t, t, t, t, t
    FROM generate_series(1, $2) AS i,
         LATERAL (SELECT now() - (i::double precision / $2) * $3 * interval '1 day' AS t) AS ts
    RETURNING delivery_id, workflow, sent_at
), a AS (
    INSERT INTO email.delivery_attempts (delivery_id, attempt, result, workflow, provider,
        provider_message_id, reply_code, duration_ms, reported_at)
    SELECT delivery_id, 1, 'sent', workflow,
           (ARRAY['ses', 'postmark', 'resend', 'sendgrid', 'mailgun'])
               [1 + abs(hashtext(delivery_id)) % 5],
           'pm-' || delivery_id, 250, 50 + abs(hashtext(delivery_id)) % 900, sent_at
    FROM d
    RETURNING delivery_id, workflow, provider, reported_at
)
INSERT INTO email.delivery_outcomes (delivery_id, workflow, outcome, permanent, provider,
    outcome_at, delivered_at)
SELECT delivery_id, workflow,
       CASE WHEN abs(hashtext(delivery_id)) % 100 < 2 THEN 'bounced' ELSE 'delivered' END,
       CASE WHEN abs(hashtext(delivery_id)) % 100 < 2 THEN true END,
       provider, reported_at + interval '3 seconds',
       CASE WHEN abs(hashtext(delivery_id)) % 100 >= 2 THEN reported_at + interval '3 seconds' END
FROM a
"""


WINDOWS = (
    ("last_15m", timedelta(minutes=15)),
    ("last_24h", timedelta(hours=24)),
    ("last_7d", timedelta(days=7)),
    ("last_30d", timedelta(days=30)),
)


async def _time_windows(conn: asyncpg.Connection) -> dict[str, float]:
    results = {}
    for label, window in WINDOWS:
        timings = []
        for _ in range(5):
            start = time.perf_counter()
            await conn.fetch("SELECT * FROM email.provider_metrics(now() - $1::interval)", window)
            timings.append(time.perf_counter() - start)
        results[f"{label}_ms"] = round(statistics.median(timings) * 1000, 1)
    return results


async def bench_metrics(url: str, rows: int, days: int, prefix: str) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        start = time.perf_counter()
        # The audit triggers run as for any insert; the owner's bulk load is set-based.
        await conn.execute("SET session_replication_role = replica")  # bulk load only
        await conn.execute(LOAD, prefix, rows, days)
        await conn.execute("RESET session_replication_role")
        await conn.execute("ANALYZE email.delivery_attempts")
        await conn.execute("ANALYZE email.delivery_outcomes")
        load_s = time.perf_counter() - start
        results: dict[str, Any] = {"rows": rows, "days": days, "load_s": round(load_s, 1)}
        # The attempts alone: what provider_metrics costs before the first refresh.
        await conn.execute(
            "UPDATE email.provider_rollup_state SET rolled_until = '-infinity', xact_watermark = 0"
        )
        await conn.execute("DELETE FROM email.provider_rollups")
        results["from_attempts"] = await _time_windows(conn)
        start = time.perf_counter()
        await conn.fetch("SELECT * FROM email.refresh_provider_rollups()")
        results["first_refresh_s"] = round(time.perf_counter() - start, 2)
        results["rollup_rows"] = await conn.fetchval("SELECT count(*) FROM email.provider_rollups")
        results["with_rollups"] = await _time_windows(conn)
        start = time.perf_counter()
        await conn.fetch("SELECT * FROM email.refresh_provider_rollups()")
        results["next_refresh_s"] = round(time.perf_counter() - start, 3)
        results["attempts_in_24h"] = await conn.fetchval(
            "SELECT count(*) FROM email.delivery_attempts "
            "WHERE reported_at > now() - interval '24 hours'"
        )
        return results
    finally:
        await conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--metrics-rows", type=int, default=1_000_000)
    parser.add_argument("--metrics-days", type=int, default=90)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    prefix = f"bo{secrets.token_hex(3)}"
    result = asyncio.run(
        run_all(args.n, args.concurrency, args.metrics_rows, args.metrics_days, prefix)
    )
    result["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count()}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for section, values in result.items():
            print(f"{section}: {json.dumps(values)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
