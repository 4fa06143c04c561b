"""32 concurrent workers, 500 deliveries, duplicated and shuffled events, crashes, stale
reports; directly and through PgBouncer in transaction mode. Then the issue's invariants."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from datetime import timedelta

import asyncpg
import pytest

from email_delivery import DeliveryStatus, DeliveryTracker, NotYet, make_engine
from email_delivery.rules import is_allowed
from tests.support.cluster import WORKER_LOGIN, Cluster
from tests.support.pgbouncer import PgBouncer, start_pgbouncer
from tests.support.provisioning import Server

DELIVERIES = 500
WORKERS = 32
DUPLICATE_SHARE = 0.30
LEASE = timedelta(seconds=0.5)
MAX_ATTEMPTS = 3
FINAL = ("sent", "failed", "dead_letter")


@pytest.fixture(scope="module")
def pgbouncer(server: Server) -> Iterator[PgBouncer]:
    with start_pgbouncer(server, pool_size=8) as bouncer:
        yield bouncer


class Worker:
    """A Pub/Sub push handler: enqueue, claim, "send", report; misbehaving on purpose."""

    def __init__(self, tracker: DeliveryTracker, rng: random.Random) -> None:
        self.tracker = tracker
        self.rng = rng

    async def handle(self, delivery_id: str, redeliver: asyncio.Queue[str]) -> None:
        tracker, rng = self.tracker, self.rng
        await tracker.enqueue(delivery_id, workflow="invite", recipient=f"{delivery_id}@x.io")
        try:
            claim = await tracker.claim(delivery_id, lease=LEASE)
        except NotYet:
            return  # its backoff has not passed: a later round (redelivery) takes it
        if claim is None:
            return  # someone else holds it, or it is finished: ack
        if rng.random() < 0.3:
            # A duplicate claim while this one is live must not win.
            assert await tracker.claim(delivery_id, lease=LEASE) is None
        roll = rng.random()
        if roll < 0.05:
            return  # crashed after claiming: the lease must expire first
        if roll < 0.25:
            attempt = claim.attempt - 1 if rng.random() < 0.2 and claim.attempt > 1 else None
            result = await tracker.mark_failed(
                delivery_id,
                attempt=attempt or claim.attempt,
                error=("SMTP_421", "4.7.0 try again later"),
                max_attempts=MAX_ATTEMPTS,
            )
            if attempt is not None:
                assert not result.changed  # a stale report changes nothing
            if result.delivery.status is DeliveryStatus.RETRYING or not result.changed:
                redeliver.put_nowait(delivery_id)
        elif roll < 0.28:
            await tracker.mark_failed(
                delivery_id, attempt=claim.attempt, error=("SMTP_550", "no"), retryable=False
            )
        else:
            await tracker.mark_sent(delivery_id, attempt=claim.attempt, payload={"smtp": "250"})


async def run_workers(tracker: DeliveryTracker, events: list[str], seed: int) -> None:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for delivery_id in events:
        queue.put_nowait(delivery_id)

    async def loop(worker: Worker) -> None:
        while not queue.empty():
            await worker.handle(queue.get_nowait(), queue)

    await asyncio.gather(
        *(loop(Worker(tracker, random.Random(seed * 100 + i))) for i in range(WORKERS))
    )


async def check_invariants(conn: asyncpg.Connection, prefix: str) -> None:
    statuses = await conn.fetch(
        "SELECT status::text, count(*) FROM email.deliveries WHERE delivery_id LIKE $1 GROUP BY 1",
        f"{prefix}%",
    )
    assert {r["status"] for r in statuses} <= set(FINAL), statuses
    assert sum(r["count"] for r in statuses) == DELIVERIES
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM (SELECT delivery_id FROM email.delivery_events "
            "WHERE delivery_id LIKE $1 AND status = 'sent' GROUP BY 1 HAVING count(*) > 1) AS x",
            f"{prefix}%",
        )
        == 0
    )
    mismatched = await conn.fetch(
        "SELECT d.delivery_id, d.attempts, count(e.*) FILTER (WHERE e.status = 'in_progress') "
        "AS claims FROM email.deliveries AS d JOIN email.delivery_events AS e USING "
        "(delivery_id) WHERE d.delivery_id LIKE $1 GROUP BY 1, 2 "
        "HAVING d.attempts <> count(e.*) FILTER (WHERE e.status = 'in_progress')",
        f"{prefix}%",
    )
    assert mismatched == []
    rows = await conn.fetch(
        "SELECT delivery_id, status::text FROM email.delivery_events "
        "WHERE delivery_id LIKE $1 ORDER BY delivery_id, id",
        f"{prefix}%",
    )
    previous: dict[str, DeliveryStatus] = {}
    for r in rows:
        status = DeliveryStatus(r["status"])
        before = previous.get(r["delivery_id"])
        if before is None:
            assert status is DeliveryStatus.QUEUED
        else:
            assert is_allowed(before, status), (r["delivery_id"], before, status)
        previous[r["delivery_id"]] = status


@pytest.mark.parametrize("via", ["direct", "pgbouncer"])
async def test_many_workers_keep_every_invariant(
    cluster: Cluster, database: str, request: pytest.FixtureRequest, via: str
) -> None:
    if via == "pgbouncer":
        bouncer: PgBouncer = request.getfixturevalue("pgbouncer")
        engine = make_engine(
            bouncer.url(database, WORKER_LOGIN), pooler="transaction", pool_size=WORKERS
        )
    else:
        engine = make_engine(cluster.url(database, WORKER_LOGIN), pool_size=WORKERS)
    rng = random.Random(7)
    prefix = f"c-{via}-"
    ids = [f"{prefix}{i}" for i in range(DELIVERIES)]
    events = ids + rng.sample(ids, int(DELIVERIES * DUPLICATE_SHARE))
    rng.shuffle(events)
    owner = await asyncpg.connect(cluster.dsn(database))
    # Retries wait for the workflow's backoff: one second here, the rounds' pace.
    await owner.execute(
        "INSERT INTO email.workflow_policies (workflow, backoff_base, backoff_cap) "
        "VALUES ('invite', '1 second', '1 second')"
    )
    try:
        async with DeliveryTracker(engine, connections=WORKERS) as tracker:
            await run_workers(tracker, events, seed=1)
            if via == "pgbouncer":
                # 32 client connections were multiplexed over PgBouncer's 8 server ones.
                servers = await owner.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND usename = $2",
                    database,
                    WORKER_LOGIN,
                )
                assert 0 < servers <= 8
            # Pub/Sub keeps redelivering what is not acknowledged as finished; a scheduler
            # reaps the claims of crashed workers once their lease has expired.
            for round_ in range(2, 40):
                pending = await owner.fetch(
                    "SELECT delivery_id FROM email.deliveries WHERE delivery_id LIKE $1 "
                    "AND status NOT IN ('sent', 'failed', 'dead_letter')",
                    f"{prefix}%",
                )
                if not pending:
                    break
                await asyncio.sleep(LEASE.total_seconds())
                await tracker.reap_stale(lease=LEASE, max_attempts=MAX_ATTEMPTS)
                await run_workers(tracker, [r["delivery_id"] for r in pending], seed=round_)
        await check_invariants(owner, prefix)
        # The run exercised what it is meant to: retries, permanent failures, reaped crashes.
        seen = await owner.fetch(
            "SELECT DISTINCT status::text AS status, error_code FROM email.delivery_events "
            "WHERE delivery_id LIKE $1",
            f"{prefix}%",
        )
        assert {("retrying", "SMTP_421"), ("failed", "SMTP_550")} <= {tuple(r) for r in seen}
        assert any(r["error_code"] == "LEASE_EXPIRED" for r in seen)
    finally:
        await owner.close()
        await engine.dispose()
