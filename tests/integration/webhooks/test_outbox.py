"""The outbox and the sender against PostgreSQL and a real local receiver
(``outbox_receiver.py``) that verifies every signature with ``standardwebhooks``.

The receiver listens on 127.0.0.1 over http, so the endpoints are registered and sent to
with the development flags (``allow_insecure``, ``allow_private``); the tests of the flags
themselves show that nothing else gets through. Time passes by moving ``next_attempt_at``
(the schedule itself is checked against the stored times), never by sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import asyncpg
import jsonschema
import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from email_delivery import DeliveryTracker, feed, health, make_engine
from email_delivery.errors import InvalidInput
from email_delivery.webhooks import outbox, payloads, schedule
from email_delivery.webhooks.errors import EndpointNotFound
from email_delivery.webhooks.sender import Sender, TickReport, send_test
from tests.integration.webhooks.outbox_receiver import OutboxReceiver
from tests.support.cluster import DASHBOARD_LOGIN, NOBODY_LOGIN, OWNER, WORKER_LOGIN, Cluster
from tests.support.db import connect, skip_backoff
from tests.support.pgbouncer import PgBouncer, start_pgbouncer
from tests.support.provisioning import Server

DEV = {"allow_insecure": True, "allow_private": True}
WEBHOOK_TABLES = (
    "webhook_endpoints",
    "webhook_secrets",
    "webhook_messages",
    "webhook_attempts",
    "webhook_feed_state",
)


@pytest.fixture(scope="module")
def pgbouncer(server: Server) -> Iterator[PgBouncer]:
    with start_pgbouncer(server, pool_size=6) as bouncer:
        yield bouncer


@pytest.fixture
async def receiver() -> AsyncIterator[OutboxReceiver]:
    server = OutboxReceiver()
    await server.start()
    yield server
    await server.stop()


async def _endpoint(
    engine: AsyncEngine, receiver: OutboxReceiver, token: str, **options: object
) -> outbox.Endpoint:
    endpoint, secret = await outbox.add(engine, url=receiver.url(token), **DEV, **options)  # type: ignore[arg-type]
    receiver.secret(token, secret)
    return endpoint


async def _drain(sender: Sender, owner: asyncpg.Connection, *, rounds: int = 200) -> None:
    """Tick until no message is pending, moving every pending message's time to now (the
    schedule is checked elsewhere). Another session's open transaction may hold the feed
    back for a moment (the feed's rule), hence the rounds."""
    for _ in range(rounds):
        await sender.tick()
        left = await owner.fetchval(
            "SELECT count(*) FROM email.webhook_messages m JOIN email.webhook_endpoints e "
            "ON e.id = m.endpoint_id AND e.enabled WHERE m.state = 'pending'"
        )
        behind = await owner.fetchval(
            "SELECT count(*) FROM email.delivery_events e, email.webhook_feed_state s "
            "WHERE (e.xact_id, e.id) > (s.after_xact_id, s.after_event_id)"
        )
        if not left and not behind:
            return
        await owner.execute(
            "UPDATE email.webhook_messages SET next_attempt_at = now() WHERE state = 'pending'"
        )
        await asyncio.sleep(0.05)
    raise AssertionError("the outbox did not drain")


async def _lifecycle(tracker: DeliveryTracker, owner: asyncpg.Connection, delivery_id: str) -> None:
    """queued → in_progress → retrying → in_progress → sent."""
    await tracker.enqueue(delivery_id, workflow="welcome", recipient="ada@example.com")
    claim = await tracker.claim(delivery_id)
    assert claim is not None
    await tracker.mark_failed(
        delivery_id,
        attempt=claim.attempt,
        error=TimeoutError("SMTP to ada@example.com timed out"),
        retryable=True,
    )
    await skip_backoff(owner, delivery_id)
    claim = await tracker.claim(delivery_id)
    assert claim is not None
    await tracker.mark_sent(delivery_id, attempt=claim.attempt)


# -----------------------------------------------------------------------------------------
# Endpoints
# -----------------------------------------------------------------------------------------


async def test_bad_urls_are_refused_before_anything_is_stored(
    owner_engine: AsyncEngine, owner_conn: asyncpg.Connection
) -> None:
    with pytest.raises(InvalidInput, match="https") as insecure:
        await outbox.add(owner_engine, url="http://hooks.example.com/in")
    assert insecure.value.field == "url"
    for private in ("https://127.0.0.1/in", "https://10.1.2.3/x", "https://169.254.169.254/"):
        with pytest.raises(InvalidInput) as refused:
            await outbox.add(owner_engine, url=private)
        assert refused.value.field == "url"
    with pytest.raises(InvalidInput) as bad_status:
        await outbox.add(owner_engine, url="https://hooks.example.com/in", statuses=["delivered"])
    assert bad_status.value.field == "statuses[0]"
    with pytest.raises(InvalidInput) as bad_workflow:
        await outbox.add(owner_engine, url="https://hooks.example.com/in", workflows=["Bad Name"])
    assert bad_workflow.value.field == "workflows[0]"
    assert await owner_conn.fetchval("SELECT count(*) FROM email.webhook_endpoints") == 0
    endpoint, secret = await outbox.add(owner_engine, url="https://hooks.example.com/in")
    assert secret.startswith("whsec_") and endpoint.enabled and endpoint.workflows is None
    with pytest.raises(EndpointNotFound):
        await outbox.disable(owner_engine, endpoint.id + 1)


@pytest.mark.parametrize("login", [DASHBOARD_LOGIN, WORKER_LOGIN, NOBODY_LOGIN])
async def test_no_login_but_the_owner_can_see_endpoints_secrets_or_messages(
    cluster: Cluster, database: str, owner_engine: AsyncEngine, login: str
) -> None:
    await outbox.add(owner_engine, url="https://hooks.example.com/in")
    async with connect(cluster, database, login) as conn:
        for table in WEBHOOK_TABLES:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch(f"SELECT * FROM email.{table}")
    for role in ("anon", "authenticated", "service_role"):
        async with connect(cluster, database) as conn:
            for table in WEBHOOK_TABLES:
                assert not await conn.fetchval(
                    "SELECT has_table_privilege($1, $2, 'SELECT')", role, f"email.{table}"
                )


# -----------------------------------------------------------------------------------------
# Sending
# -----------------------------------------------------------------------------------------


async def test_every_status_change_arrives_signed_in_order_without_the_address(
    owner_engine: AsyncEngine,
    owner_conn: asyncpg.Connection,
    worker_tracker: DeliveryTracker,
    receiver: OutboxReceiver,
) -> None:
    endpoint = await _endpoint(owner_engine, receiver, "all")
    await _endpoint(owner_engine, receiver, "sent-only", statuses=["sent"], workflows=["welcome"])
    await _endpoint(owner_engine, receiver, "other-workflow", workflows=["invite"])
    await _lifecycle(worker_tracker, owner_conn, "d-1")
    async with Sender(owner_engine, timeout=5, lease=timedelta(seconds=30), **DEV) as sender:
        await _drain(sender, owner_conn)
    arrivals = receiver.of("all")
    assert all(a.verified for a in arrivals)
    trail = await owner_conn.fetch(
        "SELECT id, status::text FROM email.delivery_events WHERE delivery_id = 'd-1' ORDER BY id"
    )
    # every audited change (the owner's skip_backoff edit included), each once
    assert sorted((a.payload["event"]["id"], a.payload["event"]["status"]) for a in arrivals) == [
        (row["id"], row["status"]) for row in trail
    ]
    assert {"queued", "in_progress", "retrying", "sent"} <= {row["status"] for row in trail}
    for arrival in arrivals:
        jsonschema.validate(arrival.payload, payloads.PAYLOAD_SCHEMA)
        assert arrival.payload["id"] == arrival.message_id
        assert arrival.payload["id"] == payloads.message_id(
            endpoint_id=endpoint.id, event_id=arrival.payload["event"]["id"]
        )
        assert b"ada@example.com" not in arrival.body  # not configured to include it
    assert [a.payload["event"]["status"] for a in receiver.of("sent-only")] == ["sent"]
    assert receiver.of("other-workflow") == []
    assert Counter(a.message_id for a in arrivals).most_common(1)[0][1] == 1


async def test_retries_follow_the_schedule_with_one_webhook_id_and_keep_each_attempt(
    owner_engine: AsyncEngine,
    owner_conn: asyncpg.Connection,
    worker_tracker: DeliveryTracker,
    receiver: OutboxReceiver,
) -> None:
    await _endpoint(owner_engine, receiver, "cycle", statuses=["queued"])
    receiver.script("cycle", ["500", "timeout", "slow", "ok"])
    receiver.hang = 3.0
    await worker_tracker.enqueue("d-2", workflow="welcome", recipient="bob@example.com")
    async with Sender(owner_engine, timeout=1.0, lease=timedelta(seconds=30), **DEV) as sender:
        for attempt in range(1, 4):
            await _drain_once(sender, owner_conn)
            row = await owner_conn.fetchrow(
                "SELECT state, attempts, message_id, next_attempt_at - now() AS wait "
                "FROM email.webhook_messages"
            )
            assert row is not None and row["attempts"] == attempt
            if attempt < 3:  # failed: rescheduled on Svix's steps (5 s, then 5 min), jittered
                step = schedule.RETRY_DELAYS[attempt]
                assert row["state"] == "pending"
                assert step * 0.85 < row["wait"] <= step * 1.1
                await owner_conn.execute(
                    "UPDATE email.webhook_messages SET next_attempt_at = now()"
                )
            else:
                assert row["state"] == "delivered"
    arrivals = receiver.of("cycle")
    assert [a.answer for a in arrivals] == ["500", "timeout", "slow"]
    assert len({a.message_id for a in arrivals}) == 1 and all(a.verified for a in arrivals)
    assert len({a.body for a in arrivals}) == 1  # rendered once, the same bytes every time
    attempts = await owner_conn.fetch(
        "SELECT attempt, status_code, latency_ms, error, response_excerpt "
        "FROM email.webhook_attempts ORDER BY id"
    )
    assert [(a["attempt"], a["status_code"]) for a in attempts] == [(1, 500), (2, None), (3, 200)]
    assert (
        attempts[0]["response_excerpt"].startswith("boom")
        and len(attempts[0]["response_excerpt"]) <= 1024
    )
    assert "timed out" in attempts[1]["error"]
    assert all(a["latency_ms"] > 0 for a in attempts)


async def _drain_once(sender: Sender, owner: asyncpg.Connection) -> None:
    """One tick that sent something (the feed may be held back by another session for a
    moment: then tick again)."""
    for _ in range(200):
        report = await sender.tick()
        if report.claimed:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("nothing to send")


async def _build(sender: Sender, messages: int) -> None:
    """Build until ``messages`` are built: another session's long transaction on the shared
    server holds every feed back (the feed's rule), so wait up to two minutes."""
    built = 0
    async with asyncio.timeout(120):
        while built < messages:
            built += (await sender.build()).messages_built
            await asyncio.sleep(0.05)


def _statements(engine: AsyncEngine) -> list[str]:
    """Every statement ``engine`` sends from now on (SQLAlchemy's cursor events)."""
    seen: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    return seen


async def test_a_batch_is_claimed_in_one_statement_and_recorded_in_one(
    owner_engine: AsyncEngine,
    owner_conn: asyncpg.Connection,
    worker_tracker: DeliveryTracker,
    receiver: OutboxReceiver,
) -> None:
    """Per batch, not per message: one claim (with the endpoints' URLs and secrets), one
    record of every answer (attempt rows, messages, the ended failure streaks), whatever
    the batch's size. Answers within ``RECORD_EVERY`` of each other share a record."""
    endpoint = await _endpoint(owner_engine, receiver, "batch", statuses=["queued"])
    await owner_conn.execute(  # a streak that the first 2xx ends
        "UPDATE email.webhook_endpoints SET first_failure_at = now() - interval '1 hour'"
    )
    for n in range(30):
        await worker_tracker.enqueue(f"b-{n}", workflow="welcome", recipient="b@example.com")
    engine = make_engine(owner_engine.url, pool_size=2)
    try:
        async with Sender(
            engine, timeout=5, lease=timedelta(seconds=30), batch=30, **DEV
        ) as sender:
            await _build(sender, 30)
            statements = _statements(engine)
            report = await sender.deliver()
    finally:
        await engine.dispose()
    assert report.claimed == report.delivered == 30
    # one claim, then the records: one while every answer came within RECORD_EVERY (a
    # loaded machine may split the answers in a few groups; per message it was 1 + 3 x 30)
    assert 2 <= len(statements) <= 5, statements
    assert sum("webhook_attempts" in statement for statement in statements) == len(statements) - 1
    row = await owner_conn.fetchrow(
        "SELECT count(*) FILTER (WHERE state = 'delivered' AND last_status = 200 "
        "AND finished_at IS NOT NULL) AS delivered, "
        "(SELECT count(*) FROM email.webhook_attempts AS a WHERE a.status_code = 200 "
        "AND a.attempt = 1 AND a.latency_ms > 0 AND a.response_excerpt = 'accepted') AS attempts "
        "FROM email.webhook_messages"
    )
    assert (row["delivered"], row["attempts"]) == (30, 30)
    assert (await outbox.get(owner_engine, endpoint.id)).first_failure_at is None


async def test_one_record_ends_one_streak_and_starts_another(
    owner_engine: AsyncEngine,
    owner_conn: asyncpg.Connection,
    worker_tracker: DeliveryTracker,
    receiver: OutboxReceiver,
) -> None:
    """Answers of two endpoints recorded together: each message, attempt and streak is the
    one its own answer says."""
    good = await _endpoint(owner_engine, receiver, "good", statuses=["queued"])
    bad = await _endpoint(owner_engine, receiver, "bad", statuses=["queued"])
    receiver.script("bad", ["500"])
    await owner_conn.execute(
        "UPDATE email.webhook_endpoints SET first_failure_at = now() - interval '1 day' "
        "WHERE id = $1",
        good.id,
    )
    for n in range(3):
        await worker_tracker.enqueue(f"g-{n}", workflow="welcome", recipient="g@example.com")
    async with Sender(owner_engine, timeout=5, lease=timedelta(seconds=30), **DEV) as sender:
        for _ in range(200):
            report = await sender.tick()
            if report.claimed:
                break
            await asyncio.sleep(0.05)
    assert (report.claimed, report.delivered, report.retrying) == (6, 3, 3)
    rows = await owner_conn.fetch(
        "SELECT m.endpoint_id, m.state, m.last_status, m.attempts, a.status_code, "
        "m.next_attempt_at - now() AS wait FROM email.webhook_messages AS m "
        "JOIN email.webhook_attempts AS a ON a.message_id = m.id ORDER BY m.id"
    )
    assert len(rows) == 6
    for row in rows:
        if row["endpoint_id"] == good.id:
            assert (row["state"], row["last_status"], row["status_code"]) == ("delivered", 200, 200)
        else:
            assert (row["state"], row["last_status"], row["status_code"]) == ("pending", 500, 500)
            assert schedule.RETRY_DELAYS[1] * 0.85 < row["wait"] <= schedule.RETRY_DELAYS[1] * 1.1
    assert (await outbox.get(owner_engine, good.id)).first_failure_at is None
    assert (await outbox.get(owner_engine, bad.id)).first_failure_at is not None


async def test_senders_lock_a_groups_endpoints_in_id_order(
    owner_engine: AsyncEngine,
    owner_conn: asyncpg.Connection,
    cluster: Cluster,
    database: str,
    worker_tracker: DeliveryTracker,
    receiver: OutboxReceiver,
) -> None:
    """A group with a failure locks its endpoints in id order before it writes: another
    sender holding the lower endpoint makes it wait holding nothing, so that one can go on
    to the higher endpoint (recording the 2xx first held the higher one: a deadlock)."""
    bad = await _endpoint(owner_engine, receiver, "bad", statuses=["queued"])
    good = await _endpoint(owner_engine, receiver, "good", statuses=["queued"])
    assert bad.id < good.id
    receiver.script("bad", ["500"])
    await owner_conn.execute(
        "UPDATE email.webhook_endpoints SET first_failure_at = now() - interval '1 day' "
        "WHERE id = $1",
        good.id,
    )
    await worker_tracker.enqueue("g-1", workflow="welcome", recipient="g@example.com")
    other = await asyncpg.connect(cluster.dsn(database))
    try:
        holder = other.transaction()
        await holder.start()
        await other.execute(
            "SELECT FROM email.webhook_endpoints WHERE id = $1 FOR NO KEY UPDATE", bad.id
        )
        async with Sender(owner_engine, timeout=5, lease=timedelta(seconds=30), **DEV) as sender:
            tick = asyncio.create_task(_tick_until_claimed(sender))
            await asyncio.sleep(1.5)  # sent both, now waiting to record
            assert not tick.done()
            # The other sender takes the higher endpoint too: free, since this one waits
            # for the lower one holding nothing (deadlock_timeout is 1 s).
            await asyncio.wait_for(
                other.execute(
                    "SELECT FROM email.webhook_endpoints WHERE id = $1 FOR NO KEY UPDATE",
                    good.id,
                ),
                timeout=5,
            )
            await holder.commit()
            report = await asyncio.wait_for(tick, timeout=10)
    finally:
        await other.close()
    assert (report.claimed, report.delivered, report.retrying) == (2, 1, 1)


async def _tick_until_claimed(sender: Sender) -> TickReport:
    while True:
        report = await sender.tick()
        if report.claimed:
            return report
        await asyncio.sleep(0.05)


async def test_answers_are_recorded_while_a_slow_one_is_still_in_flight(
    owner_engine: AsyncEngine,
    owner_conn: asyncpg.Connection,
    worker_tracker: DeliveryTracker,
    receiver: OutboxReceiver,
) -> None:
    """A batch is recorded in groups as it is answered, not once at its end: a slow
    receiver does not hold back the record (and so the crash window) of the others."""
    await _endpoint(owner_engine, receiver, "quick", statuses=["queued"])
    await _endpoint(owner_engine, receiver, "sluggish", statuses=["queued"])
    receiver.script("sluggish", ["slow"])
    receiver.slow = 30.0
    await worker_tracker.enqueue("q-1", workflow="welcome", recipient="q@example.com")
    async with Sender(owner_engine, timeout=60, lease=timedelta(seconds=90), **DEV) as sender:
        await _build(sender, 2)
        delivering = asyncio.create_task(sender.deliver())
        try:
            async with asyncio.timeout(20):
                while not await owner_conn.fetchval(  # noqa: ASYNC110 - the database
                    "SELECT count(*) FROM email.webhook_messages WHERE state = 'delivered'"
                ):
                    await asyncio.sleep(0.05)
            assert not delivering.done()  # the slow answer is still awaited
        finally:
            delivering.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await delivering
    quick = await owner_conn.fetchrow(
        "SELECT m.state, a.status_code FROM email.webhook_messages AS m "
        "JOIN email.webhook_endpoints AS e ON e.id = m.endpoint_id "
        "JOIN email.webhook_attempts AS a ON a.message_id = m.id WHERE e.url LIKE '%/quick'"
    )
    assert quick is not None and (quick["state"], quick["status_code"]) == ("delivered", 200)


async def test_an_idle_tick_writes_nothing(
    owner_engine: AsyncEngine,
    owner_conn: asyncpg.Connection,
    worker_tracker: DeliveryTracker,
    receiver: OutboxReceiver,
) -> None:
    """With nothing new in the feed and nothing due, a tick locks no row: it takes no
    transaction id and its commit flushes no WAL (it did: the cursor row was locked first)."""
    await _endpoint(owner_engine, receiver, "idle", statuses=["queued"])
    await worker_tracker.enqueue("i-1", workflow="welcome", recipient="i@example.com")
    async with Sender(owner_engine, timeout=5, lease=timedelta(seconds=30), **DEV) as sender:
        await _drain(sender, owner_conn)
        # a fresh version of the cursor row: not locked by anyone (xmax 0)
        await owner_conn.execute("UPDATE email.webhook_feed_state SET updated_at = updated_at")
        assert await owner_conn.fetchval("SELECT xmax::text FROM email.webhook_feed_state") == "0"
        for _ in range(3):
            report = await sender.tick()
            assert report.idle
    assert await owner_conn.fetchval("SELECT xmax::text FROM email.webhook_feed_state") == "0"


async def test_410_disables_the_endpoint_and_health_says_so(
    owner_engine: AsyncEngine,
    owner_conn: asyncpg.Connection,
    worker_tracker: DeliveryTracker,
    receiver: OutboxReceiver,
) -> None:
    endpoint = await _endpoint(owner_engine, receiver, "gone", statuses=["queued"])
    receiver.script("gone", ["410"])
    await worker_tracker.enqueue("d-3", workflow="welcome", recipient="c@example.com")
    async with Sender(owner_engine, timeout=5, lease=timedelta(seconds=30), **DEV) as sender:
        await _drain_once(sender, owner_conn)
    gone = await outbox.get(owner_engine, endpoint.id)
    assert not gone.enabled and gone.disabled_automatically
    assert "asked to stop" in (gone.disabled_reason or "")
    report = await health.health(owner_engine)
    disabled = [c for c in report.checks if c.check == "webhook_endpoints_disabled"]
    assert disabled[0].breached and disabled[0].value == 1
    assert f"#{endpoint.id}" in (disabled[0].detail or "")
    await outbox.enable(owner_engine, endpoint.id)
    report = await health.health(owner_engine)
    assert not next(c for c in report.checks if c.check == "webhook_endpoints_disabled").breached


async def test_the_failure_budget_disables_an_endpoint_after_five_days(
    owner_engine: AsyncEngine,
    owner_conn: asyncpg.Connection,
    worker_tracker: DeliveryTracker,
    receiver: OutboxReceiver,
) -> None:
    endpoint = await _endpoint(owner_engine, receiver, "failing", statuses=["queued"])
    receiver.script("failing", ["500"])
    await worker_tracker.enqueue("d-4", workflow="welcome", recipient="d@example.com")
    async with Sender(owner_engine, timeout=5, lease=timedelta(seconds=30), **DEV) as sender:
        await _drain_once(sender, owner_conn)
        still = await outbox.get(owner_engine, endpoint.id)
        assert still.enabled and still.first_failure_at is not None
        await owner_conn.execute(
            "UPDATE email.webhook_endpoints "
            "SET first_failure_at = now() - interval '5 days 1 minute'"
        )
        await owner_conn.execute("UPDATE email.webhook_messages SET next_attempt_at = now()")
        await _drain_once(sender, owner_conn)
    disabled = await outbox.get(owner_engine, endpoint.id)
    assert not disabled.enabled and disabled.disabled_automatically
    assert "budget" in (disabled.disabled_reason or "")


async def test_outbox_lag_is_a_health_check(
    owner_engine: AsyncEngine,
    owner_conn: asyncpg.Connection,
    worker_tracker: DeliveryTracker,
    receiver: OutboxReceiver,
) -> None:
    await _endpoint(owner_engine, receiver, "lag", statuses=["queued"])
    await worker_tracker.enqueue("d-5", workflow="welcome", recipient="e@example.com")
    async with Sender(owner_engine, timeout=5, lease=timedelta(seconds=30), **DEV) as sender:
        for _ in range(200):
            await sender.build()
            if await owner_conn.fetchval("SELECT count(*) FROM email.webhook_messages"):
                break
            await asyncio.sleep(0.05)
    await owner_conn.execute(
        "UPDATE email.webhook_messages SET next_attempt_at = now() - interval '10 minutes'"
    )
    lag = [
        c for c in (await health.health(owner_engine)).checks if c.check == "webhook_outbox_lag_s"
    ]
    assert lag[0].breached and lag[0].value is not None and lag[0].value >= 600


async def test_several_senders_never_send_a_message_twice(
    owner_engine: AsyncEngine,
    owner_conn: asyncpg.Connection,
    worker_tracker: DeliveryTracker,
    receiver: OutboxReceiver,
) -> None:
    await _endpoint(owner_engine, receiver, "shared", statuses=["queued"])
    receiver.script("shared", ["slow"])
    receiver.slow = 0.01
    for n in range(120):
        await worker_tracker.enqueue(f"m-{n}", workflow="welcome", recipient="f@example.com")

    async def one_sender() -> None:
        async with Sender(
            owner_engine, timeout=5, lease=timedelta(seconds=60), batch=10, **DEV
        ) as sender:
            for _ in range(400):
                await sender.tick()
                left = await owner_conn_pool.fetchval(
                    "SELECT count(*) FROM email.webhook_messages WHERE state = 'pending'"
                )
                if len({a.message_id for a in receiver.of("shared")}) >= 120 and not left:
                    return
                await asyncio.sleep(0.01)

    owner_conn_pool = await asyncpg.create_pool(
        owner_engine.url.set(drivername="postgresql").render_as_string(hide_password=False),
        min_size=1,
        max_size=3,
    )
    try:
        await asyncio.gather(one_sender(), one_sender(), one_sender())
    finally:
        await owner_conn_pool.close()
    counts = Counter(a.message_id for a in receiver.of("shared"))
    assert len(counts) == 120
    assert max(counts.values()) == 1


async def test_a_sender_killed_mid_batch_loses_nothing_and_resends_only_what_was_unrecorded(
    cluster: Cluster,
    database: str,
    owner_engine: AsyncEngine,
    owner_conn: asyncpg.Connection,
    worker_tracker: DeliveryTracker,
    receiver: OutboxReceiver,
) -> None:
    await _endpoint(owner_engine, receiver, "crash", statuses=["queued"])
    receiver.script("crash", ["slow"])
    receiver.slow = 0.3
    total = 60
    for n in range(total):
        await worker_tracker.enqueue(f"k-{n}", workflow="welcome", recipient="g@example.com")
    env = {**os.environ, "DATABASE_URL": cluster.dsn(database)}
    command = [
        sys.executable, "-m", "email_delivery.cli", "webhooks", "run", "--allow-insecure",
        "--allow-private", "--lease", "3s", "--timeout", "2", "--batch", "20",
        "--concurrency", "4", "--interval", "0.1",
    ]  # fmt: skip
    first = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    async with asyncio.timeout(120):
        while len(receiver.of("crash")) < 10:  # noqa: ASYNC110 - the receiver's list
            await asyncio.sleep(0.02)
    first.send_signal(signal.SIGKILL)  # mid-batch: requests in flight, results unrecorded
    await first.wait()
    recorded = {
        row["message_id"]
        for row in await owner_conn.fetch(
            "SELECT message_id FROM email.webhook_messages WHERE state = 'delivered'"
        )
    }
    in_flight = {a.message_id for a in receiver.of("crash")} - recorded
    assert recorded and len(recorded) < total
    second = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        async with asyncio.timeout(180):
            while (  # noqa: ASYNC110 - the database's state
                await owner_conn.fetchval(
                    "SELECT count(*) FROM email.webhook_messages WHERE state = 'delivered'"
                )
                < total
            ):
                await asyncio.sleep(0.1)
    finally:
        second.send_signal(signal.SIGTERM)
        await second.wait()
    counts = Counter(a.message_id for a in receiver.of("crash"))
    assert len(counts) == total  # nothing lost
    assert all(a.verified for a in receiver.of("crash"))
    twice = {message_id for message_id, n in counts.items() if n > 1}
    assert not twice & recorded  # a recorded delivery is never sent again
    assert twice <= in_flight  # only what the killed sender had in flight, unrecorded


async def test_replay_resends_with_the_same_id_and_builds_what_was_missed(
    owner_engine: AsyncEngine,
    owner_conn: asyncpg.Connection,
    worker_tracker: DeliveryTracker,
    receiver: OutboxReceiver,
) -> None:
    await _endpoint(owner_engine, receiver, "first", statuses=["queued"])
    await worker_tracker.enqueue("r-1", workflow="welcome", recipient="h@example.com")
    async with Sender(owner_engine, timeout=5, lease=timedelta(seconds=30), **DEV) as sender:
        await _drain(sender, owner_conn)
        assert len(receiver.of("first")) == 1
        report = await outbox.replay(owner_engine, delivery_id="r-1")
        assert report.as_dict() == {"rescheduled": 1, "created": 0}
        await _drain(sender, owner_conn)
        first = receiver.of("first")
        assert len(first) == 2 and first[0].message_id == first[1].message_id
        late = await _endpoint(owner_engine, receiver, "late")  # after the change
        await _drain(sender, owner_conn)
        assert receiver.of("late") == []  # history is not sent by itself
        since = await owner_conn.fetchval("SELECT now() - interval '1 hour'")
        report = await outbox.replay(owner_engine, since=since, endpoint_id=late.id)
        assert report.created == 1
        await _drain(sender, owner_conn)
    assert [a.payload["delivery"]["delivery_id"] for a in receiver.of("late")] == ["r-1"]
    with pytest.raises(InvalidInput):
        await outbox.replay(owner_engine)


async def test_webhooks_test_sends_a_signed_example(
    owner_engine: AsyncEngine, receiver: OutboxReceiver
) -> None:
    endpoint = await _endpoint(owner_engine, receiver, "ping")
    result = await send_test(owner_engine, endpoint.id, timeout=5, **DEV)
    assert result.ok
    (arrival,) = receiver.of("ping")
    assert arrival.verified and arrival.payload["delivery"]["delivery_id"] == "webhook-test"
    jsonschema.validate(arrival.payload, payloads.PAYLOAD_SCHEMA)


def test_the_cli_manages_endpoints(cli: object, database: str) -> None:
    run = cli  # type: ignore[assignment]
    code, _, err = run(database, "webhooks", "add", "http://hooks.example.com/in")  # type: ignore[operator]
    assert code == 2 and "https" in err
    code, out, _ = run(  # type: ignore[operator]
        database, "webhooks", "add", "https://hooks.example.com/in", "--status", "sent",
        "--workflow", "welcome", "--json",
    )  # fmt: skip
    assert code == 0 and '"secret": "whsec_' in out
    code, out, _ = run(database, "webhooks", "disable", "1", "--reason", "maintenance")  # type: ignore[operator]
    assert code == 0 and "maintenance" in out
    code, out, _ = run(database, "webhooks", "list", "--json")  # type: ignore[operator]
    assert code == 0 and '"enabled": false' in out and "whsec_" not in out
    code, out, _ = run(database, "webhooks", "enable", "1")  # type: ignore[operator]
    assert code == 0 and "True" in out
    code, _, err = run(database, "webhooks", "enable", "9")  # type: ignore[operator]
    assert code == 2 and "no webhook endpoint 9" in err
    code, out, _ = run(database, "webhooks", "replay", "--since", "1h", "--json")  # type: ignore[operator]
    assert code == 0 and '"created": 0' in out
    code, _, err = run(database, "webhooks", "list", user=DASHBOARD_LOGIN)  # type: ignore[operator]
    assert code == 2 and "permission" in err.lower()


async def test_engine_through_make_engine_works_for_the_sender(
    cluster: Cluster, database: str, receiver: OutboxReceiver
) -> None:
    """The sender on a pooled engine (as ``webhooks run`` makes it)."""
    engine = make_engine(cluster.url(database), pool_size=4)
    try:
        await _endpoint(engine, receiver, "pooled")
        async with Sender(engine, timeout=5, lease=timedelta(seconds=30), **DEV) as sender:
            report = await sender.tick()
        assert report.claimed == 0
    finally:
        await engine.dispose()


async def test_senders_and_the_feed_work_through_a_transaction_pooler(
    database: str,
    pgbouncer: PgBouncer,
    owner_conn: asyncpg.Connection,
    worker_tracker: DeliveryTracker,
    receiver: OutboxReceiver,
) -> None:
    """PgBouncer in transaction mode: no session state survives a statement, so the claim,
    the fan-out and the feed page are each one transaction; two senders share the work."""
    engine = make_engine(pgbouncer.url(database, OWNER), pooler="transaction", pool_size=4)
    reader = make_engine(
        pgbouncer.url(database, DASHBOARD_LOGIN), pooler="transaction", pool_size=2
    )
    try:
        await _endpoint(engine, receiver, "pooled", statuses=["queued"])
        for n in range(40):
            await worker_tracker.enqueue(f"p-{n}", workflow="welcome", recipient="i@example.com")

        async def one_sender() -> None:
            async with Sender(
                engine, timeout=5, lease=timedelta(seconds=60), batch=5, **DEV
            ) as sender:
                for _ in range(400):
                    await sender.tick()
                    if len({a.message_id for a in receiver.of("pooled")}) >= 40:
                        return
                    await asyncio.sleep(0.02)

        await asyncio.gather(one_sender(), one_sender())
        counts = Counter(a.message_id for a in receiver.of("pooled"))
        assert len(counts) == 40 and max(counts.values()) == 1
        events = [
            event
            async for event in _take(
                feed.follow(reader, poll_interval=0.05, listen=False), count=40
            )
        ]
        assert len({event.id for event in events}) == 40
    finally:
        await engine.dispose()
        await reader.dispose()


async def _take(
    events: AsyncIterator[feed.FeedEvent], *, count: int
) -> AsyncIterator[feed.FeedEvent]:
    taken = 0
    async with asyncio.timeout(60):
        async for event in events:
            yield event
            taken += 1
            if taken == count:
                return
