"""Worker policy in the database (revision 0008): stored leases, heartbeats, retry budgets
and backoff per workflow, as the worker login meets them; policy changes as the owner."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from email_delivery import DeliveryStatus, DeliveryTracker, InvalidInput, NotYet, policies
from tests.support.cluster import WORKER_LOGIN, Cluster
from tests.support.seed import superuser_dsn

S = DeliveryStatus
WF = "verification-code"


@pytest.fixture
async def tracker(worker_engine: AsyncEngine) -> AsyncIterator[DeliveryTracker]:
    async with DeliveryTracker(worker_engine) as t:
        yield t


async def _policy(owner_engine: AsyncEngine, workflow: str = WF, **changes: object) -> None:
    await policies.set_policy(owner_engine, workflow, **changes)


async def _row(owner: asyncpg.Connection, delivery_id: str = "d1") -> asyncpg.Record:
    return await owner.fetchrow(
        "SELECT *, lease_expires_at - last_attempted_at AS lease, "
        "next_attempt_at - updated_at AS backoff FROM email.deliveries WHERE delivery_id = $1",
        delivery_id,
    )


# -- stored leases ---------------------------------------------------------------------------


async def test_a_claim_stores_the_policy_lease_and_a_call_may_override_it(
    tracker: DeliveryTracker, owner_engine: AsyncEngine, owner_conn: asyncpg.Connection
) -> None:
    await _policy(owner_engine, lease=timedelta(minutes=7))
    await tracker.enqueue("d1", workflow=WF, recipient="a@b.io")
    await tracker.enqueue("d2", workflow="invite", recipient="a@b.io")
    claim = await tracker.claim("d1")
    assert claim is not None and claim.lease == timedelta(minutes=7)
    assert (await _row(owner_conn))["lease"] == timedelta(minutes=7)
    # No row of its own: the default policy '*' (5 minutes); an argument overrides both.
    other = await tracker.claim("d2", lease=timedelta(seconds=90))
    assert other is not None and other.lease == timedelta(seconds=90)


async def test_workers_with_different_leases_can_no_longer_double_send(
    worker_engine: AsyncEngine, owner_conn: asyncpg.Connection
) -> None:
    # Worker A is deployed with a long lease, worker B (and its reaper) with a tiny one.
    async with DeliveryTracker(worker_engine) as a, DeliveryTracker(worker_engine) as b:
        await a.enqueue("d1", workflow=WF, recipient="a@b.io")
        claim = await a.claim("d1", lease=timedelta(minutes=10))
        assert claim is not None
        await asyncio.sleep(0.05)
        # B's idea of a lease no longer decides: the claim stored its own expiry.
        assert await b.claim("d1", lease=timedelta(milliseconds=1)) is None
        assert await b.reap_stale(lease=timedelta(milliseconds=1)) == []
        assert (await a.mark_sent("d1", attempt=claim.attempt)).changed
    assert (await _row(owner_conn))["attempts"] == 1


async def test_a_slow_send_that_heartbeats_is_never_taken_over(
    tracker: DeliveryTracker, worker_engine: AsyncEngine, owner_engine: AsyncEngine
) -> None:
    await _policy(owner_engine, lease=timedelta(seconds=1))
    await tracker.enqueue("d1", workflow=WF, recipient="a@b.io")
    claim = await tracker.claim("d1")
    assert claim is not None
    async with DeliveryTracker(worker_engine) as other:
        async with tracker.keep_claim(claim, every=timedelta(milliseconds=250)) as keeper:
            for _ in range(8):  # a 2.4 s send: more than twice the lease
                await asyncio.sleep(0.3)
                assert await other.claim("d1") is None
                assert await other.reap_stale() == []
            assert keeper.held and keeper.beats >= 6
        assert (await tracker.mark_sent("d1", attempt=claim.attempt)).changed


async def test_a_send_that_stops_heartbeating_is_taken_over_and_learns_it(
    tracker: DeliveryTracker, worker_engine: AsyncEngine, owner_engine: AsyncEngine
) -> None:
    await _policy(owner_engine, lease=timedelta(seconds=1))
    await tracker.enqueue("d1", workflow=WF, recipient="a@b.io")
    first = await tracker.claim("d1")
    assert first is not None
    assert await tracker.heartbeat("d1", attempt=first.attempt)
    await asyncio.sleep(1.2)  # no heartbeat: the claim expires
    async with DeliveryTracker(worker_engine) as other:
        second = await other.claim("d1")
        assert second is not None and second.attempt == 2
        # The superseded attempt learns it lost the claim, and must not send.
        assert not await tracker.heartbeat("d1", attempt=first.attempt)
        assert await other.heartbeat("d1", attempt=second.attempt)


async def test_an_expired_claim_nobody_took_is_still_the_callers(
    tracker: DeliveryTracker, owner_engine: AsyncEngine
) -> None:
    await _policy(owner_engine, lease=timedelta(seconds=1))
    await tracker.enqueue("d1", workflow=WF, recipient="a@b.io")
    claim = await tracker.claim("d1")
    assert claim is not None
    await asyncio.sleep(1.1)
    assert await tracker.heartbeat("d1", attempt=claim.attempt)
    assert not await tracker.heartbeat("nope", attempt=1)


# -- retry budgets and backoff ---------------------------------------------------------------


async def test_backoff_follows_the_documented_schedule_and_claims_wait_for_it(
    tracker: DeliveryTracker, owner_engine: AsyncEngine, owner_conn: asyncpg.Connection
) -> None:
    # No jitter: base * 2^(n-1), at most cap: 1 s, 2 s, 4 s, 5 s, 5 s.
    await _policy(
        owner_engine,
        max_attempts=10,
        backoff_base=timedelta(seconds=1),
        backoff_cap=timedelta(seconds=5),
        backoff_jitter=0.0,
    )
    await tracker.enqueue("d1", workflow=WF, recipient="a@b.io")
    waits = []
    for attempt in range(1, 6):
        await owner_conn.execute(
            "UPDATE email.deliveries SET next_attempt_at = NULL WHERE delivery_id = 'd1'"
        )  # the owner skips the wait: the schedule, not the clock, is under test
        claim = await tracker.claim("d1")
        assert claim is not None and claim.attempt == attempt
        result = await tracker.mark_failed("d1", attempt=attempt, error=("SMTP_421", "later"))
        assert result.status is S.RETRYING
        waits.append((await _row(owner_conn))["backoff"])
        with pytest.raises(NotYet) as caught:
            await tracker.claim("d1")
        assert timedelta(0) < caught.value.wait <= waits[-1]
        assert caught.value.retry_at == result.delivery.next_attempt_at
    assert waits == [timedelta(seconds=s) for s in (1, 2, 4, 5, 5)]


async def test_backoff_jitter_stays_within_its_bounds(
    tracker: DeliveryTracker, owner_engine: AsyncEngine, owner_conn: asyncpg.Connection
) -> None:
    await _policy(owner_engine, backoff_base=timedelta(seconds=10), backoff_jitter=0.5)
    for i in range(30):
        await tracker.enqueue(f"d{i}", workflow=WF, recipient="a@b.io")
        claim = await tracker.claim(f"d{i}")
        assert claim is not None
        await tracker.mark_failed(f"d{i}", attempt=1, error=("SMTP_421", "later"))
    waits = [
        r["backoff"].total_seconds()
        for r in await owner_conn.fetch(
            "SELECT next_attempt_at - updated_at AS backoff FROM email.deliveries"
        )
    ]
    assert all(5 <= w <= 15 for w in waits)
    assert max(waits) - min(waits) > 2  # it does jitter


async def test_a_claim_after_the_backoff_succeeds(
    tracker: DeliveryTracker, owner_engine: AsyncEngine
) -> None:
    await _policy(owner_engine, backoff_base=timedelta(seconds=1), backoff_jitter=0.0)
    await tracker.enqueue("d1", workflow=WF, recipient="a@b.io")
    claim = await tracker.claim("d1")
    assert claim is not None
    await tracker.mark_failed("d1", attempt=1, error=("SMTP_421", "later"))
    with pytest.raises(NotYet) as caught:
        await tracker.claim("d1")
    await asyncio.sleep(caught.value.wait.total_seconds() + 0.05)
    again = await tracker.claim("d1")
    assert again is not None and again.attempt == 2


async def test_the_retry_budget_comes_from_the_policy_unless_overridden(
    tracker: DeliveryTracker, owner_engine: AsyncEngine, owner_conn: asyncpg.Connection
) -> None:
    await _policy(owner_engine, max_attempts=2, backoff_base=timedelta(seconds=1))

    async def fail(delivery_id: str, **kw: object) -> S:
        await owner_conn.execute(
            "UPDATE email.deliveries SET next_attempt_at = NULL WHERE delivery_id = $1",
            delivery_id,
        )
        claim = await tracker.claim(delivery_id)
        assert claim is not None
        result = await tracker.mark_failed(
            delivery_id, attempt=claim.attempt, error=("SMTP_421", "later"), **kw
        )
        return result.status

    for delivery_id in ("d1", "d2"):
        await tracker.enqueue(delivery_id, workflow=WF, recipient="a@b.io")
    assert [await fail("d1"), await fail("d1")] == [S.RETRYING, S.DEAD_LETTER]
    assert [await fail("d2", max_attempts=5), await fail("d2", max_attempts=5)] == [
        S.RETRYING,
        S.RETRYING,
    ]


async def test_the_reaper_uses_each_workflows_budget_and_backoff(
    tracker: DeliveryTracker, owner_engine: AsyncEngine, owner_conn: asyncpg.Connection
) -> None:
    await _policy(owner_engine, max_attempts=1, lease=timedelta(seconds=1))
    await _policy(owner_engine, "invite", max_attempts=3, lease=timedelta(seconds=1))
    for delivery_id, workflow in (("d1", WF), ("d2", "invite")):
        await tracker.enqueue(delivery_id, workflow=workflow, recipient="a@b.io")
        assert await tracker.claim(delivery_id) is not None
    await asyncio.sleep(1.1)
    reaped = {d.delivery_id: d for d in await tracker.reap_stale()}
    assert reaped["d1"].status is S.DEAD_LETTER and reaped["d1"].next_attempt_at is None
    assert reaped["d2"].status is S.RETRYING and reaped["d2"].next_attempt_at is not None
    assert reaped["d2"].last_error_code == "LEASE_EXPIRED"


async def test_leaving_a_status_clears_its_timestamps_for_every_client(
    tracker: DeliveryTracker, cluster: Cluster, database: str, owner_conn: asyncpg.Connection
) -> None:
    await tracker.enqueue("d1", workflow=WF, recipient="a@b.io")
    claim = await tracker.claim("d1")
    assert claim is not None
    await tracker.mark_sent("d1", attempt=claim.attempt)
    row = await _row(owner_conn)
    assert (row["status"], row["lease_expires_at"], row["next_attempt_at"]) == ("sent", None, None)
    # Whoever writes: entering in_progress by hand gets the workflow's lease, and the
    # database refuses an in_progress row without an expiry when the guard is bypassed.
    await owner_conn.execute(
        "INSERT INTO email.deliveries (delivery_id, workflow, recipient, status, attempts, "
        "last_attempted_at) VALUES ('d9', 'invite', 'a@b.io', 'in_progress', 1, now())"
    )
    assert (await _row(owner_conn, "d9"))["lease"] == timedelta(minutes=5)
    superuser = await asyncpg.connect(superuser_dsn(cluster, database))
    try:
        with pytest.raises(asyncpg.CheckViolationError):
            async with superuser.transaction():
                await superuser.execute("SET LOCAL session_replication_role = replica")
                await superuser.execute(
                    "UPDATE email.deliveries SET lease_expires_at = NULL WHERE delivery_id = 'd9'"
                )
    finally:
        await superuser.close()


# -- policies as data ------------------------------------------------------------------------


async def test_policy_changes_are_checked_named_and_audited(
    owner_engine: AsyncEngine, owner_conn: asyncpg.Connection
) -> None:
    policy = await policies.set_policy(owner_engine, "invite", lease=timedelta(minutes=2))
    assert policy.lease == timedelta(minutes=2) and policy.max_attempts == 5  # from '*'
    for changes, field in (
        ({"lease": timedelta(0)}, "lease"),
        ({"lease": timedelta(days=2)}, "lease"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": 101}, "max_attempts"),
        (
            {"backoff_cap": timedelta(seconds=5), "backoff_base": timedelta(seconds=10)},
            "backoff_cap",
        ),
        ({"backoff_jitter": 1.5}, "backoff_jitter"),
        (
            {"keep_sent_for": timedelta(days=30), "keep_failed_for": timedelta(days=7)},
            "keep_failed_for",
        ),
        ({"alert_failure_rate": -0.1}, "alert_failure_rate"),
        ({"colour": "blue"}, "colour"),
    ):
        with pytest.raises(InvalidInput) as caught:
            await policies.set_policy(owner_engine, "invite", **changes)
        assert caught.value.field == field, changes
    with pytest.raises(InvalidInput) as bad_workflow:
        await policies.set_policy(owner_engine, "Not A Workflow", lease=timedelta(minutes=1))
    assert bad_workflow.value.field == "workflow"
    # The database refuses the same values from any client (the owner typing SQL).
    for statement in (
        "UPDATE email.workflow_policies SET lease = '0' WHERE workflow = '*'",
        "UPDATE email.workflow_policies SET backoff_cap = '1 second', backoff_base = '1 minute'",
        "UPDATE email.workflow_policies SET backoff_jitter = 2",
        "INSERT INTO email.workflow_policies (workflow, max_attempts) VALUES ('x', 0)",
    ):
        with pytest.raises(asyncpg.CheckViolationError):
            await owner_conn.execute(statement)
    for statement in (
        "DELETE FROM email.workflow_policies WHERE workflow = '*'",
        "TRUNCATE email.workflow_policies",
        "UPDATE email.workflow_policies SET workflow = 'x' WHERE workflow = '*'",
    ):
        with pytest.raises(asyncpg.InvalidParameterValueError):
            await owner_conn.execute(statement)

    reset = await policies.reset_policy(owner_engine, "invite")
    assert reset.workflow == "*"
    changes = await policies.policy_changes(owner_engine, workflow="invite")
    assert [c.action for c in changes] == ["delete", "insert"]
    assert changes[1].after is not None and changes[1].after["lease"] == "00:02:00"
    assert changes[0].changed_by == changes[1].changed_by != ""


async def test_the_default_policy_resets_to_the_documented_values(
    owner_engine: AsyncEngine,
) -> None:
    before = (await policies.policies(owner_engine))[0]
    await policies.set_policy(owner_engine, "*", max_attempts=9, alert_failure_rate=None)
    changed = (await policies.policies(owner_engine, workflow="anything"))[0]
    assert (changed.workflow, changed.max_attempts, changed.alert_failure_rate) == ("*", 9, None)
    after = await policies.reset_policy(owner_engine, "*")
    assert after.as_dict() | {"updated_at": None} == before.as_dict() | {"updated_at": None}


async def test_the_worker_reads_policies_and_changes_none(cluster: Cluster, database: str) -> None:
    worker = await asyncpg.connect(cluster.dsn(database, WORKER_LOGIN))
    try:
        assert await worker.fetchval("SELECT lease FROM email.workflow_policies") == timedelta(
            minutes=5
        )
        for statement in (
            "UPDATE email.workflow_policies SET lease = '1 day'",
            "INSERT INTO email.workflow_policies (workflow) VALUES ('invite')",
            "DELETE FROM email.workflow_policy_changes",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await worker.execute(statement)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await worker.fetch("SELECT * FROM email.workflow_policy_changes")
    finally:
        await worker.close()


async def test_a_workflows_retention_policy_wins_over_prunes_windows(
    cluster: Cluster, database: str, owner_engine: AsyncEngine, owner_conn: asyncpg.Connection
) -> None:
    from email_delivery import retention

    await _policy(owner_engine, "invite", keep_sent_for=timedelta(days=2))
    conn = await asyncpg.connect(superuser_dsn(cluster, database))
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute(
                "INSERT INTO email.deliveries (delivery_id, workflow, recipient, status, "
                "attempts, last_attempted_at, queued_at, sent_at, created_at, updated_at) "
                "SELECT w || '-' || age, w, 'a@b.io', 'sent', 1, t, t, t, t, t "
                "FROM unnest(ARRAY['invite', 'welcome']) AS w, "
                "unnest(ARRAY[1, 3, 100]) AS age, "
                "LATERAL (SELECT now() - age * interval '1 day' AS t) AS x"
            )
    finally:
        await conn.close()
    report = await retention.prune(
        owner_engine, older_than=timedelta(days=90), keep_failed_for=timedelta(days=365)
    )
    left = [r["delivery_id"] for r in await owner_conn.fetch(
        "SELECT delivery_id FROM email.deliveries ORDER BY 1"
    )]  # fmt: skip
    assert left == ["invite-1", "welcome-1", "welcome-3"]
    assert report.by_status["sent"] == 3
