"""Provider rollups: hourly per provider and workflow, kept by maintain, read by provider_metrics

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 06:06:25.164470+00:00

Written by `python -m email_delivery.revision`: the SQL objects it creates or replaces are
frozen in 0014/ beside it; the previous definitions are the earlier revisions' files. Added
by hand: the tables provider_rollups, provider_rollup_state and provider_rollup_deletions
(new and empty: the first `email-delivery maintain` fills them; until then provider_metrics
reads the attempts, as before) with their grants and row level security; the column xact_id
of delivery_attempts and delivery_outcomes with its index; EXECUTE on latency_percentile
for email_writer (provider_metrics, which the worker calls, now reads its histograms).

Safe on a busy table: xact_id is added without a default (a catalog change, no rewrite; the
rows that exist keep NULL and are counted by the first full refresh), then given its
volatile default for new rows only; both indexes are built CONCURRENTLY after the
transaction, so writers are never blocked. The downgrade drops them concurrently first.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import email_delivery.migration_ops  # noqa: F401 - registers the grant and SQL object ops

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HERE = Path(__file__).parent
TABLES = (
    "provider_rollups",
    "provider_rollups_daily",
    "provider_rollup_state",
    "provider_rollup_deletions",
)
XACT_ID = "(pg_current_xact_id())::text::bigint"
XACT_ID_INDEXES = {
    "ix_delivery_attempts_xact_id": "delivery_attempts",
    "ix_delivery_outcomes_xact_id": "delivery_outcomes",
}
LATENCY_PERCENTILE = (
    "FUNCTION email.latency_percentile(p_buckets smallint[], p_counts bigint[], "
    "p_fraction double precision)"
)


def _counts(table: str) -> list[sa.schema.SchemaItem]:
    """The columns and checks provider_rollups and provider_rollups_daily share."""
    return [
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("workflow", sa.Text(), nullable=False),
        *(
            sa.Column(name, sa.BigInteger(), nullable=False)
            for name in (
                "attempts",
                "accepted",
                "failed",
                "delivered",
                "deferred",
                "bounced",
                "hard_bounced",
                "complained",
                "rejected",
            )
        ),
        sa.Column("send_buckets", postgresql.ARRAY(sa.SmallInteger()), nullable=False),
        sa.Column("send_counts", postgresql.ARRAY(sa.BigInteger()), nullable=False),
        sa.Column("delivered_buckets", postgresql.ARRAY(sa.SmallInteger()), nullable=False),
        sa.Column("delivered_counts", postgresql.ARRAY(sa.BigInteger()), nullable=False),
        sa.CheckConstraint("attempts > 0", name=op.f(f"ck_{table}_attempts_positive")),
        sa.CheckConstraint(
            "cardinality(send_buckets) = cardinality(send_counts) "
            "AND cardinality(delivered_buckets) = cardinality(delivered_counts)",
            name=op.f(f"ck_{table}_histograms_aligned"),
        ),
    ]


def _create_tables() -> None:
    for table, span in (("provider_rollups", "hour"), ("provider_rollups_daily", "day")):
        op.create_table(
            table,
            sa.Column(span, sa.DateTime(timezone=True), nullable=False),
            *_counts(table),
            sa.PrimaryKeyConstraint(span, "provider", "workflow", name=op.f(f"pk_{table}")),
            schema="email",
        )
    op.create_table(
        "provider_rollup_state",
        sa.Column("singleton", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column(
            "rolled_until",
            sa.DateTime(timezone=True),
            server_default=sa.text("'-infinity'"),
            nullable=False,
        ),
        sa.Column("xact_watermark", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("singleton", name=op.f("ck_provider_rollup_state_one_row")),
        sa.PrimaryKeyConstraint("singleton", name=op.f("pk_provider_rollup_state")),
        schema="email",
    )
    op.execute("INSERT INTO email.provider_rollup_state DEFAULT VALUES")
    op.create_table(
        "provider_rollup_deletions",
        sa.Column("xact_id", sa.BigInteger(), server_default=sa.text(XACT_ID), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("workflow", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint(
            "xact_id", "hour", "provider", "workflow", name=op.f("pk_provider_rollup_deletions")
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
            privileges=["SELECT"],
            target=f"TABLE email.{table}",
            roles=["email_reader", "email_writer"],
        )
        op.enable_row_level_security(table=f"email.{table}")
    for table in XACT_ID_INDEXES.values():
        op.add_column(table, sa.Column("xact_id", sa.BigInteger(), nullable=True), schema="email")
        op.alter_column(table, "xact_id", server_default=sa.text(XACT_ID), schema="email")
    op.grant_privileges(privileges=["EXECUTE"], target=LATENCY_PERCENTILE, roles=["email_writer"])


def upgrade() -> None:
    # Busy production tables: wait at most 5 s for a lock (then fail, and retry later)
    # rather than queue every writer behind this revision.
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("SET LOCAL statement_timeout = '60s'")
    _create_tables()
    op.replace_sql_object(
        HERE / "0014/functions/apply_outcome_events.sql",
        previous=HERE / "0013/functions/apply_outcome_events.sql",
    )
    op.replace_sql_object(
        HERE / "0014/functions/maintain.sql", previous=HERE / "0007/functions/maintain.sql"
    )
    op.create_sql_object(HERE / "0014/functions/merge_provider_rollups.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.merge_provider_rollups(p_units email.provider_rollups[], p_span interval)",
        roles=["PUBLIC"],
    )
    op.grant_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.merge_provider_rollups(p_units email.provider_rollups[], p_span interval)",
        roles=["email_writer", "email_reader"],
    )
    op.replace_sql_object(
        HERE / "0014/functions/provider_metrics.sql",
        previous=HERE / "0010/functions/provider_metrics.sql",
    )
    op.create_sql_object(HERE / "0014/functions/raw_provider_rollups.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.raw_provider_rollups(p_from timestamp with time zone, p_until timestamp with time zone, p_provider text, p_workflow text)",
        roles=["PUBLIC"],
    )
    op.grant_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.raw_provider_rollups(p_from timestamp with time zone, p_until timestamp with time zone, p_provider text, p_workflow text)",
        roles=["email_writer", "email_reader"],
    )
    op.create_sql_object(HERE / "0014/functions/record_provider_rollup_deletions.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.record_provider_rollup_deletions()",
        roles=["PUBLIC"],
    )
    op.create_sql_object(HERE / "0014/functions/refresh_provider_rollups.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"], target="FUNCTION email.refresh_provider_rollups()", roles=["PUBLIC"]
    )
    op.create_sql_object(HERE / "0014/triggers/delivery_attempts_rollup_deletions.sql")
    op.create_sql_object(HERE / "0014/policies/provider_rollup_deletions_email_reader_select.sql")
    op.create_sql_object(HERE / "0014/policies/provider_rollup_deletions_email_writer_select.sql")
    op.create_sql_object(HERE / "0014/policies/provider_rollup_state_email_reader_select.sql")
    op.create_sql_object(HERE / "0014/policies/provider_rollup_state_email_writer_select.sql")
    op.create_sql_object(HERE / "0014/policies/provider_rollups_daily_email_reader_select.sql")
    op.create_sql_object(HERE / "0014/policies/provider_rollups_daily_email_writer_select.sql")
    op.create_sql_object(HERE / "0014/policies/provider_rollups_email_reader_select.sql")
    op.create_sql_object(HERE / "0014/policies/provider_rollups_email_writer_select.sql")

    with op.get_context().autocommit_block():
        op.execute("SET lock_timeout = '5s'")
        op.execute("SET statement_timeout = '6h'")
        for name, table in XACT_ID_INDEXES.items():
            op.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON email.{table} (xact_id)")
        op.execute("RESET statement_timeout")
        op.execute("RESET lock_timeout")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("SET lock_timeout = '5s'")
        for name in XACT_ID_INDEXES:
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS email.{name}")
        op.execute("RESET lock_timeout")

    # Busy production tables: wait at most 5 s for a lock (then fail, and retry later)
    # rather than queue every writer behind this revision.
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("SET LOCAL statement_timeout = '60s'")
    op.drop_sql_object(HERE / "0014/policies/provider_rollups_email_writer_select.sql")
    op.drop_sql_object(HERE / "0014/policies/provider_rollups_email_reader_select.sql")
    op.drop_sql_object(HERE / "0014/policies/provider_rollups_daily_email_writer_select.sql")
    op.drop_sql_object(HERE / "0014/policies/provider_rollups_daily_email_reader_select.sql")
    op.drop_sql_object(HERE / "0014/policies/provider_rollup_state_email_writer_select.sql")
    op.drop_sql_object(HERE / "0014/policies/provider_rollup_state_email_reader_select.sql")
    op.drop_sql_object(HERE / "0014/policies/provider_rollup_deletions_email_writer_select.sql")
    op.drop_sql_object(HERE / "0014/policies/provider_rollup_deletions_email_reader_select.sql")
    op.drop_sql_object(HERE / "0014/triggers/delivery_attempts_rollup_deletions.sql")
    op.drop_sql_object(HERE / "0014/functions/refresh_provider_rollups.sql")
    op.drop_sql_object(HERE / "0014/functions/record_provider_rollup_deletions.sql")
    op.drop_sql_object(HERE / "0014/functions/raw_provider_rollups.sql")
    op.drop_sql_object(HERE / "0014/functions/merge_provider_rollups.sql")
    op.replace_sql_object(
        HERE / "0010/functions/provider_metrics.sql",
        previous=HERE / "0014/functions/provider_metrics.sql",
    )
    op.replace_sql_object(
        HERE / "0007/functions/maintain.sql", previous=HERE / "0014/functions/maintain.sql"
    )
    op.replace_sql_object(
        HERE / "0013/functions/apply_outcome_events.sql",
        previous=HERE / "0014/functions/apply_outcome_events.sql",
    )
    op.revoke_privileges(privileges=["EXECUTE"], target=LATENCY_PERCENTILE, roles=["email_writer"])
    for table in XACT_ID_INDEXES.values():
        op.drop_column(table, "xact_id", schema="email")
    for table in reversed(TABLES):
        op.drop_table(table, schema="email")
