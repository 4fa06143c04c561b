"""7. The role matrix's "cannots", tried with real statements by real logins.

Most of these hold today; they sit beside the failing ones as regression guards for the
fix. The one that fails today: the writer may still INSERT into ``delivery_events``, which
the fix revokes (events are written by the audit trigger, whoever changes a delivery).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.security._attack import (
    arrange_one_of_each,
    assert_nothing_changed,
    attempt,
    snapshot,
)
from tests.support.cluster import NOBODY_LOGIN, OWNER, WORKER_LOGIN

DELETES = {
    "deliveries-delete": "DELETE FROM email.deliveries",
    "deliveries-truncate": "TRUNCATE email.deliveries CASCADE",
    "events-delete": "DELETE FROM email.delivery_events",
    "events-truncate": "TRUNCATE email.delivery_events",
    "events-update": "UPDATE email.delivery_events SET error_message = NULL, payload = NULL",
}


@pytest.mark.parametrize("statement", DELETES)
async def test_writer_cannot_delete_truncate_or_update_history(
    owner: asyncpg.Connection, worker: asyncpg.Connection, statement: str
) -> None:
    await arrange_one_of_each(worker)
    before = await snapshot(owner)
    error = await attempt(worker, DELETES[statement])
    assert isinstance(error, asyncpg.InsufficientPrivilegeError), error
    await assert_nothing_changed(owner, before, error)


async def test_writer_cannot_insert_into_delivery_events_at_all(
    owner: asyncpg.Connection, worker: asyncpg.Connection
) -> None:
    """Even a truthful-looking event: only the audit trigger writes events."""
    await arrange_one_of_each(worker)
    before = await snapshot(owner)
    error = await attempt(
        worker,
        "INSERT INTO email.delivery_events (delivery_id, status, attempt) "
        "VALUES ('d-queued', 'queued', 0)",
    )
    await assert_nothing_changed(owner, before, error)
    assert not await owner.fetchval(
        "SELECT has_table_privilege('email_writer', 'email.delivery_events', 'INSERT')"
    ), "email_writer still holds INSERT on email.delivery_events"


async def test_writer_cannot_execute_requeue_delivery(
    owner: asyncpg.Connection, worker: asyncpg.Connection
) -> None:
    await arrange_one_of_each(worker)
    before = await snapshot(owner)
    error = await attempt(worker, "SELECT * FROM email.requeue_delivery('d-failed', 'x')")
    assert isinstance(error, asyncpg.InsufficientPrivilegeError), error
    await assert_nothing_changed(owner, before, error)


READER_WRITES = {
    "insert-delivery": "INSERT INTO email.deliveries (delivery_id, workflow, recipient) "
    "VALUES ('r-new', 'welcome', 'r@example.com')",
    "update-delivery": "UPDATE email.deliveries SET status = 'sent'",
    "delete-delivery": "DELETE FROM email.deliveries",
    "truncate-deliveries": "TRUNCATE email.deliveries CASCADE",
    "insert-event": "INSERT INTO email.delivery_events (delivery_id, status, attempt) "
    "VALUES ('d-queued', 'sent', 1)",
    "update-event": "UPDATE email.delivery_events SET payload = NULL",
    "delete-event": "DELETE FROM email.delivery_events",
    # a row lock would block the workers' claims
    "select-for-update": "SELECT FROM email.deliveries FOR UPDATE",
    "lock-table": "BEGIN; LOCK TABLE email.deliveries IN SHARE MODE; COMMIT",
    "enqueue_delivery": "SELECT * FROM email.enqueue_delivery('r-new', 'welcome', "
    "'r@example.com', '{}', NULL)",
    "enqueue_deliveries": "SELECT * FROM email.enqueue_deliveries(ARRAY['r-new'], "
    "ARRAY['welcome'], ARRAY['r@example.com'], ARRAY['{}']::jsonb[], "
    "ARRAY[NULL]::timestamptz[])",
    "claim_delivery": "SELECT * FROM email.claim_delivery('d-queued', interval '5 minutes')",
    "mark_delivery_sent": "SELECT * FROM email.mark_delivery_sent('d-in_progress', 1, NULL)",
    "mark_delivery_failed": "SELECT * FROM email.mark_delivery_failed('d-in_progress', 1, "
    "'X', 'x', false, 5, NULL)",
    "mark_delivery_dead_letter": "SELECT * FROM email.mark_delivery_dead_letter('d-queued', 'm-1')",
    "reap_stale_deliveries": "SELECT * FROM email.reap_stale_deliveries("
    "interval '1 microsecond', 5, 1000)",
    "requeue_delivery": "SELECT * FROM email.requeue_delivery('d-failed', 'x')",
}


@pytest.mark.parametrize("statement", READER_WRITES)
async def test_reader_cannot_write_anything(
    owner: asyncpg.Connection,
    worker: asyncpg.Connection,
    reader: asyncpg.Connection,
    statement: str,
) -> None:
    await arrange_one_of_each(worker)
    before = await snapshot(owner)
    error = await attempt(reader, READER_WRITES[statement])
    if reader.is_in_transaction():  # the explicit BEGIN of "lock-table"
        await reader.execute("ROLLBACK")
    assert isinstance(error, asyncpg.InsufficientPrivilegeError), error
    await assert_nothing_changed(owner, before, error)


@pytest.fixture(params=["anon", "authenticated", "service_role", NOBODY_LOGIN])
async def outsider(
    request: pytest.FixtureRequest, owner: asyncpg.Connection, nobody: asyncpg.Connection
) -> AsyncIterator[tuple[asyncpg.Connection, str | None]]:
    """Supabase's Data API roles through ``SET ROLE`` from the owner, or the bare login."""
    if request.param == NOBODY_LOGIN:
        yield nobody, None
    else:
        yield owner, request.param


async def as_role(
    conn: asyncpg.Connection, role: str | None, statement: str
) -> asyncpg.PostgresError | None:
    """One statement as ``role`` in a transaction that is always rolled back."""
    transaction = conn.transaction()
    await transaction.start()
    try:
        if role:
            await conn.execute(f"SET LOCAL ROLE {role}")
        await conn.execute(statement)
    except asyncpg.PostgresError as error:
        return error
    finally:
        await transaction.rollback()
    return None


async def test_outsiders_can_read_or_execute_nothing_in_email(
    owner: asyncpg.Connection,
    worker: asyncpg.Connection,
    outsider: tuple[asyncpg.Connection, str | None],
) -> None:
    """Every table, view and sequence of schema ``email`` unreadable, every function not
    executable, for ``anon``, ``authenticated``, ``service_role`` (BYPASSRLS, which needs no
    policy but still a grant) and a login with no grants."""
    conn, role = outsider
    await arrange_one_of_each(worker)
    relations = [
        r["name"]
        for r in await owner.fetch(
            "SELECT format('%I.%I', n.nspname, c.relname) AS name FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'email' AND c.relkind IN ('r', 'v', 'm', 'S', 'p')"
        )
    ]
    assert {"email.deliveries", "email.delivery_events", "email.pending_deliveries"} <= set(
        relations
    )
    functions = await owner.fetch(
        "SELECT p.oid::regprocedure::text AS signature, p.prorettype = 'trigger'::regtype "
        "AS is_trigger, ARRAY(SELECT format_type(t, NULL) FROM unnest(p.proargtypes) t) "
        "AS args FROM pg_proc p WHERE p.pronamespace = 'email'::regnamespace"
    )
    assert len(functions) >= 14
    grantee = role or NOBODY_LOGIN
    allowed = []
    for relation in relations:
        if await as_role(conn, role, f"SELECT FROM {relation} LIMIT 1") is None:
            allowed.append(f"SELECT {relation}")
    for function in functions:
        if await owner.fetchval(
            "SELECT has_function_privilege($1, $2::regprocedure, 'EXECUTE')",
            grantee,
            function["signature"],
        ):
            allowed.append(f"EXECUTE {function['signature']}")
        if not function["is_trigger"]:
            name = function["signature"].split("(")[0]
            nulls = ", ".join(f"NULL::{t}" for t in function["args"])
            if await as_role(conn, role, f"SELECT {name}({nulls})") is None:
                allowed.append(f"call {name}")
    assert allowed == []


GIVEAWAYS = (
    "GRANT SELECT ON email.deliveries TO anon",
    "GRANT SELECT, INSERT, UPDATE ON email.deliveries TO authenticated",
    "GRANT USAGE ON SCHEMA email TO anon",
    "GRANT EXECUTE ON FUNCTION email.claim_delivery(text, interval) TO anon",
    f"GRANT email_writer TO {NOBODY_LOGIN}",
    "GRANT email_reader TO anon",
    "CREATE POLICY everyone ON email.deliveries FOR DELETE TO email_writer USING (true)",
    "ALTER TABLE email.deliveries DISABLE ROW LEVEL SECURITY",
)


async def test_writer_cannot_give_its_access_away(
    owner: asyncpg.Connection, worker: asyncpg.Connection
) -> None:
    """A GRANT without grant option is a no-op with a WARNING, not an error: judge by the
    catalog afterwards."""
    for statement in GIVEAWAYS:
        await attempt(worker, statement)
    acl = await owner.fetchval(
        "SELECT array_agg(a.grantee::regrole::text ORDER BY 1) FROM pg_class c, "
        "aclexplode(c.relacl) a WHERE c.oid = 'email.deliveries'::regclass"
    )
    assert set(acl) == {OWNER, "email_writer", "email_reader"}
    for role in ("anon", "authenticated", NOBODY_LOGIN):
        assert not await owner.fetchval("SELECT has_schema_privilege($1, 'email', 'USAGE')", role)
        assert not await owner.fetchval(
            "SELECT has_function_privilege($1, 'email.claim_delivery(text, interval)', 'EXECUTE')",
            role,
        )
    assert not await owner.fetchval(
        "SELECT pg_has_role($1, 'email_writer', 'MEMBER')", NOBODY_LOGIN
    )
    assert await owner.fetchval(
        "SELECT relrowsecurity FROM pg_class WHERE oid = 'email.deliveries'::regclass"
    )
    assert not await owner.fetchval(
        "SELECT count(*) FROM pg_policies WHERE schemaname = 'email' AND cmd = 'DELETE'"
    )


TRIGGER_ESCAPES = {
    "session_replication_role": "SET session_replication_role = replica",
    "disable-trigger": "ALTER TABLE email.deliveries DISABLE TRIGGER deliveries_audit_update",
    "drop-trigger": "DROP TRIGGER deliveries_audit_update ON email.deliveries",
    "replace-function": "CREATE OR REPLACE FUNCTION email.audit_updated_deliveries() "
    "RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$",
    "create-in-email": "CREATE TABLE email.shadow (id int)",
    "alter-owner": f"ALTER TABLE email.deliveries OWNER TO {WORKER_LOGIN}",
}


@pytest.mark.parametrize("escape", TRIGGER_ESCAPES)
async def test_writer_cannot_switch_off_the_audit_or_change_the_schema(
    owner: asyncpg.Connection, worker: asyncpg.Connection, escape: str
) -> None:
    """Superuser or ownership needed for each (holds today): the triggers always run."""
    error = await attempt(worker, TRIGGER_ESCAPES[escape])
    assert isinstance(error, asyncpg.InsufficientPrivilegeError), error
    assert (
        await owner.fetchval(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'email.deliveries'::regclass "
            "AND NOT tgisinternal AND tgenabled = 'O'"
        )
        == 5  # the guard, the two audit triggers, the purge and the TRUNCATE check
    )
