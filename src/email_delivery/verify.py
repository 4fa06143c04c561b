"""``email-delivery verify``: does this database carry schema ``email`` exactly as designed?

Checks, each problem one line:

- the Alembic revision in ``email.alembic_version`` is the head of this package;
- no drift in tables, columns, types, indexes, constraints, functions, triggers, policies and
  views: Alembic's autogenerate comparison with the same filters as ``alembic/env.py`` and
  the same alembic_utils entities (what ``alembic check`` does), read-only;
- RLS is enabled on both tables; the group roles exist and cannot log in;
- grants on the schema, tables, views, sequences and functions are exactly those of
  ``catalog.TABLE_PRIVILEGES``, ``catalog.VIEW_PRIVILEGES`` and ``catalog.FUNCTION_EXECUTE``:
  nothing missing, nothing extra (PUBLIC, ``anon`` and ``authenticated`` included); every view has
  ``security_invoker``;
- ``public`` holds nothing of ours (no table, view, type or function with our names, and
  not our Alembic history).

Run it as the migration owner: alembic_utils compares a function or view by creating it
inside a savepoint, which is rolled back (the whole check runs in one transaction that is
rolled back, so verify never changes anything).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from alembic.autogenerate import produce_migrations
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from email_delivery import autogen, catalog, maintenance
from email_delivery.base import SCHEMA, Base
from email_delivery.errors import NotMigrated
from email_delivery.migrate import alembic_config

_PRIVILEGE_NAMES = {
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "TRUNCATE",
    "REFERENCES",
    "TRIGGER",
    "MAINTAIN",
}


def head_revision() -> str:
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    return ",".join(sorted(heads))


def current_revision(conn: Connection) -> str | None:
    """The revision recorded in ``email.alembic_version``; None when not migrated."""
    exists = conn.execute(text("SELECT to_regclass('email.alembic_version') IS NOT NULL")).scalar()
    if not exists:
        return None
    rows = conn.execute(text("SELECT version_num FROM email.alembic_version")).scalars().all()
    return ",".join(sorted(rows)) if rows else None


def _describe(diff: Any) -> str:
    if isinstance(diff, list):  # alembic groups column modifications in a list
        return "; ".join(_describe(d) for d in diff)
    kind, *rest = diff
    parts = []
    for item in rest:
        if isinstance(item, dict):  # the column's unchanged attributes: noise in one line
            continue
        name = getattr(item, "name", None)
        if name is None and hasattr(item, "identity"):
            name = item.identity
        if isinstance(item, str | int | bool) or item is None:
            parts.append(repr(item) if item is not None else "None")
        elif name is not None:
            parts.append(str(name))
        else:
            parts.append(str(item)[:80])
    line = f"{kind} " + " ".join(parts)
    return " ".join(line.split())[:300]


def schema_drift(conn: Connection) -> list[str]:
    """Alembic's autogenerate diff against the models and the head SQL objects, one line
    per difference."""
    autogen.register()
    context = MigrationContext.configure(connection=conn, opts=autogen.COMPARE_OPTIONS)
    script = produce_migrations(context, Base.metadata)
    assert script.upgrade_ops is not None
    return [f"drift: {_describe(diff)}" for diff in script.upgrade_ops.as_diffs()]


def _acl_rows(conn: Connection, sql: str) -> set[tuple[str, str, str]]:
    return {(row[0], row[1], row[2]) for row in conn.execute(text(sql))}


def _expected_relation_grants() -> set[tuple[str, str, str]]:
    expected: set[tuple[str, str, str]] = set()
    for table, grants in (*catalog.TABLE_PRIVILEGES.items(), *catalog.VIEW_PRIVILEGES.items()):
        for role, privileges in grants.items():
            expected |= {(table, role, p) for p in privileges}
    return expected


def _expected_function_grants() -> set[tuple[str, str, str]]:
    return {
        (signature, role, "EXECUTE")
        for signature, roles in catalog.function_grants().items()
        for role in roles
    }


def _compare(
    what: str, actual: set[tuple[str, str, str]], expected: set[tuple[str, str, str]]
) -> Iterable[str]:
    for obj, role, privilege in sorted(expected - actual):
        yield f"grant missing: {privilege} on {what} email.{obj} to {role}"
    for obj, role, privilege in sorted(actual - expected):
        yield f"unexpected grant: {privilege} on {what} email.{obj} to {role}"


_GRANTEE = "CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(a.grantee) END"


def catalog_problems(conn: Connection) -> list[str]:
    problems: list[str] = []

    for table in catalog.RLS_TABLES:
        enabled = conn.execute(
            text(
                "SELECT c.relrowsecurity FROM pg_catalog.pg_class c "
                "WHERE c.oid = to_regclass(:name)"
            ),
            {"name": f"{SCHEMA}.{table}"},
        ).scalar()
        if enabled is None:
            problems.append(f"missing table: email.{table}")
        elif not enabled:
            problems.append(f"row level security is disabled on email.{table}")

    for role in catalog.ROLES:
        can_login = conn.execute(
            text("SELECT rolcanlogin FROM pg_catalog.pg_roles WHERE rolname = :r"), {"r": role}
        ).scalar()
        if can_login is None:
            problems.append(f"missing role: {role}")
        elif can_login:
            problems.append(f"role {role} can log in; it should be a NOLOGIN group role")

    schema_acl = _acl_rows(
        conn,
        f"""
        SELECT 'email', {_GRANTEE}, a.privilege_type
        FROM pg_catalog.pg_namespace n, aclexplode(n.nspacl) a
        WHERE n.nspname = 'email' AND a.grantee <> n.nspowner
        """,
    )
    expected_schema = {("email", role, "USAGE") for role in catalog.ROLES}
    for _, role, privilege in sorted(expected_schema - schema_acl):
        problems.append(f"grant missing: {privilege} on schema email to {role}")
    for _, role, privilege in sorted(schema_acl - expected_schema):
        problems.append(f"unexpected grant: {privilege} on schema email to {role}")

    relations = _acl_rows(
        conn,
        f"""
        SELECT c.relname, {_GRANTEE}, a.privilege_type
        FROM pg_catalog.pg_class c, aclexplode(c.relacl) a
        WHERE c.relnamespace = 'email'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
          AND a.grantee <> c.relowner
        """,
    )
    problems += _compare("table/view", relations, _expected_relation_grants())

    # A NULL proacl means the default: EXECUTE for PUBLIC.
    functions = _acl_rows(
        conn,
        f"""
        SELECT p.proname || '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ')',
               {_GRANTEE}, a.privilege_type
        FROM pg_catalog.pg_proc p,
             aclexplode(coalesce(p.proacl, pg_catalog.acldefault('f', p.proowner))) a
        WHERE p.pronamespace = 'email'::regnamespace AND a.grantee <> p.proowner
        """,
    )
    problems += _compare("function", functions, _expected_function_grants())

    for view in catalog.head().of_kind("view"):
        options = conn.execute(
            text(
                "SELECT coalesce(c.reloptions, '{}') FROM pg_catalog.pg_class c "
                "WHERE c.oid = to_regclass(:name)"
            ),
            {"name": f"{SCHEMA}.{view.name}"},
        ).scalar()
        if options is None:
            problems.append(f"missing view: email.{view.name}")
        elif "security_invoker=true" not in options:
            problems.append(f"view email.{view.name} lacks security_invoker = true")

    problems += function_problems(conn)
    problems += column_grant_problems(conn)
    problems += role_setting_problems(conn)
    problems += public_problems(conn)
    return problems


_SAFE_SEARCH_PATH = "search_path=pg_catalog, pg_temp"


def function_problems(conn: Connection) -> list[str]:
    """Every function of ours belongs to the schema owner, runs with ``search_path =
    pg_catalog, pg_temp``, and runs as its owner (SECURITY DEFINER) exactly when the head
    says so: a definer function owned by anyone else would run as them."""
    definers = {
        obj.identity
        for obj in catalog.head().of_kind("function")
        if "SECURITY DEFINER" in obj.definition.upper()
    }
    rows = conn.execute(
        text(
            """
            SELECT p.proname || '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ')',
                   pg_catalog.pg_get_userbyid(p.proowner),
                   pg_catalog.pg_get_userbyid(c.relowner),
                   p.prosecdef, coalesce(p.proconfig, '{}')
            FROM pg_catalog.pg_proc p
            CROSS JOIN pg_catalog.pg_class c
            WHERE p.pronamespace = 'email'::regnamespace
              AND c.oid = to_regclass('email.deliveries')
            """
        )
    ).all()
    problems = []
    for signature, owner, schema_owner, definer, config in rows:
        if owner != schema_owner:
            problems.append(
                f"function email.{signature} is owned by {owner}, not the schema owner "
                f"{schema_owner}"
            )
        if _SAFE_SEARCH_PATH not in config:
            problems.append(f"function email.{signature} lacks SET {_SAFE_SEARCH_PATH}")
        if definer and signature not in definers:
            problems.append(f"function email.{signature} runs as its owner (SECURITY DEFINER)")
        if not definer and signature in definers:
            problems.append(f"function email.{signature} should be SECURITY DEFINER")
    return problems


def column_grant_problems(conn: Connection) -> list[str]:
    """Column privileges: none are designed (table grants say it all), so any is a problem."""
    rows = conn.execute(
        text(
            f"""
            SELECT c.relname, att.attname, {_GRANTEE}, a.privilege_type
            FROM pg_catalog.pg_attribute att
            JOIN pg_catalog.pg_class c ON c.oid = att.attrelid
            CROSS JOIN LATERAL aclexplode(att.attacl) a
            WHERE c.relnamespace = 'email'::regnamespace AND att.attacl IS NOT NULL
            ORDER BY 1, 2, 3, 4
            """
        )
    ).all()
    return [
        f"unexpected grant: {privilege} ({column}) on table email.{table} to {grantee}"
        for table, column, grantee, privilege in rows
    ]


_BREAKING_SETTINGS = ("default_transaction_read_only=on", "default_transaction_read_only=true")


def role_setting_problems(conn: Connection) -> list[str]:
    """A role default that stops every new connection of a login in our groups (a leaked
    worker login may set its own: docs/security.md, residual risks)."""
    rows = conn.execute(
        text(
            """
            SELECT DISTINCT m.rolname, s.setting
            FROM pg_catalog.pg_auth_members am
            JOIN pg_catalog.pg_roles g ON g.oid = am.roleid
            JOIN pg_catalog.pg_roles m ON m.oid = am.member
            JOIN pg_catalog.pg_db_role_setting d
              ON d.setrole = m.oid
             AND d.setdatabase IN (0, (SELECT oid FROM pg_catalog.pg_database
                                       WHERE datname = current_database()))
            CROSS JOIN LATERAL unnest(d.setconfig) AS s(setting)
            WHERE g.rolname = ANY(:roles)
            ORDER BY 1, 2
            """
        ),
        {"roles": list(catalog.ROLES)},
    ).all()
    return [
        f"login {login} has a default that breaks its connections: ALTER ROLE {login} SET "
        f"{setting.replace('=', ' = ', 1)} (RESET it)"
        for login, setting in rows
        if setting.lower() in _BREAKING_SETTINGS
    ]


def _our_names() -> tuple[set[str], set[str], set[str]]:
    relations = {table.name for table in Base.metadata.tables.values()}
    views = {view.name for view in catalog.head().of_kind("view")}
    relations |= views | {"alembic_version"}
    types = {"delivery_status"}
    functions = {function.name for function in catalog.head().of_kind("function")}
    return relations, types, functions


def public_problems(conn: Connection) -> list[str]:
    """Objects of ours in ``public`` (another Alembic history there is not ours)."""
    relations, types, functions = _our_names()
    problems = []
    # Another application may well have a table called deliveries: it is ours only when its
    # columns are ours too.
    columns_of = {view.name: None for view in catalog.head().of_kind("view")} | {
        table.name: sorted(table.columns.keys()) for table in Base.metadata.tables.values()
    }
    relation_rows = conn.execute(
        text(
            "SELECT c.relname, array_agg(a.attname::text ORDER BY a.attname::text) "
            "FROM pg_catalog.pg_class c "
            "JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 "
            "AND NOT a.attisdropped "
            "WHERE c.relnamespace = 'public'::regnamespace AND c.relname = ANY(:names) "
            "AND c.relkind IN ('r', 'p', 'v', 'm') AND c.relname <> 'alembic_version' "
            "GROUP BY c.relname"
        ),
        {"names": sorted(relations)},
    ).all()
    problems += [
        f"object of ours in schema public: public.{name}"
        for name, columns in relation_rows
        if columns_of.get(name) in (None, sorted(columns))
    ]
    rows = conn.execute(
        text(
            "SELECT t.typname FROM pg_catalog.pg_type t "
            "WHERE t.typnamespace = 'public'::regnamespace AND t.typname = ANY(:names)"
        ),
        {"names": sorted(types)},
    ).scalars()
    problems += [f"object of ours in schema public: type public.{name}" for name in rows]
    rows = conn.execute(
        text(
            "SELECT DISTINCT p.proname FROM pg_catalog.pg_proc p "
            "WHERE p.pronamespace = 'public'::regnamespace AND p.proname = ANY(:names)"
        ),
        {"names": sorted(functions)},
    ).scalars()
    problems += [f"object of ours in schema public: function public.{name}" for name in rows]
    if conn.execute(text("SELECT to_regclass('public.alembic_version') IS NOT NULL")).scalar():
        ours = {
            script.revision
            for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()
        }
        recorded = set(
            conn.execute(text("SELECT version_num FROM public.alembic_version")).scalars()
        )
        if recorded & ours:
            problems.append("our Alembic history is in public.alembic_version; it belongs in email")
    return problems


def maintenance_warnings(conn: Connection) -> list[str]:
    """What ``maintain`` should have done by now (partitions ahead, events in the default
    partition, the rollups' reach): warnings, not problems — the schema is as designed, and
    no event or statistic is lost meanwhile. Empty below revision 0007."""
    if conn.execute(text("SELECT to_regclass('email.delivery_rollup_state')")).scalar() is None:
        return []
    row = conn.execute(maintenance.STATE_SQL).one()
    return maintenance.warnings(maintenance.MaintenanceState(**row._asdict()))


def verify(conn: Connection) -> list[str]:
    """Every problem found, one line each; empty when the database is as designed.

    Raises ``NotMigrated`` when schema ``email`` was never migrated here. ``conn`` must be
    the migration owner's; the caller rolls back afterwards.
    """
    current = current_revision(conn)
    if current is None:
        raise NotMigrated("schema email is not migrated in this database")
    problems: list[str] = []
    head = head_revision()
    if current != head:
        problems.append(f"not at head: database is at revision {current}, head is {head}")
    else:
        problems += schema_drift(conn)
    problems += catalog_problems(conn)
    return problems
