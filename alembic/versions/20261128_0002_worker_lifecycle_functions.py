"""Worker lifecycle functions callable by email_writer: enqueue, claim, mark, reap, requeue.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 07:20:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from alembic import op

import email_delivery.migration_ops  # noqa: F401 - registers the grant and SQL ops

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# What this revision creates, frozen: the SQL files in 0002/ beside it, in creation order
# (the mark functions call the sanitiser), and who may execute each.
FROZEN = Path(__file__).with_name("0002")
WRITER = ("email_writer",)
READ_AND_WRITE = ("email_writer", "email_reader")
FUNCTIONS = {
    "sanitize_error_message(message text)": READ_AND_WRITE,
    "find_secret(value jsonb)": READ_AND_WRITE,
    "enqueue_delivery(p_delivery_id text, p_workflow text, p_recipient text, p_metadata jsonb, "
    "p_queued_at timestamp with time zone)": WRITER,
    "enqueue_deliveries(p_delivery_ids text[], p_workflows text[], p_recipients text[], "
    "p_metadata jsonb[], p_queued_ats timestamp with time zone[])": WRITER,
    "claim_delivery(p_delivery_id text, p_lease interval)": WRITER,
    "mark_delivery_sent(p_delivery_id text, p_attempt integer, p_payload jsonb)": WRITER,
    "mark_delivery_failed(p_delivery_id text, p_attempt integer, p_error_code text, "
    "p_error_message text, p_retryable boolean, p_max_attempts integer, p_payload jsonb)": WRITER,
    "mark_delivery_dead_letter(p_delivery_id text, p_reference text)": WRITER,
    # Operators only: no group role; the owner runs it.
    "requeue_delivery(p_delivery_id text, p_reason text)": (),
    "reap_stale_deliveries(p_lease interval, p_max_attempts integer, p_limit integer)": WRITER,
}


def _file(signature: str) -> Path:
    return FROZEN / "functions" / f"{signature.split('(')[0]}.sql"


def upgrade() -> None:
    for signature, roles in FUNCTIONS.items():
        op.create_sql_object(_file(signature))
        target = f"FUNCTION email.{signature}"
        op.revoke_privileges(privileges=["EXECUTE"], target=target, roles=["PUBLIC"])
        if roles:
            op.grant_privileges(privileges=["EXECUTE"], target=target, roles=roles)


def downgrade() -> None:
    for signature in reversed(FUNCTIONS):
        op.drop_sql_object(_file(signature))
