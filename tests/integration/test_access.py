"""The grant and RLS matrix, tried with real statements, and the lock-down of every function.

The design, written out here independently of ``catalog.TABLE_PRIVILEGES``: ``email_reader``
and ``email_writer`` read both tables and write neither (since revision 0005 the worker
writes only through the SECURITY DEFINER lifecycle functions, and only the owner's trigger
writes events); nobody else gets anything; only the owner deletes or truncates. Group roles
are exercised through the logins the README tells users to create; Supabase's ``anon`` and
``authenticated`` through ``SET ROLE`` from the owner, which is a member of both, as
Supabase's ``postgres`` is.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.support.cluster import DASHBOARD_LOGIN, NOBODY_LOGIN, OWNER, WORKER_LOGIN, Cluster
from tests.support.db import connect, insert_delivery

TABLES = ("deliveries", "delivery_events")
COMMANDS = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE")

# principal -> (login to connect as, role to SET ROLE to, or None)
PRINCIPALS = {
    "email_writer": (WORKER_LOGIN, None),
    "email_reader": (DASHBOARD_LOGIN, None),
    "anon": (OWNER, "anon"),
    "authenticated": (OWNER, "authenticated"),
    "no grants": (NOBODY_LOGIN, None),
}

ALLOWED = {
    "email_writer": {("deliveries", "SELECT"), ("delivery_events", "SELECT")},
    "email_reader": {("deliveries", "SELECT"), ("delivery_events", "SELECT")},
}

STATEMENTS = {
    ("deliveries", "SELECT"): "SELECT count(*) FROM email.deliveries",
    ("deliveries", "INSERT"): "INSERT INTO email.deliveries (delivery_id, workflow, recipient) "
    "VALUES ('access-new', 'welcome', 'new@example.com')",
    ("deliveries", "UPDATE"): "UPDATE email.deliveries SET status = 'in_progress', attempts = 1 "
    "WHERE delivery_id = 'access-1'",
    ("deliveries", "DELETE"): "DELETE FROM email.deliveries WHERE delivery_id = 'access-1'",
    ("deliveries", "TRUNCATE"): "TRUNCATE email.deliveries CASCADE",
    ("delivery_events", "SELECT"): "SELECT count(*) FROM email.delivery_events",
    ("delivery_events", "INSERT"): "INSERT INTO email.delivery_events "
    "(delivery_id, status, attempt) VALUES ('access-1', 'queued', 0)",
    ("delivery_events", "UPDATE"): "UPDATE email.delivery_events SET error_code = 'x' "
    "WHERE delivery_id = 'access-1'",
    ("delivery_events", "DELETE"): "DELETE FROM email.delivery_events "
    "WHERE delivery_id = 'access-1'",
    ("delivery_events", "TRUNCATE"): "TRUNCATE email.delivery_events",
}

# What a permitted statement must report: rows really visible and touched through RLS.
EXPECTED_STATUS = {"INSERT": "INSERT 0 1", "UPDATE": "UPDATE 1", "DELETE": "DELETE 1"}


@pytest.fixture(scope="module")
async def sessions(
    cluster: Cluster, module_database: str
) -> AsyncIterator[dict[str, asyncpg.Connection]]:
    async with connect(cluster, module_database) as owner:
        await insert_delivery(owner, "access-1")
    opened: dict[str, asyncpg.Connection] = {}
    try:
        for login in {login for login, _ in PRINCIPALS.values()}:
            opened[login] = await asyncpg.connect(cluster.dsn(module_database, login))
        yield opened
    finally:
        for conn in opened.values():
            await conn.close()


async def _try(conn: asyncpg.Connection, role: str | None, statement: str) -> object:
    """Run ``statement`` as ``role`` in a transaction that is always rolled back."""
    transaction = conn.transaction()
    await transaction.start()
    try:
        if role:
            await conn.execute(f"SET LOCAL ROLE {role}")
        if statement.startswith("SELECT"):
            return await conn.fetchval(statement)
        return await conn.execute(statement)
    finally:
        await transaction.rollback()


MATRIX = list(itertools.product(PRINCIPALS, TABLES, COMMANDS))


@pytest.mark.parametrize(("principal", "table", "command"), MATRIX)
async def test_matrix(
    sessions: dict[str, asyncpg.Connection], principal: str, table: str, command: str
) -> None:
    login, role = PRINCIPALS[principal]
    allowed = (table, command) in ALLOWED.get(principal, set())
    conn = sessions[login]

    # The catalog says the same as the statement does (asked by the owner, who can see).
    grantee = role or login
    assert (
        await sessions[OWNER].fetchval(
            "SELECT has_table_privilege($1, $2, $3)", grantee, f"email.{table}", command
        )
        is allowed
    )

    statement = STATEMENTS[table, command]
    if allowed:
        result = await _try(conn, role, statement)
        if command == "SELECT":
            assert isinstance(result, int) and result >= 1  # the policy lets rows through
        else:
            assert result == EXPECTED_STATUS[command]
    else:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await _try(conn, role, statement)


async def test_only_the_owner_deletes_and_truncates(
    sessions: dict[str, asyncpg.Connection],
) -> None:
    owner = sessions[OWNER]
    for table, command in itertools.product(TABLES, ("DELETE", "TRUNCATE")):
        result = await _try(owner, None, STATEMENTS[table, command])
        assert result in ("DELETE 1", "TRUNCATE TABLE"), (table, command)


async def test_rls_enabled_with_one_policy_per_granted_command(
    sessions: dict[str, asyncpg.Connection],
) -> None:
    owner = sessions[OWNER]
    rls = await owner.fetch(
        "SELECT relname, relrowsecurity FROM pg_class "
        "WHERE relnamespace = 'email'::regnamespace AND relname = ANY($1) ORDER BY 1",
        list(TABLES),
    )
    assert [tuple(r) for r in rls] == [(t, True) for t in sorted(TABLES)]
    policies = await owner.fetch(
        "SELECT tablename, policyname, roles::text[], cmd, permissive FROM pg_policies "
        "WHERE schemaname = 'email' AND tablename = ANY($1)",
        list(TABLES),
    )
    assert {(t, name, tuple(roles), cmd, kind) for t, name, roles, cmd, kind in policies} == {
        (table, f"{table}_{role}_{command.lower()}", (role,), command, "PERMISSIVE")
        for role, grants in ALLOWED.items()
        for table, command in grants
    }


async def test_nothing_for_public_or_the_api_roles(
    sessions: dict[str, asyncpg.Connection],
) -> None:
    owner = sessions[OWNER]
    grantees = await owner.fetch(
        "SELECT DISTINCT c.relname, CASE a.grantee WHEN 0 THEN 'PUBLIC' "
        "ELSE a.grantee::regrole::text END "
        "FROM pg_class c, aclexplode(c.relacl) a "
        "WHERE c.relnamespace = 'email'::regnamespace AND c.relname = ANY($1)",
        list(TABLES),
    )
    assert {g for _, g in grantees} == {OWNER, "email_writer", "email_reader"}
    for role in ("anon", "authenticated", "service_role", NOBODY_LOGIN):
        assert not await owner.fetchval("SELECT has_schema_privilege($1, 'email', 'USAGE')", role)
    for role in ("email_writer", "email_reader"):
        assert await owner.fetchval("SELECT has_schema_privilege($1, 'email', 'USAGE')", role)


async def test_every_function_is_locked_down(sessions: dict[str, asyncpg.Connection]) -> None:
    """EXECUTE revoked from PUBLIC and ``search_path = pg_catalog, pg_temp`` on every function
    in schema email: pg_temp last, so a temporary object of the caller can never stand in for
    a type or table inside a function that runs as the owner."""
    functions = await sessions[OWNER].fetch(
        """
        SELECT p.oid::regprocedure::text AS name, p.proconfig,
               p.proacl IS NOT NULL AND NOT EXISTS (
                   SELECT FROM aclexplode(p.proacl) a
                   WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE') AS no_public,
               ARRAY(SELECT r FROM unnest($1::text[]) r
                     WHERE has_function_privilege(r, p.oid, 'EXECUTE')) AS executable_by
        FROM pg_proc p WHERE p.pronamespace = 'email'::regnamespace ORDER BY 1
        """,
        ["anon", "authenticated", NOBODY_LOGIN],
    )
    names = {f["name"] for f in functions}
    assert {
        "email.guard_delivery()",
        "email.audit_inserted_deliveries()",
        "email.audit_updated_deliveries()",
        "email.is_allowed_transition(email.delivery_status,email.delivery_status)",
    } <= names
    assert [f["name"] for f in functions if not f["no_public"]] == []
    assert [
        f["name"]
        for f in functions
        if "search_path=pg_catalog, pg_temp" not in (f["proconfig"] or [])
    ] == []
    assert [(f["name"], f["executable_by"]) for f in functions if f["executable_by"]] == []
