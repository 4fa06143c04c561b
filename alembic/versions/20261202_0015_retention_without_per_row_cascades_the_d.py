"""Retention without per-row cascades: the deliveries' children lose their foreign keys to a set-based reference check and purge; the purge trigger looks events up by index, without JIT

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02 06:41:24.828548+00:00

Written by `python -m email_delivery.revision`: the SQL objects it creates or replaces are
frozen in 0015/ beside it; the previous definitions are the earlier revisions' files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from alembic import op

import email_delivery.migration_ops  # noqa: F401 - registers the grant and SQL object ops

revision: str = "0015"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HERE = Path(__file__).parent

# The foreign keys to email.deliveries that the triggers *_reference_insert/_update and the
# purge trigger replace (see email_delivery.models.DELIVERY_REFERENCES).
FOREIGN_KEYS = ("delivery_attempts", "delivery_outcomes", "outcome_events")


def upgrade() -> None:
    # Busy production tables: wait at most 5 s for a lock (then fail, and retry later)
    # rather than queue every writer behind this revision.
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("SET LOCAL statement_timeout = '60s'")
    op.create_sql_object(HERE / "0015/functions/check_delivery_reference.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"], target="FUNCTION email.check_delivery_reference()", roles=["PUBLIC"]
    )
    op.replace_sql_object(
        HERE / "0015/functions/purge_delivery_events.sql",
        previous=HERE / "0007/functions/purge_delivery_events.sql",
    )
    op.replace_sql_object(
        HERE / "0015/functions/record_provider_rollup_deletions.sql",
        previous=HERE / "0014/functions/record_provider_rollup_deletions.sql",
    )
    op.create_sql_object(HERE / "0015/triggers/delivery_attempts_reference_insert.sql")
    op.create_sql_object(HERE / "0015/triggers/delivery_attempts_reference_update.sql")
    op.create_sql_object(HERE / "0015/triggers/delivery_outcomes_reference_insert.sql")
    op.create_sql_object(HERE / "0015/triggers/delivery_outcomes_reference_update.sql")
    op.create_sql_object(HERE / "0015/triggers/outcome_events_reference_insert.sql")
    op.create_sql_object(HERE / "0015/triggers/outcome_events_reference_update.sql")
    # The checks and the purge are in place (same transaction): the keys can go. Dropping a
    # foreign key takes a brief lock on both tables, rewrites nothing.
    for table in FOREIGN_KEYS:
        op.drop_constraint(
            f"fk_{table}_delivery_id_deliveries", table, schema="email", type_="foreignkey"
        )


def downgrade() -> None:
    # Busy production tables: wait at most 5 s for a lock (then fail, and retry later)
    # rather than queue every writer behind this revision.
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("SET LOCAL statement_timeout = '60s'")
    for table in FOREIGN_KEYS:
        op.create_foreign_key(
            f"fk_{table}_delivery_id_deliveries",
            table,
            "deliveries",
            ["delivery_id"],
            ["delivery_id"],
            source_schema="email",
            referent_schema="email",
            ondelete="CASCADE",
        )
    op.drop_sql_object(HERE / "0015/triggers/outcome_events_reference_update.sql")
    op.drop_sql_object(HERE / "0015/triggers/outcome_events_reference_insert.sql")
    op.drop_sql_object(HERE / "0015/triggers/delivery_outcomes_reference_update.sql")
    op.drop_sql_object(HERE / "0015/triggers/delivery_outcomes_reference_insert.sql")
    op.drop_sql_object(HERE / "0015/triggers/delivery_attempts_reference_update.sql")
    op.drop_sql_object(HERE / "0015/triggers/delivery_attempts_reference_insert.sql")
    op.replace_sql_object(
        HERE / "0014/functions/record_provider_rollup_deletions.sql",
        previous=HERE / "0015/functions/record_provider_rollup_deletions.sql",
    )
    op.replace_sql_object(
        HERE / "0007/functions/purge_delivery_events.sql",
        previous=HERE / "0015/functions/purge_delivery_events.sql",
    )
    op.drop_sql_object(HERE / "0015/functions/check_delivery_reference.sql")
