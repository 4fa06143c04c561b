"""Worker lifecycle functions callable by email_writer: enqueue, claim, mark, reap, requeue.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 07:20:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

import email_delivery.migration_ops  # noqa: F401 - registers the grant ops
from email_delivery import ddl

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for function in ddl.LIFECYCLE_FUNCTIONS:
        op.create_entity(function)
        target = f"FUNCTION email.{function.signature}"
        op.revoke_privileges(privileges=["EXECUTE"], target=target, roles=["PUBLIC"])
        roles = ddl.LIFECYCLE_FUNCTION_EXECUTE[function.signature]
        if roles:
            op.grant_privileges(privileges=["EXECUTE"], target=target, roles=roles)


def downgrade() -> None:
    for function in reversed(ddl.LIFECYCLE_FUNCTIONS):
        op.drop_entity(function)
