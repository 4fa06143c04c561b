"""Hand-written Alembic operations for what autogenerate does not manage: roles, grants, RLS,
and the frozen SQL objects (functions, triggers, policies, views) of each revision.

Each operation is a small value object with a ``reverse()``; importing this module registers
them on ``alembic.op`` (``op.create_group_role(...)``, ``op.create_sql_object(...)`` and so
on). Every statement is plain SQL with no catalog read on the Python side, so ``alembic
upgrade --sql`` renders them too. Revisions may import this module (and ``base``): nothing
here reads a head definition.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alembic.operations import MigrateOperation, Operations

from email_delivery.sql import KINDS, SqlObject, parse_object


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _role_list(roles: Sequence[str]) -> str:
    return ", ".join("PUBLIC" if r.upper() == "PUBLIC" else _quote_ident(r) for r in roles)


@Operations.register_operation("create_group_role")
@dataclass(frozen=True, kw_only=True)
class CreateGroupRoleOp(MigrateOperation):
    """Create a NOLOGIN role unless it exists: roles are cluster-wide, databases share them."""

    name: str

    @classmethod
    def create_group_role(cls, operations: Operations, *, name: str) -> None:
        operations.invoke(cls(name=name))

    def reverse(self) -> DropGroupRoleOp:
        return DropGroupRoleOp(name=self.name)


@Operations.register_operation("drop_group_role")
@dataclass(frozen=True, kw_only=True)
class DropGroupRoleOp(MigrateOperation):
    """Drop a role only when nothing depends on it anywhere in the cluster.

    Privileges or objects in any database (``pg_shdepend``) and member logins other than the
    migrating role keep it; so does a role this migrator may not drop. Each is a NOTICE.
    """

    name: str

    @classmethod
    def drop_group_role(cls, operations: Operations, *, name: str) -> None:
        operations.invoke(cls(name=name))

    def reverse(self) -> CreateGroupRoleOp:
        return CreateGroupRoleOp(name=self.name)


@Operations.register_operation("grant_privileges")
@dataclass(frozen=True, kw_only=True)
class GrantPrivilegesOp(MigrateOperation):
    """``GRANT privileges ON target TO roles``; target is e.g. ``TABLE email.deliveries``."""

    privileges: tuple[str, ...]
    target: str
    roles: tuple[str, ...]

    @classmethod
    def grant_privileges(
        cls,
        operations: Operations,
        *,
        privileges: Sequence[str],
        target: str,
        roles: Sequence[str],
    ) -> None:
        operations.invoke(cls(privileges=tuple(privileges), target=target, roles=tuple(roles)))

    def reverse(self) -> RevokePrivilegesOp:
        return RevokePrivilegesOp(privileges=self.privileges, target=self.target, roles=self.roles)


@Operations.register_operation("revoke_privileges")
@dataclass(frozen=True, kw_only=True)
class RevokePrivilegesOp(MigrateOperation):
    """``REVOKE privileges ON target FROM roles``, skipping roles this cluster does not have.

    Supabase's ``anon`` and ``authenticated`` exist there and nowhere else, so revoking from
    them must not fail on a plain PostgreSQL.
    """

    privileges: tuple[str, ...]
    target: str
    roles: tuple[str, ...]

    @classmethod
    def revoke_privileges(
        cls,
        operations: Operations,
        *,
        privileges: Sequence[str],
        target: str,
        roles: Sequence[str],
    ) -> None:
        operations.invoke(cls(privileges=tuple(privileges), target=target, roles=tuple(roles)))

    def reverse(self) -> GrantPrivilegesOp:
        return GrantPrivilegesOp(privileges=self.privileges, target=self.target, roles=self.roles)


@Operations.register_operation("enable_row_level_security")
@dataclass(frozen=True, kw_only=True)
class EnableRowLevelSecurityOp(MigrateOperation):
    """``ALTER TABLE … ENABLE ROW LEVEL SECURITY`` (alembic_utils does not manage it)."""

    table: str

    @classmethod
    def enable_row_level_security(cls, operations: Operations, *, table: str) -> None:
        operations.invoke(cls(table=table))

    def reverse(self) -> DisableRowLevelSecurityOp:
        return DisableRowLevelSecurityOp(table=self.table)


@Operations.register_operation("disable_row_level_security")
@dataclass(frozen=True, kw_only=True)
class DisableRowLevelSecurityOp(MigrateOperation):
    """``ALTER TABLE … DISABLE ROW LEVEL SECURITY``."""

    table: str

    @classmethod
    def disable_row_level_security(cls, operations: Operations, *, table: str) -> None:
        operations.invoke(cls(table=table))

    def reverse(self) -> EnableRowLevelSecurityOp:
        return EnableRowLevelSecurityOp(table=self.table)


def create_group_role_sql(name: str) -> str:
    return f"""DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {_quote_literal(name)}) THEN
        CREATE ROLE {_quote_ident(name)} NOLOGIN;
    END IF;
END
$$"""


def drop_group_role_sql(name: str) -> str:
    literal = _quote_literal(name)
    return f"""DO $$
DECLARE
    role_oid oid := (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = {literal});
BEGIN
    IF role_oid IS NULL THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_shdepend
               WHERE refclassid = 'pg_catalog.pg_authid'::regclass AND refobjid = role_oid
                 AND deptype <> 'p') THEN
        RAISE NOTICE 'keeping role %: it still holds privileges or objects', {literal};
    ELSIF EXISTS (SELECT FROM pg_catalog.pg_auth_members m
                  JOIN pg_catalog.pg_roles r ON r.oid = m.member
                  WHERE m.roleid = role_oid AND r.rolname <> current_user) THEN
        RAISE NOTICE 'keeping role %: logins are members of it', {literal};
    ELSE
        BEGIN
            DROP ROLE {_quote_ident(name)};
        EXCEPTION WHEN insufficient_privilege OR dependent_objects_still_exist THEN
            RAISE NOTICE 'keeping role %: %', {literal}, SQLERRM;
        END;
    END IF;
END
$$"""


def grant_sql(op: GrantPrivilegesOp) -> str:
    return f"GRANT {', '.join(op.privileges)} ON {op.target} TO {_role_list(op.roles)}"


def revoke_sql(op: RevokePrivilegesOp) -> str:
    privileges = ", ".join(op.privileges)
    statements = []
    for role in op.roles:
        revoke = f"REVOKE {privileges} ON {op.target} FROM {_role_list([role])}"
        if role.upper() == "PUBLIC":
            statements.append(f"{revoke};")
        else:
            statements.append(
                f"IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = "
                f"{_quote_literal(role)}) THEN\n        {revoke};\n    END IF;"
            )
    return "DO $$\nBEGIN\n    " + "\n    ".join(statements) + "\nEND\n$$"


@Operations.implementation_for(CreateGroupRoleOp)
def _create_group_role(operations: Operations, operation: CreateGroupRoleOp) -> None:
    operations.execute(create_group_role_sql(operation.name))


@Operations.implementation_for(DropGroupRoleOp)
def _drop_group_role(operations: Operations, operation: DropGroupRoleOp) -> None:
    operations.execute(drop_group_role_sql(operation.name))


@Operations.implementation_for(GrantPrivilegesOp)
def _grant(operations: Operations, operation: GrantPrivilegesOp) -> None:
    operations.execute(grant_sql(operation))


@Operations.implementation_for(RevokePrivilegesOp)
def _revoke(operations: Operations, operation: RevokePrivilegesOp) -> None:
    operations.execute(revoke_sql(operation))


@Operations.implementation_for(EnableRowLevelSecurityOp)
def _enable_rls(operations: Operations, operation: EnableRowLevelSecurityOp) -> None:
    operations.execute(f"ALTER TABLE {operation.table} ENABLE ROW LEVEL SECURITY")


@Operations.implementation_for(DisableRowLevelSecurityOp)
def _disable_rls(operations: Operations, operation: DisableRowLevelSecurityOp) -> None:
    operations.execute(f"ALTER TABLE {operation.table} DISABLE ROW LEVEL SECURITY")


# ---------------------------------------------------------------------------------------------
# Frozen SQL objects: a revision's own copies of the functions, triggers, policies and views it
# creates, in .sql files beside it (``alembic/versions/<revision>/<kind>/<name>.sql``).
# ---------------------------------------------------------------------------------------------


def frozen_object(path: str | Path) -> SqlObject:
    """The object a frozen file creates: its statement, name and identity (for DROP).

    The file's directory names its kind; a frozen file has no placeholders (it was rendered
    when the revision was written), so it means the same forever.
    """
    file = Path(path)
    kind = KINDS.get(file.parent.name)
    if kind is None:
        raise ValueError(f"{file}: not under functions/, triggers/, policies/ or views/")
    text = file.read_text(encoding="utf-8")
    if "/*{" in text:
        raise ValueError(f"{file}: a frozen file may not hold placeholders")
    return parse_object(kind, text, where=str(file))


def _run(operations: Operations, statement: str) -> None:
    # Alembic wraps a string in text(), where ":name" is a bind parameter; a colon inside a
    # function body (a comment, a regex) must stay a colon. "::" casts are never binds.
    operations.execute(re.sub(r"(?<!:):(?!:)", r"\\:", statement))


_recorded: list[tuple[str, Path]] | None = None


@contextmanager
def recording_sql_objects() -> Iterator[list[tuple[str, Path]]]:
    """Record ``(action, path)`` of every frozen-object op run meanwhile (offline replays
    of the history, see ``email_delivery.sql.revision``)."""
    global _recorded
    previous, _recorded = _recorded, []
    try:
        yield _recorded
    finally:
        _recorded = previous


def _record(action: str, path: str) -> None:
    if _recorded is not None:
        _recorded.append((action, Path(path)))


@Operations.register_operation("create_sql_object")
@dataclass(frozen=True, kw_only=True)
class CreateSqlObjectOp(MigrateOperation):
    """Create the function, trigger, policy or view of a frozen file."""

    path: str

    @classmethod
    def create_sql_object(cls, operations: Operations, path: str | Path) -> None:
        operations.invoke(cls(path=str(path)))

    def reverse(self) -> DropSqlObjectOp:
        return DropSqlObjectOp(path=self.path)


@Operations.register_operation("drop_sql_object")
@dataclass(frozen=True, kw_only=True)
class DropSqlObjectOp(MigrateOperation):
    """Drop the object a frozen file created (the file names it, so its reverse can
    re-create it exactly)."""

    path: str

    @classmethod
    def drop_sql_object(cls, operations: Operations, path: str | Path) -> None:
        operations.invoke(cls(path=str(path)))

    def reverse(self) -> CreateSqlObjectOp:
        return CreateSqlObjectOp(path=self.path)


@Operations.register_operation("replace_sql_object")
@dataclass(frozen=True, kw_only=True)
class ReplaceSqlObjectOp(MigrateOperation):
    """Replace an object by the definition of another frozen file (``previous`` is the file
    it replaces: the reverse puts that one back). Functions, triggers and views are replaced
    in place (CREATE OR REPLACE keeps their grants); a policy is dropped and created. A
    function whose result type changes cannot be replaced: drop and create it instead."""

    path: str
    previous: str

    @classmethod
    def replace_sql_object(
        cls, operations: Operations, path: str | Path, *, previous: str | Path
    ) -> None:
        operations.invoke(cls(path=str(path), previous=str(previous)))

    def reverse(self) -> ReplaceSqlObjectOp:
        return ReplaceSqlObjectOp(path=self.previous, previous=self.path)


@Operations.implementation_for(CreateSqlObjectOp)
def _create_sql_object(operations: Operations, operation: CreateSqlObjectOp) -> None:
    _record("create", operation.path)
    _run(operations, frozen_object(operation.path).statement)


@Operations.implementation_for(DropSqlObjectOp)
def _drop_sql_object(operations: Operations, operation: DropSqlObjectOp) -> None:
    _record("drop", operation.path)
    _run(operations, frozen_object(operation.path).drop_statement)


@Operations.implementation_for(ReplaceSqlObjectOp)
def _replace_sql_object(operations: Operations, operation: ReplaceSqlObjectOp) -> None:
    new, old = frozen_object(operation.path), frozen_object(operation.previous)
    if (new.kind, new.identity, new.on) != (old.kind, old.identity, old.on):
        raise ValueError(f"{operation.path} does not replace {operation.previous}: another object")
    _record("replace", operation.path)
    if new.kind == "policy":
        _run(operations, old.drop_statement)
    _run(operations, new.statement)
