"""The HEAD definition of schema ``email``: the models' tables, the SQL objects of
``email_delivery/sql`` as alembic_utils entities, the roles, and every grant.

What it is for: drift detection (``alembic check`` through ``alembic/env.py``, and
``email-delivery verify``) and ``create_head``, which builds the head schema directly so a
test can prove that ``alembic upgrade head`` from an empty database builds exactly the same.
Alembic revisions never import this module: a revision is history and carries frozen copies
of what it creates (see ``migration_ops``).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from functools import cache

from alembic_utils.pg_function import PGFunction
from alembic_utils.pg_policy import PGPolicy
from alembic_utils.pg_trigger import PGTrigger
from alembic_utils.pg_view import PGView
from alembic_utils.replaceable_entity import ReplaceableEntity
from sqlalchemy import text as sql_text
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import TextClause

from email_delivery import sql
from email_delivery.base import SCHEMA, Base
from email_delivery.migration_ops import grant_sql, revoke_sql

WRITER_ROLE = "email_writer"
"""Group role of the worker."""
READER_ROLE = "email_reader"
"""Group role of dashboards, analytics and support tools."""
ROLES = (WRITER_ROLE, READER_ROLE)

SUPABASE_API_ROLES = ("anon", "authenticated")
"""Supabase's Data API roles: they get nothing here, explicitly, where they exist."""

TABLE_PRIVILEGES: dict[str, dict[str, tuple[str, ...]]] = {
    "deliveries": {READER_ROLE: ("SELECT",), WRITER_ROLE: ("SELECT",)},
    "delivery_events": {READER_ROLE: ("SELECT",), WRITER_ROLE: ("SELECT",)},
    # The dashboards' rollups (revision 0007): written by the owner's refresh only.
    "delivery_rollups": {READER_ROLE: ("SELECT",)},
    "delivery_rollups_daily": {READER_ROLE: ("SELECT",)},  # the daily tier (revision 0016)
    "delivery_rollup_state": {READER_ROLE: ("SELECT",)},
    "delivery_rollup_deletions": {READER_ROLE: ("SELECT",)},
    # Worker policy (revision 0008): changed by the owner only; the worker may read it.
    "workflow_policies": {READER_ROLE: ("SELECT",), WRITER_ROLE: ("SELECT",)},
    "workflow_policy_changes": {READER_ROLE: ("SELECT",)},
    # Webhooks (revision 0009): the owner's alone (endpoints are configuration, secrets are
    # credentials, messages hold rendered payloads); RLS on, no policy, no grant.
    "webhook_endpoints": {},
    "webhook_secrets": {},
    "webhook_messages": {},
    "webhook_attempts": {},
    "webhook_feed_state": {},
    # Sessions that LISTEN for the feed (0009): written by the SECURITY DEFINER heartbeat.
    "feed_listeners": {},
    # Provider facts and outcomes (revision 0010): written by the owner's functions only
    # (mark_sent / mark_failed, record_delivery_outcome); the worker reads them to order
    # its providers (provider_health), readers for support and dashboards.
    "delivery_attempts": {READER_ROLE: ("SELECT",), WRITER_ROLE: ("SELECT",)},
    "outcome_events": {READER_ROLE: ("SELECT",), WRITER_ROLE: ("SELECT",)},
    "delivery_outcomes": {READER_ROLE: ("SELECT",), WRITER_ROLE: ("SELECT",)},
    # The suppression list (revision 0012): bounces and complaints add entries through the
    # owner's functions, the owner edits it by hand; the worker and readers may look.
    "suppressions": {READER_ROLE: ("SELECT",), WRITER_ROLE: ("SELECT",)},
    # The provider rollups (revision 0014): written by the owner's refresh only; the worker
    # reads them through provider_metrics (provider_health), as readers do.
    "provider_rollups": {READER_ROLE: ("SELECT",), WRITER_ROLE: ("SELECT",)},
    "provider_rollups_daily": {READER_ROLE: ("SELECT",), WRITER_ROLE: ("SELECT",)},
    "provider_rollup_state": {READER_ROLE: ("SELECT",), WRITER_ROLE: ("SELECT",)},
    "provider_rollup_deletions": {READER_ROLE: ("SELECT",), WRITER_ROLE: ("SELECT",)},
}
"""Who may do what on each table; each (table, role, command) has one permissive policy
``<table>_<role>_<command>`` in ``sql/policies``. Nobody but the owner writes: the worker
records deliveries through the SECURITY DEFINER lifecycle functions (revision 0005), and
the audit trail is written by the owner's trigger alone (see docs/security.md)."""

RLS_TABLES = tuple(TABLE_PRIVILEGES)

SEED_ROWS = (
    "INSERT INTO email.delivery_rollup_state DEFAULT VALUES",
    "INSERT INTO email.workflow_policies (workflow) VALUES ('*')",
    "INSERT INTO email.webhook_feed_state DEFAULT VALUES",
    "INSERT INTO email.provider_rollup_state DEFAULT VALUES",
)
"""Rows the schema needs to work, inserted by the revisions that create their tables: the
rollups' state (0007), the default worker policy (0008), the outbox's place in the change
feed, at its head (0009), and the provider rollups' state (0014), with their columns'
defaults."""
"""Tables with row level security enabled."""

_READ: dict[str, tuple[str, ...]] = {READER_ROLE: ("SELECT",)}
VIEW_PRIVILEGES: dict[str, dict[str, tuple[str, ...]]] = {
    "delivery_stats_24h": _READ,
    "delivery_stats_hourly": _READ,
    "delivery_stats_daily": _READ,
    "pending_deliveries": _READ,
    "delivery_health": _READ,
    "provider_metrics_24h": _READ,
    "unmatched_outcome_events": _READ,
}
"""Grants on the views: email_reader reads them; nobody else, anon included."""

_READ_AND_WRITE = (WRITER_ROLE, READER_ROLE)
FUNCTION_EXECUTE: dict[str, tuple[str, ...]] = {
    "is_allowed_transition": _READ_AND_WRITE,
    "sanitize_error_message": _READ_AND_WRITE,
    "find_secret": _READ_AND_WRITE,
    "percent_decoded": _READ_AND_WRITE,
    "delivery_stats": (READER_ROLE,),
    "raw_delivery_rollups": (READER_ROLE,),
    # The histograms' percentiles: delivery_stats (readers) and provider_metrics (0014: the
    # worker too, through provider_health).
    "latency_percentile": _READ_AND_WRITE,
    "enqueue_delivery": (WRITER_ROLE,),
    "enqueue_deliveries": (WRITER_ROLE,),
    "claim_delivery": (WRITER_ROLE,),
    "claim_deliveries": (WRITER_ROLE,),
    "mark_deliveries_sent": (WRITER_ROLE,),
    "mark_deliveries_failed": (WRITER_ROLE,),
    "mark_delivery_sent": (WRITER_ROLE,),
    "mark_delivery_failed": (WRITER_ROLE,),
    "mark_delivery_dead_letter": (WRITER_ROLE,),
    "reap_stale_deliveries": (WRITER_ROLE,),
    "extend_claim": (WRITER_ROLE,),
    "delivery_health": (READER_ROLE,),
    # Operators only: no group role; the owner (Supabase's postgres, the CLI's login) runs it.
    "requeue_delivery": (),
    # The owner's internals: the triggers, the payload hand-over and the retry budget run
    # as the owner (inside the SECURITY DEFINER lifecycle functions or the owner's session).
    "guard_delivery": (),
    "audit_inserted_deliveries": (),
    "audit_updated_deliveries": (),
    "attach_event_payloads": (),
    "attached_payloads": (),
    "attempts_since_requeue": (),
    "is_owner_session": (),
    # The audit log's partitions and purge (revision 0006): the owner's maintenance.
    "event_partitions": (),
    "create_event_partitions": (),
    "drop_expired_event_partitions": (),
    "purge_delivery_events": (),
    # The deliveries' children keep their reference without a foreign key (revision 0015).
    "check_delivery_reference": (),
    "check_truncated_deliveries": (),
    "refresh_delivery_rollups": (),
    "maintain": (),
    # Worker policy (revision 0008): read by the lifecycle functions as the owner.
    "workflow_policy": (),
    "retry_delay": (),
    "failure_outcome": (),
    "guard_workflow_policy": (),
    "audit_workflow_policy": (),
    # The change feed (revision 0009): SECURITY INVOKER, so the caller's SELECT on
    # delivery_events and its policies decide; the notify trigger's function is internal.
    "delivery_feed": _READ_AND_WRITE,
    "delivery_feed_head": _READ_AND_WRITE,
    "notify_delivery_feed": (),
    "feed_listener_heartbeat": _READ_AND_WRITE,
    "feed_listener_stop": _READ_AND_WRITE,
    # Provider facts and outcomes (revision 0010).
    "record_delivery_outcome": (WRITER_ROLE,),
    "match_outcome_events": (WRITER_ROLE,),
    "provider_metrics": _READ_AND_WRITE,
    "outcome_rank": _READ_AND_WRITE,
    "attempt_facts": (),
    "record_attempt_facts": (),
    "provider_message_lock": (),
    "apply_outcome_events": (),
    # The suppression list (revision 0012): run inside the enqueue functions, as the owner.
    "suppress_new_deliveries": (),
    # The provider rollups (revision 0014): read inside provider_metrics (SECURITY
    # INVOKER: the caller's SELECT decides); refreshed and fed by the owner alone.
    "raw_provider_rollups": _READ_AND_WRITE,
    "merge_provider_rollups": _READ_AND_WRITE,
    "refresh_provider_rollups": (),
    "record_provider_rollup_deletions": (),
}
"""Every function by name and the roles that may execute it (``()``: nobody but its owner;
triggers need no EXECUTE, and the lifecycle functions run as the owner)."""


# -----------------------------------------------------------------------------------------
# Views created WITH (security_invoker = true)
# -----------------------------------------------------------------------------------------

_VIEW_OPTIONS = "security_invoker = true"


class SecurityInvokerView(PGView):
    """A ``PGView`` created ``WITH (security_invoker = true)``; drift in its options shows.

    alembic_utils' PGView cannot say security_invoker: this class adds it to every CREATE
    and folds the view's reloptions into the reflected definition, so ``alembic check`` also
    reports a view whose security_invoker was switched off by hand.
    """

    @property
    def identity(self) -> str:
        # The same identity as a plain PGView, so a view reflected by PGView (which
        # alembic_utils uses to spot views to drop) matches this local one.
        return f"PGView: {self.schema}.{self.signature}"

    def to_sql_statement_create(self) -> TextClause:
        return sql_text(
            f'CREATE VIEW {self.literal_schema}."{self.signature}" '
            f"WITH ({_VIEW_OPTIONS}) AS {self.definition};"
        )

    def to_sql_statement_create_or_replace(self) -> Generator[TextClause, None, None]:
        # CREATE OR REPLACE VIEW without WITH would reset the options, so it is always given.
        yield sql_text(
            f'CREATE OR REPLACE VIEW {self.literal_schema}."{self.signature}" '
            f"WITH ({_VIEW_OPTIONS}) AS {self.definition};"
        )

    @classmethod
    def from_database(  # type: ignore[override]  # the base's return type is a bare TypeVar
        cls, sess: Session, schema: str = "%"
    ) -> list[SecurityInvokerView]:
        rows = sess.execute(
            sql_text(
                """
                SELECT n.nspname, c.relname, pg_catalog.pg_get_viewdef(c.oid),
                       coalesce(array_to_string(
                           ARRAY(SELECT o FROM unnest(c.reloptions) AS o ORDER BY o), ','), '')
                FROM pg_catalog.pg_class c
                JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relkind = 'v' AND n.nspname::text LIKE :schema
                """
            ),
            {"schema": schema},
        ).fetchall()
        return [
            cls(schema=row[0], signature=row[1], definition=f"/* WITH ({row[3]}) */ {row[2]}")
            for row in rows
        ]


ENTITY_TYPES = (PGFunction, PGTrigger, PGPolicy, PGView, SecurityInvokerView)
"""What autogenerate reflects: PGView too, so a view added by hand shows as drift."""


# -----------------------------------------------------------------------------------------
# The SQL files as entities
# -----------------------------------------------------------------------------------------


def _entity(obj: sql.SqlObject) -> ReplaceableEntity:
    definition = obj.definition  # alembic_utils escapes the colons for text() itself
    if obj.kind == "function":
        return PGFunction(schema=SCHEMA, signature=obj.signature, definition=definition)
    if obj.kind == "trigger":
        assert obj.on is not None
        return PGTrigger(
            schema=SCHEMA, signature=obj.signature, on_entity=obj.on, definition=definition
        )
    if obj.kind == "policy":
        assert obj.on is not None
        return PGPolicy(
            schema=SCHEMA, signature=obj.signature, on_entity=obj.on, definition=definition
        )
    return SecurityInvokerView(schema=SCHEMA, signature=obj.signature, definition=definition)


@dataclass(frozen=True)
class Head:
    """The head's SQL objects, parsed once."""

    objects: tuple[sql.SqlObject, ...]

    def of_kind(self, kind: sql.Kind) -> tuple[sql.SqlObject, ...]:
        return tuple(obj for obj in self.objects if obj.kind == kind)

    @property
    def entities(self) -> tuple[ReplaceableEntity, ...]:
        """Everything alembic_utils watches for drift, in creation order."""
        return tuple(_entity(obj) for obj in self.objects)

    def function(self, name: str) -> sql.SqlObject:
        for obj in self.objects:
            if obj.kind == "function" and obj.name == name:
                return obj
        raise KeyError(name)


@cache
def head() -> Head:
    return Head(objects=tuple(sql.head_objects()))


def function_grants() -> dict[str, tuple[str, ...]]:
    """``FUNCTION_EXECUTE`` keyed by each function's identity, ``name(argument list)`` as
    ``pg_get_function_identity_arguments`` names it."""
    return {obj.identity: FUNCTION_EXECUTE.get(obj.name, ()) for obj in head().of_kind("function")}


# -----------------------------------------------------------------------------------------
# Building the head schema directly (tests; the revisions build the same through history)
# -----------------------------------------------------------------------------------------


def _grant(privileges: tuple[str, ...], target: str, roles: tuple[str, ...]) -> str:
    from email_delivery.migration_ops import GrantPrivilegesOp

    return grant_sql(GrantPrivilegesOp(privileges=privileges, target=target, roles=roles))


def _revoke(privileges: tuple[str, ...], target: str, roles: tuple[str, ...]) -> str:
    from email_delivery.migration_ops import RevokePrivilegesOp

    return revoke_sql(RevokePrivilegesOp(privileges=privileges, target=target, roles=roles))


def head_ddl() -> list[str]:
    """Every statement that builds the head schema ``email`` in a database without it,
    without Alembic: the status type and tables of the models, then roles, objects,
    grants and RLS. Plain SQL, to run one by one on any driver (tests use asyncpg)."""
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.schema import CreateIndex, CreateTable

    from email_delivery.migration_ops import create_group_role_sql
    from email_delivery.models import delivery_status

    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    labels = ", ".join(f"'{label}'" for label in delivery_status.enums)
    statements = [
        f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}",
        f"CREATE TYPE {SCHEMA}.{delivery_status.name} AS ENUM ({labels})",
    ]
    for table in Base.metadata.sorted_tables:
        statements.append(str(CreateTable(table).compile(dialect=dialect)))
        statements += [str(CreateIndex(index).compile(dialect=dialect)) for index in table.indexes]
    statements += [create_group_role_sql(role) for role in ROLES]
    statements.append(_grant(("USAGE",), f"SCHEMA {SCHEMA}", ROLES))
    for obj in head().objects:
        statements.append(obj.statement)
        if obj.kind == "function":
            target = f"FUNCTION {SCHEMA}.{obj.identity}"
            statements.append(_revoke(("EXECUTE",), target, ("PUBLIC",)))
            roles = FUNCTION_EXECUTE.get(obj.name, ())
            if roles:
                statements.append(_grant(("EXECUTE",), target, roles))
    for relation, grants in (*TABLE_PRIVILEGES.items(), *VIEW_PRIVILEGES.items()):
        target = f"TABLE {SCHEMA}.{relation}"
        statements.append(_revoke(("ALL",), target, ("PUBLIC", *SUPABASE_API_ROLES)))
        for role, privileges in grants.items():
            statements.append(_grant(privileges, target, (role,)))
    statements += [
        f"ALTER TABLE {SCHEMA}.{table} ENABLE ROW LEVEL SECURITY" for table in RLS_TABLES
    ]
    statements += list(SEED_ROWS)
    # The audit log's partitions: the default one, and the ranges from this month on.
    statements.append(
        f"CREATE TABLE {SCHEMA}.delivery_events_default PARTITION OF {SCHEMA}.delivery_events "
        "DEFAULT"
    )
    statements.append(f"SELECT {SCHEMA}.create_event_partitions()")
    return statements
