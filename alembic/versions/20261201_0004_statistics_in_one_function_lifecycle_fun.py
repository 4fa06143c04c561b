"""Statistics in one function; lifecycle functions name the field they reject

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 21:57:48.440033+00:00

Written by `python -m email_delivery.revision`: the SQL objects it creates or replaces are
frozen in 0004/ beside it; the previous definitions are the earlier revisions' files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from alembic import op

import email_delivery.migration_ops  # noqa: F401 - registers the grant and SQL object ops

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HERE = Path(__file__).parent


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("SET LOCAL statement_timeout = '60s'")
    op.replace_sql_object(
        HERE / "0004/functions/claim_delivery.sql",
        previous=HERE / "0002/functions/claim_delivery.sql",
    )
    op.create_sql_object(HERE / "0004/functions/delivery_stats.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.delivery_stats(p_since timestamp with time zone, p_until timestamp with time zone, p_bucket text, p_workflow text, p_top_errors integer)",
        roles=["PUBLIC"],
    )
    op.grant_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.delivery_stats(p_since timestamp with time zone, p_until timestamp with time zone, p_bucket text, p_workflow text, p_top_errors integer)",
        roles=["email_reader"],
    )
    op.replace_sql_object(
        HERE / "0004/functions/enqueue_deliveries.sql",
        previous=HERE / "0002/functions/enqueue_deliveries.sql",
    )
    op.replace_sql_object(
        HERE / "0004/functions/enqueue_delivery.sql",
        previous=HERE / "0002/functions/enqueue_delivery.sql",
    )
    op.replace_sql_object(
        HERE / "0004/functions/is_allowed_transition.sql",
        previous=HERE / "0001/functions/is_allowed_transition.sql",
    )
    op.replace_sql_object(
        HERE / "0004/functions/mark_delivery_dead_letter.sql",
        previous=HERE / "0002/functions/mark_delivery_dead_letter.sql",
    )
    op.replace_sql_object(
        HERE / "0004/functions/mark_delivery_failed.sql",
        previous=HERE / "0002/functions/mark_delivery_failed.sql",
    )
    op.replace_sql_object(
        HERE / "0004/functions/mark_delivery_sent.sql",
        previous=HERE / "0002/functions/mark_delivery_sent.sql",
    )
    op.replace_sql_object(
        HERE / "0004/functions/reap_stale_deliveries.sql",
        previous=HERE / "0002/functions/reap_stale_deliveries.sql",
    )
    op.replace_sql_object(
        HERE / "0004/functions/requeue_delivery.sql",
        previous=HERE / "0002/functions/requeue_delivery.sql",
    )
    op.replace_sql_object(
        HERE / "0004/views/delivery_stats_24h.sql",
        previous=HERE / "0003/views/delivery_stats_24h.sql",
    )
    op.replace_sql_object(
        HERE / "0004/views/delivery_stats_daily.sql",
        previous=HERE / "0003/views/delivery_stats_daily.sql",
    )
    op.replace_sql_object(
        HERE / "0004/views/delivery_stats_hourly.sql",
        previous=HERE / "0003/views/delivery_stats_hourly.sql",
    )


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("SET LOCAL statement_timeout = '60s'")
    op.replace_sql_object(
        HERE / "0003/views/delivery_stats_hourly.sql",
        previous=HERE / "0004/views/delivery_stats_hourly.sql",
    )
    op.replace_sql_object(
        HERE / "0003/views/delivery_stats_daily.sql",
        previous=HERE / "0004/views/delivery_stats_daily.sql",
    )
    op.replace_sql_object(
        HERE / "0003/views/delivery_stats_24h.sql",
        previous=HERE / "0004/views/delivery_stats_24h.sql",
    )
    op.replace_sql_object(
        HERE / "0002/functions/requeue_delivery.sql",
        previous=HERE / "0004/functions/requeue_delivery.sql",
    )
    op.replace_sql_object(
        HERE / "0002/functions/reap_stale_deliveries.sql",
        previous=HERE / "0004/functions/reap_stale_deliveries.sql",
    )
    op.replace_sql_object(
        HERE / "0002/functions/mark_delivery_sent.sql",
        previous=HERE / "0004/functions/mark_delivery_sent.sql",
    )
    op.replace_sql_object(
        HERE / "0002/functions/mark_delivery_failed.sql",
        previous=HERE / "0004/functions/mark_delivery_failed.sql",
    )
    op.replace_sql_object(
        HERE / "0002/functions/mark_delivery_dead_letter.sql",
        previous=HERE / "0004/functions/mark_delivery_dead_letter.sql",
    )
    op.replace_sql_object(
        HERE / "0001/functions/is_allowed_transition.sql",
        previous=HERE / "0004/functions/is_allowed_transition.sql",
    )
    op.replace_sql_object(
        HERE / "0002/functions/enqueue_delivery.sql",
        previous=HERE / "0004/functions/enqueue_delivery.sql",
    )
    op.replace_sql_object(
        HERE / "0002/functions/enqueue_deliveries.sql",
        previous=HERE / "0004/functions/enqueue_deliveries.sql",
    )
    op.drop_sql_object(HERE / "0004/functions/delivery_stats.sql")
    op.replace_sql_object(
        HERE / "0002/functions/claim_delivery.sql",
        previous=HERE / "0004/functions/claim_delivery.sql",
    )
