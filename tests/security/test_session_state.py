"""5. Session state leaks: ``email.event_payload`` outliving its transaction.

The audit trigger attaches whatever ``email.event_payload`` holds and clears it only with
``set_config(…, true)`` — transaction-local — so a session-level ``SET`` survives every
transaction of that connection: each later lifecycle call's first event carries it, and a
value that is not a JSON object makes the call fail. Behind a transaction pooler the
server session is shared by every client of the same login (all Cloud Function instances
share the worker's), so one ``SET`` from a leaked credential reaches the real workers.

Each test: the attacker (the worker login) runs one session-level ``SET``; then a
well-behaved client of the same login calls one lifecycle function. ``direct``: on the
same connection. ``pgbouncer``: a different client of PgBouncer in transaction mode with one
server connection (``pool_size=1``), so both clients share the server session.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.security._attack import arrange, attempt, time_travel
from tests.security.conftest import connect_via
from tests.support.cluster import WORKER_LOGIN, Cluster
from tests.support.pgbouncer import PgBouncer

VALUES = {
    "forged-object": '{"forged": true}',
    "not-json": "not json",
    "json-array": "[1]",
}

CALLS = {
    "enqueue_delivery": "SELECT * FROM email.enqueue_delivery('v-new', 'verification-code', "
    "'v@example.com', '{}', NULL)",
    "enqueue_deliveries": "SELECT * FROM email.enqueue_deliveries(ARRAY['v-new1', 'v-new2'], "
    "ARRAY['verification-code', 'verification-code'], ARRAY['a@example.com', 'b@example.com'], "
    "ARRAY['{}', '{}']::jsonb[], ARRAY[NULL, NULL]::timestamptz[])",
    "claim_delivery": "SELECT * FROM email.claim_delivery('v-queued', interval '5 minutes')",
    "reap_stale_deliveries": "SELECT * FROM email.reap_stale_deliveries("
    "interval '5 minutes', 5, 1000)",
}


@pytest.fixture(params=["direct", "pgbouncer"])
async def attacker_and_victim(
    request: pytest.FixtureRequest,
    worker: asyncpg.Connection,
    database: str,
) -> AsyncIterator[tuple[asyncpg.Connection, asyncpg.Connection]]:
    if request.param == "direct":
        yield worker, worker
        return
    bouncer: PgBouncer = request.getfixturevalue("pgbouncer_one")
    attacker = await connect_via(bouncer, database, WORKER_LOGIN)
    victim = await connect_via(bouncer, database, WORKER_LOGIN)
    try:
        # pool_size=1: the two clients really share one server session
        pids = {await c.fetchval("SELECT pg_backend_pid()") for c in (attacker, victim)}
        assert len(pids) == 1
        yield attacker, victim
    finally:
        await attacker.close()
        await victim.close()


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("value", VALUES)
async def test_a_session_event_payload_cannot_reach_a_later_lifecycle_call(
    owner: asyncpg.Connection,
    worker: asyncpg.Connection,
    superuser: asyncpg.Connection,
    attacker_and_victim: tuple[asyncpg.Connection, asyncpg.Connection],
    value: str,
    call: str,
) -> None:
    attacker, victim = attacker_and_victim
    await arrange(worker, "v-queued", "queued")
    await arrange(worker, "v-in_progress", "in_progress")
    await time_travel(
        superuser,
        "UPDATE email.deliveries SET last_attempted_at = now() - interval '1 hour', "
        "lease_expires_at = now() - interval '55 minutes' WHERE delivery_id = 'v-in_progress'",
    )
    last_event = await owner.fetchval("SELECT max(id) FROM email.delivery_events")

    await attempt(attacker, "SET email.event_payload = $$" + VALUES[value] + "$$")

    error = await attempt(victim, CALLS[call])
    assert error is None, f"{call} failed: {type(error).__name__}: {error}"
    written = await owner.fetch(
        "SELECT delivery_id, status::text, payload::text FROM email.delivery_events "
        "WHERE id > $1 ORDER BY id",
        last_event,
    )
    assert written, f"{call} wrote no event"
    leaked = [tuple(row) for row in written if row["payload"] is not None]
    assert leaked == [], f"events of {call} carry the attacker's session payload"


async def test_writer_cannot_make_a_role_default_event_payload(
    owner: asyncpg.Connection, worker: asyncpg.Connection, cluster: Cluster, database: str
) -> None:
    """``ALTER ROLE <itself> SET`` is open to any login for ordinary settings; for the
    placeholder ``email.event_payload`` PostgreSQL refuses it (holds today: a guard)."""
    for statement in (
        f"ALTER ROLE {WORKER_LOGIN} SET email.event_payload = '{{\"forged\": true}}'",
        f'ALTER ROLE {WORKER_LOGIN} IN DATABASE "{database}" '
        "SET email.event_payload = '{\"forged\": true}'",
        "ALTER ROLE email_writer SET email.event_payload = '{\"forged\": true}'",
        f'ALTER DATABASE "{database}" SET email.event_payload = \'{{"forged": true}}\'',
    ):
        assert await attempt(worker, statement) is not None, statement
    assert not await owner.fetchval(
        "SELECT count(*) FROM pg_db_role_setting s, unnest(s.setconfig) c "
        "WHERE c LIKE 'email.event_payload=%'"
    )
    await arrange(worker, "d1", "queued")
    fresh = await asyncpg.connect(cluster.dsn(database, WORKER_LOGIN))
    try:
        await fresh.execute("SELECT FROM email.claim_delivery('d1', interval '5 minutes')")
    finally:
        await fresh.close()
    assert (
        await owner.fetchval("SELECT count(*) FROM email.delivery_events WHERE payload IS NOT NULL")
        == 0
    )
