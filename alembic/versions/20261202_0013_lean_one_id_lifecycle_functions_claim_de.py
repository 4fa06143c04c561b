"""Lean one-id lifecycle functions (claim_delivery, mark_delivery_sent, mark_delivery_failed: one UPDATE … RETURNING); the partition drop reads the in-flight deliveries once

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 03:20:54.666751+00:00

Written by `python -m email_delivery.revision`: the SQL objects it creates or replaces are
frozen in 0013/ beside it; the previous definitions are the earlier revisions' files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from alembic import op

import email_delivery.migration_ops  # noqa: F401 - registers the grant and SQL object ops

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HERE = Path(__file__).parent


def upgrade() -> None:
    # Busy production tables: wait at most 5 s for a lock (then fail, and retry later)
    # rather than queue every writer behind this revision.
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("SET LOCAL statement_timeout = '60s'")
    op.replace_sql_object(
        HERE / "0013/functions/claim_deliveries.sql",
        previous=HERE / "0008/functions/claim_deliveries.sql",
    )
    op.replace_sql_object(
        HERE / "0013/functions/claim_delivery.sql",
        previous=HERE / "0008/functions/claim_delivery.sql",
    )
    op.replace_sql_object(
        HERE / "0013/functions/drop_expired_event_partitions.sql",
        previous=HERE / "0006/functions/drop_expired_event_partitions.sql",
    )
    op.replace_sql_object(
        HERE / "0013/functions/mark_delivery_failed.sql",
        previous=HERE / "0010/functions/mark_delivery_failed.sql",
    )
    op.replace_sql_object(
        HERE / "0013/functions/mark_delivery_sent.sql",
        previous=HERE / "0010/functions/mark_delivery_sent.sql",
    )


def downgrade() -> None:
    # Busy production tables: wait at most 5 s for a lock (then fail, and retry later)
    # rather than queue every writer behind this revision.
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("SET LOCAL statement_timeout = '60s'")
    op.replace_sql_object(
        HERE / "0010/functions/mark_delivery_sent.sql",
        previous=HERE / "0013/functions/mark_delivery_sent.sql",
    )
    op.replace_sql_object(
        HERE / "0010/functions/mark_delivery_failed.sql",
        previous=HERE / "0013/functions/mark_delivery_failed.sql",
    )
    op.replace_sql_object(
        HERE / "0006/functions/drop_expired_event_partitions.sql",
        previous=HERE / "0013/functions/drop_expired_event_partitions.sql",
    )
    op.replace_sql_object(
        HERE / "0008/functions/claim_delivery.sql",
        previous=HERE / "0013/functions/claim_delivery.sql",
    )
    op.replace_sql_object(
        HERE / "0008/functions/claim_deliveries.sql",
        previous=HERE / "0013/functions/claim_deliveries.sql",
    )
