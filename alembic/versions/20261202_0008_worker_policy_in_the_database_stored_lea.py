"""Worker policy in the database: stored leases, heartbeats, per-workflow retry budgets and backoff, health

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 23:43:07.138799+00:00

Written by `python -m email_delivery.revision`: the SQL objects it creates or replaces are
frozen in 0008/ beside it; the previous definitions are the earlier revisions' files. The
lifecycle functions return the delivery row, which gains two columns, so each is dropped and
created again (with its grants) in this one transaction. Added by hand: the columns, the
policy tables with the default row '*', the claims in flight given the expiry the old
5-minute convention implied, and two CHECK constraints.

Safe on a busy table: the columns are nullable without a default (a catalog change, no
rewrite); everything else runs in one transaction under lock_timeout, the CHECK constraints
added NOT VALID (no scan under the lock) and validated after it, concurrently with writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import email_delivery.migration_ops  # noqa: F401 - registers the grant and SQL object ops

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HERE = Path(__file__).parent
TABLES = {
    "workflow_policies": ("email_reader", "email_writer"),
    "workflow_policy_changes": ("email_reader",),
}
CHECKS = {
    "ck_deliveries_lease_iff_in_progress": "(status = 'in_progress') = (lease_expires_at IS NOT NULL)",
    "ck_deliveries_next_attempt_only_retrying": "next_attempt_at IS NULL OR status = 'retrying'",
}
LEGACY_LEASE = "5 minutes"
"""The lease every worker had to pass by convention before this revision (the tracker's
default): a claim in flight while it runs expires as that convention said it would."""


def _create_tables() -> None:
    op.create_table(
        "workflow_policies",
        sa.Column("workflow", sa.Text(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), server_default=sa.text("5"), nullable=False),
        sa.Column(
            "lease", postgresql.INTERVAL(), server_default=sa.text("'00:05:00'"), nullable=False
        ),
        sa.Column(
            "backoff_base",
            postgresql.INTERVAL(),
            server_default=sa.text("'00:00:30'"),
            nullable=False,
        ),
        sa.Column(
            "backoff_cap",
            postgresql.INTERVAL(),
            server_default=sa.text("'01:00:00'"),
            nullable=False,
        ),
        sa.Column("backoff_jitter", sa.Double(), server_default=sa.text("0.2"), nullable=False),
        sa.Column("keep_sent_for", postgresql.INTERVAL(), nullable=True),
        sa.Column("keep_failed_for", postgresql.INTERVAL(), nullable=True),
        sa.Column(
            "alert_queued_age",
            postgresql.INTERVAL(),
            server_default=sa.text("'00:15:00'"),
            nullable=True,
        ),
        sa.Column(
            "alert_retrying_age",
            postgresql.INTERVAL(),
            server_default=sa.text("'02:00:00'"),
            nullable=True,
        ),
        sa.Column(
            "alert_expired_claim_age",
            postgresql.INTERVAL(),
            server_default=sa.text("'00:10:00'"),
            nullable=True,
        ),
        sa.Column(
            "alert_dead_letters_per_hour", sa.Integer(), server_default=sa.text("5"), nullable=True
        ),
        sa.Column("alert_failure_rate", sa.Double(), server_default=sa.text("0.1"), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("updated_by", sa.Text(), server_default=sa.text("SESSION_USER"), nullable=False),
        sa.CheckConstraint(
            "workflow = '*' OR workflow ~ '^[a-z][a-z0-9-]{0,62}$'",
            name=op.f("ck_workflow_policies_workflow_format"),
        ),
        sa.CheckConstraint(
            "max_attempts BETWEEN 1 AND 100", name=op.f("ck_workflow_policies_max_attempts_range")
        ),
        sa.CheckConstraint(
            "lease >= interval '1 second' AND lease <= interval '1 day'",
            name=op.f("ck_workflow_policies_lease_range"),
        ),
        sa.CheckConstraint(
            "backoff_base >= interval '1 second' AND backoff_base <= interval '1 day'",
            name=op.f("ck_workflow_policies_backoff_base_range"),
        ),
        sa.CheckConstraint(
            "backoff_cap >= backoff_base AND backoff_cap <= interval '7 days'",
            name=op.f("ck_workflow_policies_backoff_cap_range"),
        ),
        sa.CheckConstraint(
            "backoff_jitter BETWEEN 0 AND 1", name=op.f("ck_workflow_policies_backoff_jitter_range")
        ),
        sa.CheckConstraint(
            "keep_sent_for IS NULL OR keep_sent_for >= interval '1 day'",
            name=op.f("ck_workflow_policies_keep_sent_for_range"),
        ),
        sa.CheckConstraint(
            "keep_failed_for IS NULL OR (keep_failed_for >= interval '1 day' "
            "AND keep_failed_for >= coalesce(keep_sent_for, keep_failed_for))",
            name=op.f("ck_workflow_policies_keep_failed_for_range"),
        ),
        sa.CheckConstraint(
            "coalesce(alert_queued_age, alert_retrying_age, alert_expired_claim_age) IS NULL "
            "OR least(alert_queued_age, alert_retrying_age, alert_expired_claim_age) "
            "> interval '0'",
            name=op.f("ck_workflow_policies_alert_ages_positive"),
        ),
        sa.CheckConstraint(
            "alert_dead_letters_per_hour IS NULL OR alert_dead_letters_per_hour >= 0",
            name=op.f("ck_workflow_policies_alert_dead_letters_range"),
        ),
        sa.CheckConstraint(
            "alert_failure_rate IS NULL OR alert_failure_rate BETWEEN 0 AND 1",
            name=op.f("ck_workflow_policies_alert_failure_rate_range"),
        ),
        sa.PrimaryKeyConstraint("workflow", name=op.f("pk_workflow_policies")),
        schema="email",
    )
    op.execute("INSERT INTO email.workflow_policies (workflow) VALUES ('*')")
    op.create_table(
        "workflow_policy_changes",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("workflow", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("before", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("after", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("changed_by", sa.Text(), server_default=sa.text("SESSION_USER"), nullable=False),
        sa.Column(
            "changed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "action IN ('insert', 'update', 'delete')",
            name=op.f("ck_workflow_policy_changes_action_known"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow_policy_changes")),
        schema="email",
    )
    for table, readers in TABLES.items():
        op.revoke_privileges(
            privileges=["ALL"],
            target=f"TABLE email.{table}",
            roles=["PUBLIC", "anon", "authenticated"],
        )
        for role in readers:
            op.grant_privileges(privileges=["SELECT"], target=f"TABLE email.{table}", roles=[role])
        op.enable_row_level_security(table=f"email.{table}")


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("SET LOCAL statement_timeout = '60s'")
    op.add_column(
        "deliveries",
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        schema="email",
    )
    op.add_column(
        "deliveries",
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        schema="email",
    )
    _create_tables()
    op.replace_sql_object(
        HERE / "0008/functions/audit_updated_deliveries.sql",
        previous=HERE / "0006/functions/audit_updated_deliveries.sql",
    )
    op.create_sql_object(HERE / "0008/functions/audit_workflow_policy.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"], target="FUNCTION email.audit_workflow_policy()", roles=["PUBLIC"]
    )
    op.drop_sql_object(HERE / "0007/functions/claim_deliveries.sql")
    op.create_sql_object(HERE / "0008/functions/claim_deliveries.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.claim_deliveries(p_delivery_ids text[], p_lease interval)",
        roles=["PUBLIC"],
    )
    op.grant_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.claim_deliveries(p_delivery_ids text[], p_lease interval)",
        roles=["email_writer"],
    )
    op.drop_sql_object(HERE / "0005/functions/claim_delivery.sql")
    op.create_sql_object(HERE / "0008/functions/claim_delivery.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.claim_delivery(p_delivery_id text, p_lease interval)",
        roles=["PUBLIC"],
    )
    op.grant_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.claim_delivery(p_delivery_id text, p_lease interval)",
        roles=["email_writer"],
    )
    op.create_sql_object(HERE / "0008/functions/delivery_health.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.delivery_health(p_queued_age interval, p_retrying_age interval, p_expired_claim_age interval, p_dead_letters_per_hour integer, p_failure_rate double precision)",
        roles=["PUBLIC"],
    )
    op.grant_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.delivery_health(p_queued_age interval, p_retrying_age interval, p_expired_claim_age interval, p_dead_letters_per_hour integer, p_failure_rate double precision)",
        roles=["email_reader"],
    )
    op.drop_sql_object(HERE / "0005/functions/enqueue_deliveries.sql")
    op.create_sql_object(HERE / "0008/functions/enqueue_deliveries.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.enqueue_deliveries(p_delivery_ids text[], p_workflows text[], p_recipients text[], p_metadata jsonb[], p_queued_ats timestamp with time zone[])",
        roles=["PUBLIC"],
    )
    op.grant_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.enqueue_deliveries(p_delivery_ids text[], p_workflows text[], p_recipients text[], p_metadata jsonb[], p_queued_ats timestamp with time zone[])",
        roles=["email_writer"],
    )
    op.drop_sql_object(HERE / "0005/functions/enqueue_delivery.sql")
    op.create_sql_object(HERE / "0008/functions/enqueue_delivery.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.enqueue_delivery(p_delivery_id text, p_workflow text, p_recipient text, p_metadata jsonb, p_queued_at timestamp with time zone)",
        roles=["PUBLIC"],
    )
    op.grant_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.enqueue_delivery(p_delivery_id text, p_workflow text, p_recipient text, p_metadata jsonb, p_queued_at timestamp with time zone)",
        roles=["email_writer"],
    )
    op.create_sql_object(HERE / "0008/functions/extend_claim.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.extend_claim(p_delivery_id text, p_attempt integer, p_lease interval)",
        roles=["PUBLIC"],
    )
    op.grant_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.extend_claim(p_delivery_id text, p_attempt integer, p_lease interval)",
        roles=["email_writer"],
    )
    op.create_sql_object(HERE / "0008/functions/failure_outcome.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.failure_outcome(p_workflow text, p_attempts integer, p_metadata jsonb, p_retryable boolean, p_max_attempts integer)",
        roles=["PUBLIC"],
    )
    op.replace_sql_object(
        HERE / "0008/functions/guard_delivery.sql",
        previous=HERE / "0006/functions/guard_delivery.sql",
    )
    op.create_sql_object(HERE / "0008/functions/guard_workflow_policy.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"], target="FUNCTION email.guard_workflow_policy()", roles=["PUBLIC"]
    )
    op.drop_sql_object(HERE / "0007/functions/mark_deliveries_failed.sql")
    op.create_sql_object(HERE / "0008/functions/mark_deliveries_failed.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.mark_deliveries_failed(p_delivery_ids text[], p_attempts integer[], p_error_codes text[], p_error_messages text[], p_retryables boolean[], p_max_attempts integer[], p_payloads jsonb[])",
        roles=["PUBLIC"],
    )
    op.grant_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.mark_deliveries_failed(p_delivery_ids text[], p_attempts integer[], p_error_codes text[], p_error_messages text[], p_retryables boolean[], p_max_attempts integer[], p_payloads jsonb[])",
        roles=["email_writer"],
    )
    op.drop_sql_object(HERE / "0007/functions/mark_deliveries_sent.sql")
    op.create_sql_object(HERE / "0008/functions/mark_deliveries_sent.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.mark_deliveries_sent(p_delivery_ids text[], p_attempts integer[], p_payloads jsonb[])",
        roles=["PUBLIC"],
    )
    op.grant_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.mark_deliveries_sent(p_delivery_ids text[], p_attempts integer[], p_payloads jsonb[])",
        roles=["email_writer"],
    )
    op.drop_sql_object(HERE / "0005/functions/mark_delivery_dead_letter.sql")
    op.create_sql_object(HERE / "0008/functions/mark_delivery_dead_letter.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.mark_delivery_dead_letter(p_delivery_id text, p_reference text)",
        roles=["PUBLIC"],
    )
    op.grant_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.mark_delivery_dead_letter(p_delivery_id text, p_reference text)",
        roles=["email_writer"],
    )
    op.drop_sql_object(HERE / "0005/functions/mark_delivery_failed.sql")
    op.create_sql_object(HERE / "0008/functions/mark_delivery_failed.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.mark_delivery_failed(p_delivery_id text, p_attempt integer, p_error_code text, p_error_message text, p_retryable boolean, p_max_attempts integer, p_payload jsonb)",
        roles=["PUBLIC"],
    )
    op.grant_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.mark_delivery_failed(p_delivery_id text, p_attempt integer, p_error_code text, p_error_message text, p_retryable boolean, p_max_attempts integer, p_payload jsonb)",
        roles=["email_writer"],
    )
    op.drop_sql_object(HERE / "0005/functions/mark_delivery_sent.sql")
    op.create_sql_object(HERE / "0008/functions/mark_delivery_sent.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.mark_delivery_sent(p_delivery_id text, p_attempt integer, p_payload jsonb)",
        roles=["PUBLIC"],
    )
    op.grant_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.mark_delivery_sent(p_delivery_id text, p_attempt integer, p_payload jsonb)",
        roles=["email_writer"],
    )
    op.drop_sql_object(HERE / "0005/functions/reap_stale_deliveries.sql")
    op.create_sql_object(HERE / "0008/functions/reap_stale_deliveries.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.reap_stale_deliveries(p_lease interval, p_max_attempts integer, p_limit integer)",
        roles=["PUBLIC"],
    )
    op.grant_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.reap_stale_deliveries(p_lease interval, p_max_attempts integer, p_limit integer)",
        roles=["email_writer"],
    )
    op.drop_sql_object(HERE / "0005/functions/requeue_delivery.sql")
    op.create_sql_object(HERE / "0008/functions/requeue_delivery.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.requeue_delivery(p_delivery_id text, p_reason text)",
        roles=["PUBLIC"],
    )
    op.create_sql_object(HERE / "0008/functions/retry_delay.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.retry_delay(p_policy email.workflow_policies, p_failures integer)",
        roles=["PUBLIC"],
    )
    op.create_sql_object(HERE / "0008/functions/workflow_policy.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.workflow_policy(p_workflow text)",
        roles=["PUBLIC"],
    )
    op.create_sql_object(HERE / "0008/triggers/workflow_policies_audit.sql")
    op.create_sql_object(HERE / "0008/triggers/workflow_policies_guard.sql")
    op.create_sql_object(HERE / "0008/triggers/workflow_policies_no_truncate.sql")
    op.create_sql_object(HERE / "0008/policies/workflow_policies_email_reader_select.sql")
    op.create_sql_object(HERE / "0008/policies/workflow_policies_email_writer_select.sql")
    op.create_sql_object(HERE / "0008/policies/workflow_policy_changes_email_reader_select.sql")
    op.create_sql_object(HERE / "0008/views/delivery_health.sql")
    op.revoke_privileges(
        privileges=["ALL"],
        target="TABLE email.delivery_health",
        roles=["PUBLIC", "anon", "authenticated"],
    )
    op.grant_privileges(
        privileges=["SELECT"], target="TABLE email.delivery_health", roles=["email_reader"]
    )
    op.replace_sql_object(
        HERE / "0008/views/pending_deliveries.sql",
        previous=HERE / "0003/views/pending_deliveries.sql",
    )
    # Claims in flight: the expiry the convention gave them (audited, as the owner's edit).
    op.execute(
        "UPDATE email.deliveries SET lease_expires_at = "
        f"greatest(coalesce(last_attempted_at, now()) + interval '{LEGACY_LEASE}', now() + interval '1 second') "
        "WHERE status = 'in_progress' AND lease_expires_at IS NULL"
    )
    for name, rule in CHECKS.items():
        op.execute(f"ALTER TABLE email.deliveries ADD CONSTRAINT {name} CHECK ({rule}) NOT VALID")

    with op.get_context().autocommit_block():
        op.execute("SET lock_timeout = '5s'")
        op.execute("SET statement_timeout = '6h'")
        for name in CHECKS:
            op.execute(f"ALTER TABLE email.deliveries VALIDATE CONSTRAINT {name}")
        op.execute("RESET statement_timeout")
        op.execute("RESET lock_timeout")


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    for name in CHECKS:
        op.execute(f"ALTER TABLE email.deliveries DROP CONSTRAINT {name}")
    # CREATE OR REPLACE VIEW cannot drop the columns this revision added: drop and create
    # the previous view, with its grants.
    op.drop_sql_object(HERE / "0008/views/pending_deliveries.sql")
    op.create_sql_object(HERE / "0003/views/pending_deliveries.sql")
    op.revoke_privileges(
        privileges=["ALL"],
        target="TABLE email.pending_deliveries",
        roles=["PUBLIC", "anon", "authenticated"],
    )
    op.grant_privileges(
        privileges=["SELECT"], target="TABLE email.pending_deliveries", roles=["email_reader"]
    )
    op.drop_sql_object(HERE / "0008/views/delivery_health.sql")
    op.drop_sql_object(HERE / "0008/policies/workflow_policy_changes_email_reader_select.sql")
    op.drop_sql_object(HERE / "0008/policies/workflow_policies_email_writer_select.sql")
    op.drop_sql_object(HERE / "0008/policies/workflow_policies_email_reader_select.sql")
    op.drop_sql_object(HERE / "0008/triggers/workflow_policies_no_truncate.sql")
    op.drop_sql_object(HERE / "0008/triggers/workflow_policies_guard.sql")
    op.drop_sql_object(HERE / "0008/triggers/workflow_policies_audit.sql")
    op.drop_sql_object(HERE / "0008/functions/workflow_policy.sql")
    op.drop_sql_object(HERE / "0008/functions/retry_delay.sql")
    op.drop_sql_object(HERE / "0008/functions/requeue_delivery.sql")
    op.create_sql_object(HERE / "0005/functions/requeue_delivery.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.requeue_delivery(p_delivery_id text, p_reason text)",
        roles=["PUBLIC"],
    )
    op.drop_sql_object(HERE / "0008/functions/reap_stale_deliveries.sql")
    op.create_sql_object(HERE / "0005/functions/reap_stale_deliveries.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.reap_stale_deliveries(p_lease interval, p_max_attempts integer, p_limit integer)",
        roles=["PUBLIC"],
    )
    op.grant_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.reap_stale_deliveries(p_lease interval, p_max_attempts integer, p_limit integer)",
        roles=["email_writer"],
    )
    op.drop_sql_object(HERE / "0008/functions/mark_delivery_sent.sql")
    op.create_sql_object(HERE / "0005/functions/mark_delivery_sent.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.mark_delivery_sent(p_delivery_id text, p_attempt integer, p_payload jsonb)",
        roles=["PUBLIC"],
    )
    op.grant_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.mark_delivery_sent(p_delivery_id text, p_attempt integer, p_payload jsonb)",
        roles=["email_writer"],
    )
    op.drop_sql_object(HERE / "0008/functions/mark_delivery_failed.sql")
    op.create_sql_object(HERE / "0005/functions/mark_delivery_failed.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.mark_delivery_failed(p_delivery_id text, p_attempt integer, p_error_code text, p_error_message text, p_retryable boolean, p_max_attempts integer, p_payload jsonb)",
        roles=["PUBLIC"],
    )
    op.grant_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.mark_delivery_failed(p_delivery_id text, p_attempt integer, p_error_code text, p_error_message text, p_retryable boolean, p_max_attempts integer, p_payload jsonb)",
        roles=["email_writer"],
    )
    op.drop_sql_object(HERE / "0008/functions/mark_delivery_dead_letter.sql")
    op.create_sql_object(HERE / "0005/functions/mark_delivery_dead_letter.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.mark_delivery_dead_letter(p_delivery_id text, p_reference text)",
        roles=["PUBLIC"],
    )
    op.grant_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.mark_delivery_dead_letter(p_delivery_id text, p_reference text)",
        roles=["email_writer"],
    )
    op.drop_sql_object(HERE / "0008/functions/mark_deliveries_sent.sql")
    op.create_sql_object(HERE / "0007/functions/mark_deliveries_sent.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.mark_deliveries_sent(p_delivery_ids text[], p_attempts integer[], p_payloads jsonb[])",
        roles=["PUBLIC"],
    )
    op.grant_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.mark_deliveries_sent(p_delivery_ids text[], p_attempts integer[], p_payloads jsonb[])",
        roles=["email_writer"],
    )
    op.drop_sql_object(HERE / "0008/functions/mark_deliveries_failed.sql")
    op.create_sql_object(HERE / "0007/functions/mark_deliveries_failed.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.mark_deliveries_failed(p_delivery_ids text[], p_attempts integer[], p_error_codes text[], p_error_messages text[], p_retryables boolean[], p_max_attempts integer[], p_payloads jsonb[])",
        roles=["PUBLIC"],
    )
    op.grant_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.mark_deliveries_failed(p_delivery_ids text[], p_attempts integer[], p_error_codes text[], p_error_messages text[], p_retryables boolean[], p_max_attempts integer[], p_payloads jsonb[])",
        roles=["email_writer"],
    )
    op.drop_sql_object(HERE / "0008/functions/guard_workflow_policy.sql")
    op.replace_sql_object(
        HERE / "0006/functions/guard_delivery.sql",
        previous=HERE / "0008/functions/guard_delivery.sql",
    )
    op.drop_sql_object(HERE / "0008/functions/failure_outcome.sql")
    op.drop_sql_object(HERE / "0008/functions/extend_claim.sql")
    op.drop_sql_object(HERE / "0008/functions/enqueue_delivery.sql")
    op.create_sql_object(HERE / "0005/functions/enqueue_delivery.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.enqueue_delivery(p_delivery_id text, p_workflow text, p_recipient text, p_metadata jsonb, p_queued_at timestamp with time zone)",
        roles=["PUBLIC"],
    )
    op.grant_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.enqueue_delivery(p_delivery_id text, p_workflow text, p_recipient text, p_metadata jsonb, p_queued_at timestamp with time zone)",
        roles=["email_writer"],
    )
    op.drop_sql_object(HERE / "0008/functions/enqueue_deliveries.sql")
    op.create_sql_object(HERE / "0005/functions/enqueue_deliveries.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.enqueue_deliveries(p_delivery_ids text[], p_workflows text[], p_recipients text[], p_metadata jsonb[], p_queued_ats timestamp with time zone[])",
        roles=["PUBLIC"],
    )
    op.grant_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.enqueue_deliveries(p_delivery_ids text[], p_workflows text[], p_recipients text[], p_metadata jsonb[], p_queued_ats timestamp with time zone[])",
        roles=["email_writer"],
    )
    op.drop_sql_object(HERE / "0008/functions/delivery_health.sql")
    op.drop_sql_object(HERE / "0008/functions/claim_delivery.sql")
    op.create_sql_object(HERE / "0005/functions/claim_delivery.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.claim_delivery(p_delivery_id text, p_lease interval)",
        roles=["PUBLIC"],
    )
    op.grant_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.claim_delivery(p_delivery_id text, p_lease interval)",
        roles=["email_writer"],
    )
    op.drop_sql_object(HERE / "0008/functions/claim_deliveries.sql")
    op.create_sql_object(HERE / "0007/functions/claim_deliveries.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.claim_deliveries(p_delivery_ids text[], p_lease interval)",
        roles=["PUBLIC"],
    )
    op.grant_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.claim_deliveries(p_delivery_ids text[], p_lease interval)",
        roles=["email_writer"],
    )
    op.drop_sql_object(HERE / "0008/functions/audit_workflow_policy.sql")
    op.replace_sql_object(
        HERE / "0006/functions/audit_updated_deliveries.sql",
        previous=HERE / "0008/functions/audit_updated_deliveries.sql",
    )
    for table in reversed(TABLES):
        op.drop_table(table, schema="email")
    op.drop_column("deliveries", "next_attempt_at", schema="email")
    op.drop_column("deliveries", "lease_expires_at", schema="email")
