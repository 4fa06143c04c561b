"""A daily tier of the dashboard rollups

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02 07:04:21.764995+00:00

Written by `python -m email_delivery.revision`: the SQL objects it creates or replaces are
frozen in 0016/ beside it; the previous definitions are the earlier revisions' files. Added by
hand: the table email.delivery_rollups_daily and the column
email.delivery_rollup_state.days_until.

Safe on a live database: a new, empty table and a column with a constant default on the
one-row state table (no rewrite), in one transaction under lock_timeout. Nothing is
backfilled here: days_until starts at '-infinity', so email.delivery_stats keeps reading
the hourly rows until the next `maintain` (its refresh builds every closed day from the
hourly rows, under the state row's lock, in one statement). The downgrade drops both after
putting back revision 0007's functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import email_delivery.migration_ops  # noqa: F401 - registers the grant and SQL object ops

revision: str = "0016"
down_revision: str | Sequence[str] | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HERE = Path(__file__).parent


def _status() -> postgresql.ENUM:
    return postgresql.ENUM(
        "queued", "in_progress", "sent", "retrying", "failed", "dead_letter", "suppressed",
        name="delivery_status", schema="email", create_type=False,
    )  # fmt: skip


def _create_daily_tier() -> None:
    op.create_table(
        "delivery_rollups_daily",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("day", sa.DateTime(timezone=True), nullable=False),
        sa.Column("workflow", sa.Text(), nullable=False),
        sa.Column("status", _status(), nullable=False),
        sa.Column("error_code", sa.Text(), nullable=True),
        sa.Column("latency_bucket", sa.SmallInteger(), nullable=True),
        sa.Column("deliveries", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.BigInteger(), nullable=False),
        sa.Column("retried", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "deliveries > 0 AND attempts >= 0 AND retried >= 0",
            name=op.f("ck_delivery_rollups_daily_counts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_rollups_daily")),
        sa.UniqueConstraint(
            "day",
            "workflow",
            "status",
            "error_code",
            "latency_bucket",
            name=op.f("uq_delivery_rollups_daily_key"),
            postgresql_nulls_not_distinct=True,
        ),
        schema="email",
    )
    op.revoke_privileges(
        privileges=["ALL"],
        target="TABLE email.delivery_rollups_daily",
        roles=["PUBLIC", "anon", "authenticated"],
    )
    op.grant_privileges(
        privileges=["SELECT"], target="TABLE email.delivery_rollups_daily", roles=["email_reader"]
    )
    op.enable_row_level_security(table="email.delivery_rollups_daily")
    op.add_column(
        "delivery_rollup_state",
        sa.Column(
            "days_until",
            sa.DateTime(timezone=True),
            server_default=sa.text("'-infinity'"),
            nullable=False,
        ),
        schema="email",
    )


def upgrade() -> None:
    # Busy production tables: wait at most 5 s for a lock (then fail, and retry later)
    # rather than queue every writer behind this revision.
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("SET LOCAL statement_timeout = '60s'")
    _create_daily_tier()
    op.replace_sql_object(
        HERE / "0016/functions/delivery_stats.sql",
        previous=HERE / "0007/functions/delivery_stats.sql",
    )
    op.replace_sql_object(
        HERE / "0016/functions/refresh_delivery_rollups.sql",
        previous=HERE / "0007/functions/refresh_delivery_rollups.sql",
    )
    op.create_sql_object(HERE / "0016/policies/delivery_rollups_daily_email_reader_select.sql")


def downgrade() -> None:
    # Busy production tables: wait at most 5 s for a lock (then fail, and retry later)
    # rather than queue every writer behind this revision.
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("SET LOCAL statement_timeout = '60s'")
    op.drop_sql_object(HERE / "0016/policies/delivery_rollups_daily_email_reader_select.sql")
    op.replace_sql_object(
        HERE / "0007/functions/refresh_delivery_rollups.sql",
        previous=HERE / "0016/functions/refresh_delivery_rollups.sql",
    )
    op.replace_sql_object(
        HERE / "0007/functions/delivery_stats.sql",
        previous=HERE / "0016/functions/delivery_stats.sql",
    )
    op.drop_column("delivery_rollup_state", "days_until", schema="email")
    op.drop_table("delivery_rollups_daily", schema="email")
