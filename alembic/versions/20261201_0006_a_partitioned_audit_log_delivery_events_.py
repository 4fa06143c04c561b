"""A partitioned audit log: delivery_events by month, purged set-based with its deliveries.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 23:10:00+00:00

The SQL objects are frozen in 0006/ beside it (written by `python -m email_delivery.revision`);
the table's conversion is written by hand, for a live database that already holds events:

1. Outside the revision's transaction, so writers are never blocked while the table is read:
   the new column, a unique index on (id, created_at) and a BRIN index on xact_id built
   CONCURRENTLY, and a CHECK bounding created_at by the end of this month added NOT VALID,
   then validated (a scan under a lock that lets inserts go on). Each step is idempotent, so
   a rerun after a failure picks up where it stopped.
2. In one short transaction (lock_timeout 5 s): the table becomes the partition
   delivery_events_legacy of a new partitioned delivery_events, attached without a scan (the
   validated CHECK proves its range) and with its indexes adopted, not rebuilt: its
   (id, created_at) index becomes its primary key; its identity moves to the new table (the
   sequence continues after the highest id). The foreign key to deliveries is replaced by the
   statement-level purge trigger; the grants and policies move to the new table.
3. The default partition, and the monthly ones from the end of this month on.

The downgrade folds every partition back into one table (copying the rows written since),
restores its primary key on id, its identity and the foreign key (validated, so it reads the
table): heavier than the upgrade, and meant for a maintenance window.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import email_delivery.migration_ops  # noqa: F401 - registers the grant and SQL object ops

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HERE = Path(__file__).parent
LEGACY = "delivery_events_legacy"
READERS = ("email_reader", "email_writer")
POLICIES = ("delivery_events_email_reader_select", "delivery_events_email_writer_select")
"""The table's SELECT policies, as revision 0001 froze them: they move with the table."""
COLUMNS = (
    "id, delivery_id, status, attempt, error_code, error_message, payload, created_at, "
    "changed_columns"
)
ATTACH_LEGACY = """DO $$
DECLARE
    bound timestamptz := (
        SELECT (regexp_match(pg_catalog.pg_get_constraintdef(c.oid), $re$'([^']+)'$re$))[1]
        FROM pg_catalog.pg_constraint AS c
        WHERE c.conname = 'delivery_events_legacy_bound'
          AND c.conrelid = 'email.delivery_events_legacy'::regclass)::timestamptz;
BEGIN
    EXECUTE format('ALTER TABLE email.delivery_events ATTACH PARTITION '
                   'email.delivery_events_legacy FOR VALUES FROM (MINVALUE) TO (%L)', bound);
END
$$"""
"""The validated CHECK's bound is the legacy range's end: the attach then needs no scan."""
BOUND_LEGACY = """DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_constraint
                   WHERE conname = 'delivery_events_legacy_bound'
                     AND conrelid = 'email.delivery_events'::regclass) THEN
        EXECUTE format('ALTER TABLE email.delivery_events ADD CONSTRAINT '
                       'delivery_events_legacy_bound CHECK (created_at < %L) NOT VALID',
                       date_trunc('month', now(), 'UTC') + interval '1 month');
    END IF;
END
$$"""


def _status() -> postgresql.ENUM:
    return postgresql.ENUM(
        "queued", "in_progress", "sent", "retrying", "failed", "dead_letter",
        name="delivery_status", schema="email", create_type=False,
    )  # fmt: skip


def _grants_and_policies_on_the_table() -> None:
    op.revoke_privileges(
        privileges=["ALL"],
        target="TABLE email.delivery_events",
        roles=["PUBLIC", "anon", "authenticated"],
    )
    for role in READERS:
        op.grant_privileges(
            privileges=["SELECT"], target="TABLE email.delivery_events", roles=[role]
        )
    op.enable_row_level_security(table="email.delivery_events")
    for policy in POLICIES:
        op.create_sql_object(HERE / "0001" / "policies" / f"{policy}.sql")


def upgrade() -> None:
    # 1. Reads of the whole table, none of them blocking writers.
    with op.get_context().autocommit_block():
        op.execute("SET lock_timeout = '5s'")
        op.execute("SET statement_timeout = '6h'")
        op.execute("ALTER TABLE email.delivery_events ADD COLUMN IF NOT EXISTS xact_id bigint")
        op.execute(
            "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS delivery_events_legacy_id_created_at "
            "ON email.delivery_events (id, created_at)"
        )
        op.execute(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS delivery_events_legacy_xact_id "
            "ON email.delivery_events USING brin (xact_id)"
        )
        op.execute(BOUND_LEGACY)
        op.execute(
            "ALTER TABLE email.delivery_events VALIDATE CONSTRAINT delivery_events_legacy_bound"
        )
        op.execute("RESET statement_timeout")
        op.execute("RESET lock_timeout")

    # 2. The swap, in one short transaction.
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("SET LOCAL statement_timeout = '60s'")
    op.drop_constraint(
        "fk_delivery_events_delivery_id_deliveries",
        "delivery_events",
        schema="email",
        type_="foreignkey",
    )
    for policy in POLICIES:
        op.execute(f"DROP POLICY {policy} ON email.delivery_events")
    op.revoke_privileges(privileges=["ALL"], target="TABLE email.delivery_events", roles=READERS)
    op.rename_table("delivery_events", LEGACY, schema="email")
    op.execute(
        "ALTER INDEX email.ix_delivery_events_delivery_id_id RENAME TO "
        "delivery_events_legacy_delivery_id_id"
    )
    op.execute(
        f"ALTER TABLE email.{LEGACY} DROP CONSTRAINT pk_delivery_events, "
        "ADD CONSTRAINT delivery_events_legacy_pkey PRIMARY KEY "
        "USING INDEX delivery_events_legacy_id_created_at"
    )
    op.execute(f"ALTER TABLE email.{LEGACY} ALTER COLUMN id DROP IDENTITY")
    op.create_table(
        "delivery_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("delivery_id", sa.Text(), nullable=False),
        sa.Column("status", _status(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("error_code", sa.Text(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("changed_columns", postgresql.ARRAY(sa.Text()), nullable=True),
        sa.Column(
            "xact_id",
            sa.BigInteger(),
            server_default=sa.text("(pg_current_xact_id())::text::bigint"),
            nullable=True,
        ),
        sa.CheckConstraint(
            "payload IS NULL OR (jsonb_typeof(payload) = 'object' AND octet_length(payload::text) <= 16384)",
            name=op.f("ck_delivery_events_payload_object"),
        ),
        sa.CheckConstraint("attempt >= 0", name=op.f("ck_delivery_events_attempt_non_negative")),
        sa.CheckConstraint(
            "char_length(error_code) <= 64", name=op.f("ck_delivery_events_error_code_length")
        ),
        sa.CheckConstraint(
            "char_length(error_message) <= 2000",
            name=op.f("ck_delivery_events_error_message_length"),
        ),
        sa.PrimaryKeyConstraint("id", "created_at", name=op.f("pk_delivery_events")),
        schema="email",
        postgresql_partition_by="RANGE (created_at)",
    )
    op.create_index(
        op.f("ix_delivery_events_delivery_id_id"),
        "delivery_events",
        ["delivery_id", "id"],
        unique=False,
        schema="email",
    )
    op.create_index(
        op.f("ix_delivery_events_xact_id"),
        "delivery_events",
        ["xact_id"],
        unique=False,
        schema="email",
        postgresql_using="brin",
    )
    op.execute(ATTACH_LEGACY)
    op.execute(
        "CREATE TABLE email.delivery_events_default PARTITION OF email.delivery_events DEFAULT"
    )
    op.execute(
        "SELECT setval(pg_catalog.pg_get_serial_sequence('email.delivery_events', 'id'), "
        f"(SELECT coalesce(max(id), 0) + 1 FROM email.{LEGACY}), false)"
    )
    _grants_and_policies_on_the_table()

    # The SQL objects, frozen in 0006/.
    op.replace_sql_object(
        HERE / "0006/functions/guard_delivery.sql",
        previous=HERE / "0005/functions/guard_delivery.sql",
    )
    op.replace_sql_object(
        HERE / "0006/functions/audit_inserted_deliveries.sql",
        previous=HERE / "0005/functions/audit_inserted_deliveries.sql",
    )
    op.replace_sql_object(
        HERE / "0006/functions/audit_updated_deliveries.sql",
        previous=HERE / "0005/functions/audit_updated_deliveries.sql",
    )
    op.create_sql_object(HERE / "0006/functions/create_event_partitions.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.create_event_partitions(p_ahead interval, p_interval interval)",
        roles=["PUBLIC"],
    )
    op.create_sql_object(HERE / "0006/functions/drop_expired_event_partitions.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.drop_expired_event_partitions(p_before timestamp with time zone)",
        roles=["PUBLIC"],
    )
    op.create_sql_object(HERE / "0006/functions/event_partitions.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"], target="FUNCTION email.event_partitions()", roles=["PUBLIC"]
    )
    op.create_sql_object(HERE / "0006/functions/purge_delivery_events.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"], target="FUNCTION email.purge_delivery_events()", roles=["PUBLIC"]
    )
    op.create_sql_object(HERE / "0006/triggers/deliveries_purge_events.sql")

    # 3. The monthly partitions from the end of this month on.
    op.execute("SELECT email.create_event_partitions()")


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("SET LOCAL statement_timeout = '6h'")
    op.replace_sql_object(
        HERE / "0005/functions/guard_delivery.sql",
        previous=HERE / "0006/functions/guard_delivery.sql",
    )
    op.drop_sql_object(HERE / "0006/triggers/deliveries_purge_events.sql")
    op.drop_sql_object(HERE / "0006/functions/purge_delivery_events.sql")
    op.drop_sql_object(HERE / "0006/functions/event_partitions.sql")
    op.drop_sql_object(HERE / "0006/functions/drop_expired_event_partitions.sql")
    op.drop_sql_object(HERE / "0006/functions/create_event_partitions.sql")
    op.replace_sql_object(
        HERE / "0005/functions/audit_updated_deliveries.sql",
        previous=HERE / "0006/functions/audit_updated_deliveries.sql",
    )
    op.replace_sql_object(
        HERE / "0005/functions/audit_inserted_deliveries.sql",
        previous=HERE / "0006/functions/audit_inserted_deliveries.sql",
    )
    for policy in POLICIES:
        op.execute(f"DROP POLICY {policy} ON email.delivery_events")
    op.execute(f"ALTER TABLE email.delivery_events DETACH PARTITION email.{LEGACY}")
    op.execute(f"ALTER TABLE email.{LEGACY} DROP CONSTRAINT delivery_events_legacy_bound")
    # The events written since the upgrade come home.
    op.execute(
        f"INSERT INTO email.{LEGACY} ({COLUMNS}) SELECT {COLUMNS} FROM email.delivery_events"
    )
    op.drop_index("ix_delivery_events_xact_id", table_name="delivery_events", schema="email")
    op.drop_index("ix_delivery_events_delivery_id_id", table_name="delivery_events", schema="email")
    op.drop_table("delivery_events", schema="email")
    op.rename_table(LEGACY, "delivery_events", schema="email")
    op.execute(
        "ALTER TABLE email.delivery_events DROP CONSTRAINT delivery_events_legacy_pkey, "
        "ADD CONSTRAINT pk_delivery_events PRIMARY KEY (id)"
    )
    op.execute(
        "ALTER INDEX email.delivery_events_legacy_delivery_id_id RENAME TO "
        "ix_delivery_events_delivery_id_id"
    )
    op.execute("DROP INDEX email.delivery_events_legacy_xact_id")
    op.drop_column("delivery_events", "xact_id", schema="email")
    op.execute("ALTER TABLE email.delivery_events ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY")
    op.execute(
        "SELECT setval(pg_catalog.pg_get_serial_sequence('email.delivery_events', 'id'), "
        "(SELECT coalesce(max(id), 0) + 1 FROM email.delivery_events), false)"
    )
    op.create_foreign_key(
        "fk_delivery_events_delivery_id_deliveries",
        "delivery_events",
        "deliveries",
        ["delivery_id"],
        ["delivery_id"],
        source_schema="email",
        referent_schema="email",
        ondelete="CASCADE",
    )
    _grants_and_policies_on_the_table()
