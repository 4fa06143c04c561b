"""Worker lifecycle functions callable by email_writer (filled in by the lifecycle work).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 07:20:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
