"""The audit trail cannot be forged: writes only through the lifecycle functions, every column guarded for every client

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 22:18:16.879102+00:00

Written by `python -m email_delivery.revision`: the SQL objects it creates or replaces are
frozen in 0005/ beside it; the previous definitions are the earlier revisions' files. Added by
hand: the timeouts, the events' changed_columns, and the worker's table grants revoked.

Safe on a busy table: lock_timeout makes it fail fast rather than queue writers behind it;
it rewrites no table (a nullable column without a default is a catalog change); every step
is reversed by the downgrade. Triggers, policies and grants change in one transaction, so no
client ever sees a half-hardened schema.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import email_delivery.migration_ops  # noqa: F401 - registers the grant and SQL object ops

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HERE = Path(__file__).parent


WRITER_TABLE_WRITES = {"deliveries": ("INSERT", "UPDATE"), "delivery_events": ("INSERT",)}
"""What the worker could write directly before: it records deliveries only through the
SECURITY DEFINER lifecycle functions now, and nobody but the owner's trigger writes events."""


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("SET LOCAL statement_timeout = '60s'")
    op.add_column(
        "delivery_events",
        sa.Column("changed_columns", postgresql.ARRAY(sa.Text()), nullable=True),
        schema="email",
    )
    for table, privileges in WRITER_TABLE_WRITES.items():
        op.revoke_privileges(
            privileges=privileges, target=f"TABLE email.{table}", roles=["email_writer"]
        )
    op.create_sql_object(HERE / "0005/functions/attach_event_payloads.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.attach_event_payloads(payloads jsonb)",
        roles=["PUBLIC"],
    )
    op.create_sql_object(HERE / "0005/functions/attached_payloads.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"], target="FUNCTION email.attached_payloads()", roles=["PUBLIC"]
    )
    op.create_sql_object(HERE / "0005/functions/attempts_since_requeue.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.attempts_since_requeue(attempts integer, metadata jsonb)",
        roles=["PUBLIC"],
    )
    op.create_sql_object(HERE / "0005/functions/audit_inserted_deliveries.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.audit_inserted_deliveries()",
        roles=["PUBLIC"],
    )
    op.create_sql_object(HERE / "0005/functions/audit_updated_deliveries.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"], target="FUNCTION email.audit_updated_deliveries()", roles=["PUBLIC"]
    )
    op.replace_sql_object(
        HERE / "0005/functions/claim_delivery.sql",
        previous=HERE / "0004/functions/claim_delivery.sql",
    )
    op.replace_sql_object(
        HERE / "0005/functions/delivery_stats.sql",
        previous=HERE / "0004/functions/delivery_stats.sql",
    )
    op.replace_sql_object(
        HERE / "0005/functions/enqueue_deliveries.sql",
        previous=HERE / "0004/functions/enqueue_deliveries.sql",
    )
    op.replace_sql_object(
        HERE / "0005/functions/enqueue_delivery.sql",
        previous=HERE / "0004/functions/enqueue_delivery.sql",
    )
    op.replace_sql_object(
        HERE / "0005/functions/find_secret.sql", previous=HERE / "0002/functions/find_secret.sql"
    )
    op.create_sql_object(HERE / "0005/functions/guard_delivery.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"], target="FUNCTION email.guard_delivery()", roles=["PUBLIC"]
    )
    op.replace_sql_object(
        HERE / "0005/functions/is_allowed_transition.sql",
        previous=HERE / "0004/functions/is_allowed_transition.sql",
    )
    op.create_sql_object(HERE / "0005/functions/is_owner_session.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"], target="FUNCTION email.is_owner_session()", roles=["PUBLIC"]
    )
    op.replace_sql_object(
        HERE / "0005/functions/mark_delivery_dead_letter.sql",
        previous=HERE / "0004/functions/mark_delivery_dead_letter.sql",
    )
    op.replace_sql_object(
        HERE / "0005/functions/mark_delivery_failed.sql",
        previous=HERE / "0004/functions/mark_delivery_failed.sql",
    )
    op.replace_sql_object(
        HERE / "0005/functions/mark_delivery_sent.sql",
        previous=HERE / "0004/functions/mark_delivery_sent.sql",
    )
    op.create_sql_object(HERE / "0005/functions/percent_decoded.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.percent_decoded(value text)",
        roles=["PUBLIC"],
    )
    op.grant_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.percent_decoded(value text)",
        roles=["email_writer", "email_reader"],
    )
    op.replace_sql_object(
        HERE / "0005/functions/reap_stale_deliveries.sql",
        previous=HERE / "0004/functions/reap_stale_deliveries.sql",
    )
    op.replace_sql_object(
        HERE / "0005/functions/requeue_delivery.sql",
        previous=HERE / "0004/functions/requeue_delivery.sql",
    )
    op.replace_sql_object(
        HERE / "0005/functions/sanitize_error_message.sql",
        previous=HERE / "0002/functions/sanitize_error_message.sql",
    )
    op.replace_sql_object(
        HERE / "0005/triggers/deliveries_audit_insert.sql",
        previous=HERE / "0001/triggers/deliveries_audit_insert.sql",
    )
    op.replace_sql_object(
        HERE / "0005/triggers/deliveries_audit_update.sql",
        previous=HERE / "0001/triggers/deliveries_audit_update.sql",
    )
    op.create_sql_object(HERE / "0005/triggers/deliveries_guard.sql")
    op.drop_sql_object(HERE / "0001/policies/deliveries_email_writer_insert.sql")
    op.drop_sql_object(HERE / "0001/policies/deliveries_email_writer_update.sql")
    op.drop_sql_object(HERE / "0001/policies/delivery_events_email_writer_insert.sql")
    op.drop_sql_object(HERE / "0001/triggers/deliveries_guard_transition.sql")
    op.drop_sql_object(HERE / "0001/triggers/deliveries_touch_updated_at.sql")
    op.drop_sql_object(HERE / "0001/functions/guard_transition.sql")
    op.drop_sql_object(HERE / "0001/functions/touch_updated_at.sql")
    op.drop_sql_object(HERE / "0001/functions/record_delivery_event.sql")


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("SET LOCAL statement_timeout = '60s'")
    op.create_sql_object(HERE / "0001/functions/record_delivery_event.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"], target="FUNCTION email.record_delivery_event()", roles=["PUBLIC"]
    )
    op.create_sql_object(HERE / "0001/functions/touch_updated_at.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"], target="FUNCTION email.touch_updated_at()", roles=["PUBLIC"]
    )
    op.create_sql_object(HERE / "0001/functions/guard_transition.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"], target="FUNCTION email.guard_transition()", roles=["PUBLIC"]
    )
    op.create_sql_object(HERE / "0001/triggers/deliveries_touch_updated_at.sql")
    op.create_sql_object(HERE / "0001/triggers/deliveries_guard_transition.sql")
    op.create_sql_object(HERE / "0001/policies/delivery_events_email_writer_insert.sql")
    op.create_sql_object(HERE / "0001/policies/deliveries_email_writer_update.sql")
    op.create_sql_object(HERE / "0001/policies/deliveries_email_writer_insert.sql")
    op.drop_sql_object(HERE / "0005/triggers/deliveries_guard.sql")
    op.replace_sql_object(
        HERE / "0001/triggers/deliveries_audit_update.sql",
        previous=HERE / "0005/triggers/deliveries_audit_update.sql",
    )
    op.replace_sql_object(
        HERE / "0001/triggers/deliveries_audit_insert.sql",
        previous=HERE / "0005/triggers/deliveries_audit_insert.sql",
    )
    op.replace_sql_object(
        HERE / "0002/functions/sanitize_error_message.sql",
        previous=HERE / "0005/functions/sanitize_error_message.sql",
    )
    op.replace_sql_object(
        HERE / "0004/functions/requeue_delivery.sql",
        previous=HERE / "0005/functions/requeue_delivery.sql",
    )
    op.replace_sql_object(
        HERE / "0004/functions/reap_stale_deliveries.sql",
        previous=HERE / "0005/functions/reap_stale_deliveries.sql",
    )
    op.drop_sql_object(HERE / "0005/functions/percent_decoded.sql")
    op.replace_sql_object(
        HERE / "0004/functions/mark_delivery_sent.sql",
        previous=HERE / "0005/functions/mark_delivery_sent.sql",
    )
    op.replace_sql_object(
        HERE / "0004/functions/mark_delivery_failed.sql",
        previous=HERE / "0005/functions/mark_delivery_failed.sql",
    )
    op.replace_sql_object(
        HERE / "0004/functions/mark_delivery_dead_letter.sql",
        previous=HERE / "0005/functions/mark_delivery_dead_letter.sql",
    )
    op.drop_sql_object(HERE / "0005/functions/is_owner_session.sql")
    op.replace_sql_object(
        HERE / "0004/functions/is_allowed_transition.sql",
        previous=HERE / "0005/functions/is_allowed_transition.sql",
    )
    op.drop_sql_object(HERE / "0005/functions/guard_delivery.sql")
    op.replace_sql_object(
        HERE / "0002/functions/find_secret.sql", previous=HERE / "0005/functions/find_secret.sql"
    )
    op.replace_sql_object(
        HERE / "0004/functions/enqueue_delivery.sql",
        previous=HERE / "0005/functions/enqueue_delivery.sql",
    )
    op.replace_sql_object(
        HERE / "0004/functions/enqueue_deliveries.sql",
        previous=HERE / "0005/functions/enqueue_deliveries.sql",
    )
    op.replace_sql_object(
        HERE / "0004/functions/delivery_stats.sql",
        previous=HERE / "0005/functions/delivery_stats.sql",
    )
    op.replace_sql_object(
        HERE / "0004/functions/claim_delivery.sql",
        previous=HERE / "0005/functions/claim_delivery.sql",
    )
    op.drop_sql_object(HERE / "0005/functions/audit_updated_deliveries.sql")
    op.drop_sql_object(HERE / "0005/functions/audit_inserted_deliveries.sql")
    op.drop_sql_object(HERE / "0005/functions/attempts_since_requeue.sql")
    op.drop_sql_object(HERE / "0005/functions/attached_payloads.sql")
    op.drop_sql_object(HERE / "0005/functions/attach_event_payloads.sql")
    for table, privileges in WRITER_TABLE_WRITES.items():
        op.grant_privileges(
            privileges=privileges, target=f"TABLE email.{table}", roles=["email_writer"]
        )
    op.drop_column("delivery_events", "changed_columns", schema="email")
