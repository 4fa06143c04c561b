"""4. The reaper stalled by one row.

``email.reap_stale_deliveries`` computes every stale row's retry budget as
``attempts - (metadata->>'requeued_at_attempt')::integer`` in one statement, so one row
whose key is not an integer makes the cast fail and the whole reap with it: no expired
claim anywhere is handed back.
"""

from __future__ import annotations

import asyncpg
import pytest

from tests.security._attack import arrange, attempt, attempt_fetch, time_travel
from tests.support.cluster import WORKER_LOGIN, Cluster

REAP = (
    "SELECT delivery_id, status::text FROM email.reap_stale_deliveries($1::text::interval, 5, 1000)"
)
EXPIRE = (
    "UPDATE email.deliveries SET last_attempted_at = now() - interval '1 hour', "
    "lease_expires_at = now() - interval '55 minutes' WHERE status = 'in_progress'"
)

POISONS = {
    "update-text": "UPDATE email.deliveries SET metadata = metadata || "
    "'{\"requeued_at_attempt\": \"x\"}' WHERE delivery_id = 'poisoned'",
    "update-fraction": "UPDATE email.deliveries SET metadata = metadata || "
    "'{\"requeued_at_attempt\": 1.5}' WHERE delivery_id = 'poisoned'",
    "update-out-of-range": "UPDATE email.deliveries SET metadata = metadata || "
    "'{\"requeued_at_attempt\": 99999999999}' WHERE delivery_id = 'poisoned'",
    "insert-text": "INSERT INTO email.deliveries (delivery_id, workflow, recipient, status, "
    "attempts, last_attempted_at, lease_expires_at, metadata) VALUES ('poisoned-new', "
    "'verification-code', 'p@example.com', 'in_progress', 1, now() - interval '1 hour', "
    "now() - interval '55 minutes', "
    '\'{"requeued_at_attempt": "x"}\')',
}


@pytest.mark.parametrize("poison", POISONS)
async def test_one_poisoned_row_cannot_stall_the_reaper(
    owner: asyncpg.Connection,
    worker: asyncpg.Connection,
    superuser: asyncpg.Connection,
    poison: str,
) -> None:
    await arrange(worker, "clean", "in_progress")
    await arrange(worker, "poisoned", "in_progress")
    await attempt(worker, POISONS[poison])
    await time_travel(superuser, EXPIRE)

    reaped, error = await attempt_fetch(worker, REAP, "5 minutes")
    if error is not None:
        pytest.fail(f"the whole reap failed: {type(error).__name__}: {error}", pytrace=False)
    assert ("clean", "retrying") in [tuple(r) for r in reaped or []]
    row = await owner.fetchrow(
        "SELECT status::text, last_error_code FROM email.deliveries WHERE delivery_id = 'clean'"
    )
    assert tuple(row) == ("retrying", "LEASE_EXPIRED")


async def test_a_row_the_writer_holds_locked_cannot_stall_the_reaper(
    owner: asyncpg.Connection,
    worker: asyncpg.Connection,
    superuser: asyncpg.Connection,
    cluster: Cluster,
    database: str,
) -> None:
    """The writer cannot lock a row at all (row locks need UPDATE, which it no longer
    holds); a lock someone else holds, say a long owner transaction, blocks only that row:
    ``FOR UPDATE SKIP LOCKED``."""
    await arrange(worker, "clean", "in_progress")
    await arrange(worker, "held", "in_progress")
    await time_travel(superuser, EXPIRE)
    attacker = await asyncpg.connect(cluster.dsn(database, WORKER_LOGIN))
    try:
        for lock in ("FOR UPDATE", "FOR NO KEY UPDATE", "FOR SHARE", "FOR KEY SHARE"):
            error = await attempt(
                attacker, f"SELECT FROM email.deliveries WHERE delivery_id = 'held' {lock}"
            )
            assert isinstance(error, asyncpg.InsufficientPrivilegeError), (lock, error)
    finally:
        await attacker.close()
    holder = await asyncpg.connect(cluster.dsn(database))
    try:
        async with holder.transaction():
            await holder.execute(
                "SELECT FROM email.deliveries WHERE delivery_id = 'held' FOR UPDATE"
            )
            reaped = await worker.fetch(REAP, "5 minutes")
            assert [tuple(r) for r in reaped] == [("clean", "retrying")]
    finally:
        await holder.close()
    assert (
        await owner.fetchval("SELECT status::text FROM email.deliveries WHERE delivery_id = 'held'")
        == "in_progress"
    )
