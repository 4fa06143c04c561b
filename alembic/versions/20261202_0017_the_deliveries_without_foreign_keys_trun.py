"""The deliveries without foreign keys: TRUNCATE is refused while a child names a delivery, deletes in READ COMMITTED only

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02 07:35:28.908237+00:00

Written by `python -m email_delivery.revision`: the SQL objects it creates or replaces are
frozen in 0017/ beside it; the previous definitions are the earlier revisions' files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from alembic import op

import email_delivery.migration_ops  # noqa: F401 - registers the grant and SQL object ops

revision: str = "0017"
down_revision: str | Sequence[str] | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HERE = Path(__file__).parent


def upgrade() -> None:
    # Busy production tables: wait at most 5 s for a lock (then fail, and retry later)
    # rather than queue every writer behind this revision.
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("SET LOCAL statement_timeout = '60s'")
    op.create_sql_object(HERE / "0017/functions/check_truncated_deliveries.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.check_truncated_deliveries()",
        roles=["PUBLIC"],
    )
    op.replace_sql_object(
        HERE / "0017/functions/purge_delivery_events.sql",
        previous=HERE / "0015/functions/purge_delivery_events.sql",
    )
    op.create_sql_object(HERE / "0017/triggers/deliveries_reference_truncate.sql")


def downgrade() -> None:
    # Busy production tables: wait at most 5 s for a lock (then fail, and retry later)
    # rather than queue every writer behind this revision.
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("SET LOCAL statement_timeout = '60s'")
    op.drop_sql_object(HERE / "0017/triggers/deliveries_reference_truncate.sql")
    op.replace_sql_object(
        HERE / "0015/functions/purge_delivery_events.sql",
        previous=HERE / "0017/functions/purge_delivery_events.sql",
    )
    op.drop_sql_object(HERE / "0017/functions/check_truncated_deliveries.sql")
