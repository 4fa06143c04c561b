"""Hand-written Alembic operations for what autogenerate does not manage: roles, grants, RLS.

Each operation is a small value object with a ``reverse()``; importing this module registers
them on ``alembic.op`` (``op.create_group_role(...)`` and so on). Every statement is plain SQL
with no catalog read on the Python side, so ``alembic upgrade --sql`` renders them too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from alembic.operations import MigrateOperation, Operations


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
