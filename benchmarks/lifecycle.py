"""Lifecycle benchmark: the package's DeliveryTracker against raw asyncpg running equivalent SQL.

    .venv/bin/python benchmarks/lifecycle.py [--n 20000] [--concurrency 16] [--connections 8]
                                             [--rounds 10] [--json]

N deliveries per variant go through enqueue -> claim -> sent with a realistic mix: 10 % fail
once (SMTP 421) and succeed on the second claim, 2 % fail into dead_letter, and 10 % arrive
twice (a redelivered event: enqueue again and a claim that must return nothing). Each round
runs both variants on fresh ids, alternating which goes first, on the same database:

- ``package``: ``DeliveryTracker`` over ``make_engine(url)`` (pool of --connections).
- ``raw``: an asyncpg pool of --connections (its per-release reset query disabled, as a tuned
  raw worker would) running hand-written single statements with the same effect.

Without ``DATABASE_URL`` it starts the embedded PostgreSQL 18 with fsync and synchronous
commit on, migrates it and deletes it afterwards. With ``DATABASE_URL`` it migrates that
database to head and deletes its own rows at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import resource
import secrets
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg

from email_delivery import DeliveryTracker, make_engine, migrate
from email_delivery.embedded import embedded_server
from email_delivery.policies import set_policy
from email_delivery.urls import async_url

LEASE = timedelta(minutes=5)
BACKOFF = timedelta(seconds=1)
"""The benchmark workflow's retry backoff: the least a policy allows (no jitter)."""
SENT_PAYLOAD = {"smtp": "250 2.0.0 OK queued as 4B7F2"}
SOFT = ("SMTP_421", "4.7.0 Service not available, try again later")
HARD = ("SMTP_550", "5.1.1 Mailbox unavailable")


@dataclass(frozen=True, slots=True)
class Item:
    delivery_id: str
    kind: str  # "ok" | "fail_once" | "dead"
    duplicate: bool


def plan(n: int, prefix: str, rng: random.Random) -> list[Item]:
    items = []
    for i in range(n):
        r = rng.random()
        kind = "fail_once" if r < 0.10 else "dead" if r < 0.12 else "ok"
        items.append(Item(f"{prefix}-{i}", kind, rng.random() < 0.10))
    return items


Timer = Callable[[str, Awaitable[Any]], Awaitable[Any]]


def make_timer(latencies: dict[str, list[int]]) -> Timer:
    async def timed(kind: str, call: Awaitable[Any]) -> Any:
        start = time.perf_counter_ns()
        result = await call
        latencies[kind].append(time.perf_counter_ns() - start)
        return result

    return timed


async def package_lifecycle(tracker: DeliveryTracker, item: Item, t: Timer, retry: bool) -> None:
    """One delivery's calls; a ``fail_once`` one stops after its failure, and its second
    attempt (``retry``) runs once the policy's backoff has passed."""
    did = item.delivery_id
    metadata = {"team_id": 42, "code_sha256": "9f86d081884c7d659a2feaa0c55ad015"}
    if not retry:
        enqueue = tracker.enqueue(
            did, workflow="verification-code", recipient="Ada@Example.com", metadata=metadata
        )
        await t("enqueue", enqueue)
        claim = await t("claim", tracker.claim(did, lease=LEASE))
        attempt = claim.attempt
        if item.kind == "fail_once":
            await t("mark_failed", tracker.mark_failed(did, attempt=attempt, error=SOFT))
            return
    else:
        attempt = (await t("claim", tracker.claim(did, lease=LEASE))).attempt
    if item.kind == "dead":
        await t("mark_failed", tracker.mark_failed(did, attempt=attempt, error=HARD,
                                                   max_attempts=1))  # fmt: skip
    else:
        await t("mark_sent", tracker.mark_sent(did, attempt=attempt, payload=SENT_PAYLOAD))
    if item.duplicate:
        again = tracker.enqueue(
            did, workflow="verification-code", recipient="ada@example.com", metadata=metadata
        )
        await t("enqueue", again)
        assert await t("claim", tracker.claim(did, lease=LEASE)) is None


RAW_ENQUEUE = """
WITH ins AS (
    INSERT INTO email.deliveries (delivery_id, workflow, recipient, metadata)
    VALUES ($1, $2, $3, $4::jsonb)
    ON CONFLICT (delivery_id) DO NOTHING
    RETURNING *)
SELECT ins.*, true AS created FROM ins
UNION ALL
SELECT d.*, false FROM email.deliveries AS d
WHERE d.delivery_id = $1 AND NOT EXISTS (SELECT FROM ins)"""
RAW_CLAIM = """
UPDATE email.deliveries
SET status = 'in_progress', attempts = attempts + 1, last_attempted_at = now()
WHERE delivery_id = $1
  AND (status IN ('queued', 'retrying')
       OR (status = 'in_progress' AND last_attempted_at <= now() - $2::interval))
RETURNING *"""
RAW_SENT = """
WITH p AS (SELECT set_config('email.event_payload', $2, true))
UPDATE email.deliveries AS d
SET status = 'sent', last_error_code = NULL, last_error_message = NULL
FROM p
WHERE d.delivery_id = $1 AND d.status <> 'sent'
RETURNING d.*"""
RAW_FAILED = """
UPDATE email.deliveries
SET status = CASE WHEN NOT $5 THEN 'failed' WHEN attempts >= $6 THEN 'dead_letter'
                  ELSE 'retrying' END::email.delivery_status,
    last_error_code = $3, last_error_message = $4
WHERE delivery_id = $1 AND status = 'in_progress' AND attempts = $2
RETURNING *"""


async def raw_lifecycle(pool: asyncpg.Pool, item: Item, t: Timer, retry: bool) -> None:
    did = item.delivery_id
    metadata = json.dumps({"team_id": 42, "code_sha256": "9f86d081884c7d659a2feaa0c55ad015"})
    sent = json.dumps(SENT_PAYLOAD)
    if not retry:
        await t("enqueue", pool.fetchrow(RAW_ENQUEUE, did, "verification-code",
                                         "ada@example.com", metadata))  # fmt: skip
        row = await t("claim", pool.fetchrow(RAW_CLAIM, did, LEASE))
        attempt = row["attempts"]
        if item.kind == "fail_once":
            await t("mark_failed", pool.fetchrow(RAW_FAILED, did, attempt, *SOFT, True, 5))
            return
    else:
        attempt = (await t("claim", pool.fetchrow(RAW_CLAIM, did, LEASE)))["attempts"]
    if item.kind == "dead":
        await t("mark_failed", pool.fetchrow(RAW_FAILED, did, attempt, *HARD, True, 1))
    else:
        await t("mark_sent", pool.fetchrow(RAW_SENT, did, sent))
    if item.duplicate:
        await t("enqueue", pool.fetchrow(RAW_ENQUEUE, did, "verification-code",
                                         "ada@example.com", metadata))  # fmt: skip
        assert await t("claim", pool.fetchrow(RAW_CLAIM, did, LEASE)) is None


async def drive_with_retries(
    items: list[Item], concurrency: int, one: Callable[[Item, bool], Awaitable[None]]
) -> float:
    """Every delivery, then the second attempts of those that failed once, after the
    backoff (revision 0008: a retry waits at least BACKOFF); the wait is not timed."""
    elapsed = await drive(items, concurrency, lambda item: one(item, False))
    retried = [item for item in items if item.kind == "fail_once"]
    await asyncio.sleep(BACKOFF.total_seconds() + 0.2)
    return elapsed + await drive(retried, concurrency, lambda item: one(item, True))


async def drive(
    items: list[Item], concurrency: int, one: Callable[[Item], Awaitable[None]]
) -> float:
    queue = iter(items)

    async def worker() -> None:
        for item in queue:
            await one(item)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start


def reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _no_reset(connection: asyncpg.Connection) -> None:
    return None


@contextlib.asynccontextmanager
async def database() -> AsyncIterator[tuple[str, str]]:
    if os.environ.get("DATABASE_URL"):
        yield str(async_url(os.environ["DATABASE_URL"]).render_as_string(False)), "DATABASE_URL"
        return
    with embedded_server(durable=True) as url:
        yield url, "embedded PostgreSQL (fsync on)"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    run_id = secrets.token_hex(3)
    async with database() as (url, source):
        await migrate.upgrade(url)
        policy_engine = make_engine(url)
        await set_policy(
            policy_engine, "verification-code", backoff_base=BACKOFF, backoff_cap=BACKOFF,
            backoff_jitter=0.0,
        )  # fmt: skip
        await policy_engine.dispose()
        dsn = async_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        engine = make_engine(url, pool_size=args.connections, max_overflow=0)
        tracker = DeliveryTracker(engine)
        pool = await asyncpg.create_pool(
            dsn, min_size=args.connections, max_size=args.connections, reset=_no_reset
        )
        info = await pool.fetchrow(
            "SELECT current_setting('server_version') AS version, current_setting('fsync') AS "
            "fsync, current_setting('synchronous_commit') AS synchronous_commit"
        )
        results: dict[str, dict[str, Any]] = {}
        try:
            # Warm-up: connections, prepared statements, plpgsql plans.
            warm = plan(200, f"bench-{run_id}-warm", rng)
            ignore = make_timer(defaultdict(list))
            await drive_with_retries(
                warm[:100], args.concurrency, lambda i, r: package_lifecycle(tracker, i, ignore, r)
            )
            await drive_with_retries(
                warm[100:], args.concurrency, lambda i, r: raw_lifecycle(pool, i, ignore, r)
            )
            per_round = max(1, args.n // args.rounds)
            variants = {
                "package": lambda i, t, r: package_lifecycle(tracker, i, t, r),
                "raw": lambda i, t, r: raw_lifecycle(pool, i, t, r),
            }
            state = {
                name: {"elapsed": 0.0, "cpu": 0.0, "n": 0, "lat": defaultdict(list), "rss": 0.0}
                for name in variants
            }
            for r in range(args.rounds):
                order = list(variants) if r % 2 == 0 else list(reversed(variants))
                for name in order:
                    items = plan(per_round, f"bench-{run_id}-{name}-{r}", rng)
                    timer = make_timer(state[name]["lat"])
                    reset_peak_rss()
                    fn = variants[name]
                    cpu = time.process_time()
                    state[name]["elapsed"] += await drive_with_retries(
                        items,
                        args.concurrency,
                        lambda i, r, fn=fn, timer=timer: fn(i, timer, r),
                    )
                    state[name]["cpu"] += time.process_time() - cpu
                    state[name]["n"] += len(items)
                    state[name]["rss"] = max(state[name]["rss"], peak_rss_mib())
            for name, s in state.items():
                every = [x for lat in s["lat"].values() for x in lat]
                results[name] = {
                    "lifecycles": s["n"],
                    "seconds": round(s["elapsed"], 3),
                    "lifecycles_per_s": round(s["n"] / s["elapsed"], 1),
                    "calls": len(every),
                    "p50_ms": round(_pct(every, 50), 3),
                    "p99_ms": round(_pct(every, 99), 3),
                    "per_call": {
                        kind: {"p50_ms": round(_pct(v, 50), 3), "p99_ms": round(_pct(v, 99), 3)}
                        for kind, v in sorted(s["lat"].items())
                    },
                    "peak_rss_mib": round(s["rss"], 1),
                    "client_cpu_us_per_lifecycle": round(s["cpu"] / s["n"] * 1e6),
                }
            await _check(pool, run_id)
        finally:
            if source == "DATABASE_URL":
                await pool.execute(
                    "DELETE FROM email.deliveries WHERE delivery_id LIKE $1", f"bench-{run_id}-%"
                )
            await pool.close()
            await tracker.aclose()
            await engine.dispose()
    ratio = results["package"]["lifecycles_per_s"] / results["raw"]["lifecycles_per_s"]
    return {
        "benchmark": "lifecycle",
        "n": args.n,
        "concurrency": args.concurrency,
        "connections": args.connections,
        "rounds": args.rounds,
        "server": f"PostgreSQL {info['version']} ({source}), fsync={info['fsync']}, "
        f"synchronous_commit={info['synchronous_commit']}",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}",
        "variants": results,
        "ratio_package_vs_raw": round(ratio, 3),
    }


async def _check(pool: asyncpg.Pool, run_id: str) -> None:
    """Both variants must leave the same kind of result: every delivery final, none twice."""
    bad = await pool.fetchval(
        "SELECT count(*) FROM email.deliveries WHERE delivery_id LIKE $1 "
        "AND status NOT IN ('sent', 'dead_letter')",
        f"bench-{run_id}-%",
    )
    twice = await pool.fetchval(
        "SELECT count(*) FROM (SELECT delivery_id FROM email.delivery_events "
        "WHERE delivery_id LIKE $1 AND status = 'sent' GROUP BY 1 HAVING count(*) > 1) AS x",
        f"bench-{run_id}-%",
    )
    if bad or twice:
        raise SystemExit(f"benchmark invariant broken: {bad} unfinished, {twice} sent twice")


def _pct(values: list[int], q: int) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0] / 1e6
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] / 1e6


def print_table(report: dict[str, Any]) -> None:
    print(f"lifecycle benchmark: {report['n']} deliveries per variant, concurrency "
          f"{report['concurrency']} over {report['connections']} connections, "
          f"{report['rounds']} alternating rounds")  # fmt: skip
    print(f"server:  {report['server']}")
    print(f"machine: {report['machine']}\n")
    header = (
        "variant",
        "lifecycles/s",
        "calls",
        "p50 ms",
        "p99 ms",
        "peak RSS MiB",
        "client CPU µs",
    )
    rows = [
        (
            name,
            f"{r['lifecycles_per_s']:.0f}",
            str(r["calls"]),
            f"{r['p50_ms']:.3f}",
            f"{r['p99_ms']:.3f}",
            f"{r['peak_rss_mib']:.0f}",
            f"{r['client_cpu_us_per_lifecycle']}",
        )
        for name, r in report["variants"].items()
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    print("\nper call p50 / p99 ms:")
    for name, r in report["variants"].items():
        calls = ", ".join(
            f"{kind} {v['p50_ms']:.2f}/{v['p99_ms']:.2f}" for kind, v in r["per_call"].items()
        )
        print(f"  {name}: {calls}")
    print(f"\nratio_package_vs_raw: {report['ratio_package_vs_raw']:.3f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20_000, help="deliveries per variant")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent workers")
    parser.add_argument("--connections", type=int, default=8, help="pool size per variant")
    parser.add_argument("--rounds", type=int, default=10, help="alternating rounds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    report = asyncio.run(run(args))
    if args.json:
        json.dump(report, sys.stdout)
        print()
    else:
        print_table(report)


if __name__ == "__main__":
    main()
