"""lean one-id claim

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 02:28:46.754060+00:00

Written by `python -m email_delivery.revision`: the SQL objects it creates or replaces are
frozen in 0009/ beside it; the previous definitions are the earlier revisions' files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from alembic import op

import email_delivery.migration_ops  # noqa: F401 - registers the grant and SQL object ops

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HERE = Path(__file__).parent


def upgrade() -> None:
    op.replace_sql_object(
        HERE / "0009/functions/claim_deliveries.sql",
        previous=HERE / "0008/functions/claim_deliveries.sql",
    )
    op.replace_sql_object(
        HERE / "0009/functions/claim_delivery.sql",
        previous=HERE / "0008/functions/claim_delivery.sql",
    )


def downgrade() -> None:
    op.replace_sql_object(
        HERE / "0008/functions/claim_delivery.sql",
        previous=HERE / "0009/functions/claim_delivery.sql",
    )
    op.replace_sql_object(
        HERE / "0008/functions/claim_deliveries.sql",
        previous=HERE / "0009/functions/claim_deliveries.sql",
    )
