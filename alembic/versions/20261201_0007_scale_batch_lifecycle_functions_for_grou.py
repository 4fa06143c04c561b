"""Scale: batch lifecycle functions for group commit, hourly rollups for the dashboards, an index diet on deliveries, maintain

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 23:10:14.978141+00:00

Written by `python -m email_delivery.revision`: the SQL objects it creates or replaces are
frozen in 0007/ beside it; the previous definitions are the earlier revisions' files. Added by
hand: the rollup tables (new and empty: the first `email-delivery maintain` fills them; until
then the statistics read the deliveries, as before) and the index diet.

Safe on a busy table: the partial index ix_deliveries_finished is built CONCURRENTLY before
the transaction, and the two indexes it replaces (queued_at; status, queued_at) are dropped
CONCURRENTLY after it, so writers are never blocked; both steps are idempotent. The new
tables and functions change in one transaction under lock_timeout. The downgrade rebuilds
the two indexes concurrently first, then drops what this revision added.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import email_delivery.migration_ops  # noqa: F401 - registers the grant and SQL object ops

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HERE = Path(__file__).parent
TABLES = ("delivery_rollups", "delivery_rollup_state", "delivery_rollup_deletions")
FINISHED_INDEX = (
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_deliveries_finished ON email.deliveries "
    "(status, queued_at, delivery_id) "
    "WHERE status NOT IN ('queued', 'in_progress', 'retrying')"
)
DIETED_INDEXES = {
    "ix_deliveries_queued_at": "(queued_at)",
    "ix_deliveries_status_queued_at": "(status, queued_at)",
}
"""Revision 0001's indexes that ix_deliveries_finished and the rollups replace."""


def _status() -> postgresql.ENUM:
    return postgresql.ENUM(
        "queued", "in_progress", "sent", "retrying", "failed", "dead_letter",
        name="delivery_status", schema="email", create_type=False,
    )  # fmt: skip


def _create_tables() -> None:
    op.create_table(
        "delivery_rollups",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("workflow", sa.Text(), nullable=False),
        sa.Column("status", _status(), nullable=False),
        sa.Column("error_code", sa.Text(), nullable=True),
        sa.Column("latency_bucket", sa.SmallInteger(), nullable=True),
        sa.Column("deliveries", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.BigInteger(), nullable=False),
        sa.Column("retried", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "deliveries > 0 AND attempts >= 0 AND retried >= 0",
            name=op.f("ck_delivery_rollups_counts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_rollups")),
        sa.UniqueConstraint(
            "hour",
            "workflow",
            "status",
            "error_code",
            "latency_bucket",
            name=op.f("uq_delivery_rollups_key"),
            postgresql_nulls_not_distinct=True,
        ),
        schema="email",
    )
    op.create_table(
        "delivery_rollup_state",
        sa.Column("singleton", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column(
            "rolled_until",
            sa.DateTime(timezone=True),
            server_default=sa.text("'-infinity'"),
            nullable=False,
        ),
        sa.Column("xact_watermark", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("singleton", name=op.f("ck_delivery_rollup_state_one_row")),
        sa.PrimaryKeyConstraint("singleton", name=op.f("pk_delivery_rollup_state")),
        schema="email",
    )
    op.execute("INSERT INTO email.delivery_rollup_state DEFAULT VALUES")
    op.create_table(
        "delivery_rollup_deletions",
        sa.Column(
            "xact_id",
            sa.BigInteger(),
            server_default=sa.text("(pg_current_xact_id())::text::bigint"),
            nullable=False,
        ),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("workflow", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint(
            "xact_id", "hour", "workflow", name=op.f("pk_delivery_rollup_deletions")
        ),
        schema="email",
    )
    for table in TABLES:
        op.revoke_privileges(
            privileges=["ALL"],
            target=f"TABLE email.{table}",
            roles=["PUBLIC", "anon", "authenticated"],
        )
        op.grant_privileges(
            privileges=["SELECT"], target=f"TABLE email.{table}", roles=["email_reader"]
        )
        op.enable_row_level_security(table=f"email.{table}")


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("SET lock_timeout = '5s'")
        op.execute("SET statement_timeout = '6h'")
        op.execute(FINISHED_INDEX)
        op.execute("RESET statement_timeout")
        op.execute("RESET lock_timeout")

    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("SET LOCAL statement_timeout = '60s'")
    _create_tables()
    op.create_sql_object(HERE / "0007/functions/claim_deliveries.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.claim_deliveries(p_delivery_ids text[], p_lease interval)",
        roles=["PUBLIC"],
    )
    op.grant_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.claim_deliveries(p_delivery_ids text[], p_lease interval)",
        roles=["email_writer"],
    )
    op.replace_sql_object(
        HERE / "0007/functions/delivery_stats.sql",
        previous=HERE / "0005/functions/delivery_stats.sql",
    )
    op.create_sql_object(HERE / "0007/functions/latency_percentile.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.latency_percentile(p_buckets smallint[], p_counts bigint[], p_fraction double precision)",
        roles=["PUBLIC"],
    )
    op.grant_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.latency_percentile(p_buckets smallint[], p_counts bigint[], p_fraction double precision)",
        roles=["email_reader"],
    )
    op.create_sql_object(HERE / "0007/functions/maintain.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.maintain(p_ahead interval, p_interval interval)",
        roles=["PUBLIC"],
    )
    op.create_sql_object(HERE / "0007/functions/mark_deliveries_failed.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.mark_deliveries_failed(p_delivery_ids text[], p_attempts integer[], p_error_codes text[], p_error_messages text[], p_retryables boolean[], p_max_attempts integer[], p_payloads jsonb[])",
        roles=["PUBLIC"],
    )
    op.grant_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.mark_deliveries_failed(p_delivery_ids text[], p_attempts integer[], p_error_codes text[], p_error_messages text[], p_retryables boolean[], p_max_attempts integer[], p_payloads jsonb[])",
        roles=["email_writer"],
    )
    op.create_sql_object(HERE / "0007/functions/mark_deliveries_sent.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.mark_deliveries_sent(p_delivery_ids text[], p_attempts integer[], p_payloads jsonb[])",
        roles=["PUBLIC"],
    )
    op.grant_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.mark_deliveries_sent(p_delivery_ids text[], p_attempts integer[], p_payloads jsonb[])",
        roles=["email_writer"],
    )
    op.replace_sql_object(
        HERE / "0007/functions/purge_delivery_events.sql",
        previous=HERE / "0006/functions/purge_delivery_events.sql",
    )
    op.create_sql_object(HERE / "0007/functions/raw_delivery_rollups.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.raw_delivery_rollups(p_from timestamp with time zone, p_until timestamp with time zone, p_workflow text)",
        roles=["PUBLIC"],
    )
    op.grant_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.raw_delivery_rollups(p_from timestamp with time zone, p_until timestamp with time zone, p_workflow text)",
        roles=["email_reader"],
    )
    op.create_sql_object(HERE / "0007/functions/refresh_delivery_rollups.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"], target="FUNCTION email.refresh_delivery_rollups()", roles=["PUBLIC"]
    )
    op.create_sql_object(HERE / "0007/policies/delivery_rollup_deletions_email_reader_select.sql")
    op.create_sql_object(HERE / "0007/policies/delivery_rollup_state_email_reader_select.sql")
    op.create_sql_object(HERE / "0007/policies/delivery_rollups_email_reader_select.sql")

    with op.get_context().autocommit_block():
        op.execute("SET lock_timeout = '5s'")
        for name in DIETED_INDEXES:
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS email.{name}")
        op.execute("RESET lock_timeout")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("SET lock_timeout = '5s'")
        op.execute("SET statement_timeout = '6h'")
        for name, columns in DIETED_INDEXES.items():
            op.execute(
                f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON email.deliveries {columns}"
            )
        op.execute("RESET statement_timeout")
        op.execute("RESET lock_timeout")

    op.execute("SET LOCAL lock_timeout = '5s'")
    op.drop_sql_object(HERE / "0007/policies/delivery_rollups_email_reader_select.sql")
    op.drop_sql_object(HERE / "0007/policies/delivery_rollup_state_email_reader_select.sql")
    op.drop_sql_object(HERE / "0007/policies/delivery_rollup_deletions_email_reader_select.sql")
    op.drop_sql_object(HERE / "0007/functions/refresh_delivery_rollups.sql")
    op.drop_sql_object(HERE / "0007/functions/raw_delivery_rollups.sql")
    op.replace_sql_object(
        HERE / "0006/functions/purge_delivery_events.sql",
        previous=HERE / "0007/functions/purge_delivery_events.sql",
    )
    op.drop_sql_object(HERE / "0007/functions/mark_deliveries_sent.sql")
    op.drop_sql_object(HERE / "0007/functions/mark_deliveries_failed.sql")
    op.drop_sql_object(HERE / "0007/functions/maintain.sql")
    op.drop_sql_object(HERE / "0007/functions/latency_percentile.sql")
    op.replace_sql_object(
        HERE / "0005/functions/delivery_stats.sql",
        previous=HERE / "0007/functions/delivery_stats.sql",
    )
    op.drop_sql_object(HERE / "0007/functions/claim_deliveries.sql")
    for table in reversed(TABLES):
        op.drop_table(table, schema="email")

    with op.get_context().autocommit_block():
        op.execute("SET lock_timeout = '5s'")
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS email.ix_deliveries_finished")
        op.execute("RESET lock_timeout")
