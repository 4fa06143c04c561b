"""Review fixes and lean one-id lifecycle functions: health shows disabled endpoints by id only; outcomes never match a suppressed delivery and only a sent one clears a hard bounce; a bounce leaves a stronger entry whole; matching starts from the reported ids; listeners register for at most 2 minutes; claim_delivery, mark_delivery_sent and mark_delivery_failed are one UPDATE … RETURNING; the partition drop reads the in-flight deliveries once

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 04:29:24.479408+00:00

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
        HERE / "0013/functions/apply_outcome_events.sql",
        previous=HERE / "0012/functions/apply_outcome_events.sql",
    )
    op.replace_sql_object(
        HERE / "0013/functions/claim_deliveries.sql",
        previous=HERE / "0008/functions/claim_deliveries.sql",
    )
    op.replace_sql_object(
        HERE / "0013/functions/claim_delivery.sql",
        previous=HERE / "0008/functions/claim_delivery.sql",
    )
    op.replace_sql_object(
        HERE / "0013/functions/delivery_health.sql",
        previous=HERE / "0009/functions/delivery_health.sql",
    )
    op.replace_sql_object(
        HERE / "0013/functions/drop_expired_event_partitions.sql",
        previous=HERE / "0006/functions/drop_expired_event_partitions.sql",
    )
    op.replace_sql_object(
        HERE / "0013/functions/feed_listener_heartbeat.sql",
        previous=HERE / "0009/functions/feed_listener_heartbeat.sql",
    )
    op.replace_sql_object(
        HERE / "0013/functions/mark_deliveries_sent.sql",
        previous=HERE / "0012/functions/mark_deliveries_sent.sql",
    )
    op.replace_sql_object(
        HERE / "0013/functions/mark_delivery_failed.sql",
        previous=HERE / "0010/functions/mark_delivery_failed.sql",
    )
    op.replace_sql_object(
        HERE / "0013/functions/mark_delivery_sent.sql",
        previous=HERE / "0010/functions/mark_delivery_sent.sql",
    )
    op.replace_sql_object(
        HERE / "0013/functions/match_outcome_events.sql",
        previous=HERE / "0010/functions/match_outcome_events.sql",
    )
    op.replace_sql_object(
        HERE / "0013/functions/record_delivery_outcome.sql",
        previous=HERE / "0010/functions/record_delivery_outcome.sql",
    )


def downgrade() -> None:
    # Busy production tables: wait at most 5 s for a lock (then fail, and retry later)
    # rather than queue every writer behind this revision.
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("SET LOCAL statement_timeout = '60s'")
    op.replace_sql_object(
        HERE / "0010/functions/record_delivery_outcome.sql",
        previous=HERE / "0013/functions/record_delivery_outcome.sql",
    )
    op.replace_sql_object(
        HERE / "0010/functions/match_outcome_events.sql",
        previous=HERE / "0013/functions/match_outcome_events.sql",
    )
    op.replace_sql_object(
        HERE / "0010/functions/mark_delivery_sent.sql",
        previous=HERE / "0013/functions/mark_delivery_sent.sql",
    )
    op.replace_sql_object(
        HERE / "0010/functions/mark_delivery_failed.sql",
        previous=HERE / "0013/functions/mark_delivery_failed.sql",
    )
    op.replace_sql_object(
        HERE / "0012/functions/mark_deliveries_sent.sql",
        previous=HERE / "0013/functions/mark_deliveries_sent.sql",
    )
    op.replace_sql_object(
        HERE / "0009/functions/feed_listener_heartbeat.sql",
        previous=HERE / "0013/functions/feed_listener_heartbeat.sql",
    )
    op.replace_sql_object(
        HERE / "0006/functions/drop_expired_event_partitions.sql",
        previous=HERE / "0013/functions/drop_expired_event_partitions.sql",
    )
    op.replace_sql_object(
        HERE / "0009/functions/delivery_health.sql",
        previous=HERE / "0013/functions/delivery_health.sql",
    )
    op.replace_sql_object(
        HERE / "0008/functions/claim_delivery.sql",
        previous=HERE / "0013/functions/claim_delivery.sql",
    )
    op.replace_sql_object(
        HERE / "0008/functions/claim_deliveries.sql",
        previous=HERE / "0013/functions/claim_deliveries.sql",
    )
    op.replace_sql_object(
        HERE / "0012/functions/apply_outcome_events.sql",
        previous=HERE / "0013/functions/apply_outcome_events.sql",
    )
