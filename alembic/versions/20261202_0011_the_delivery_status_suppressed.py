"""The delivery status suppressed

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 02:25:00.000000+00:00

Only the new label of email.delivery_status, through alembic-postgresql-enum's
``op.add_enum_value`` (``ALTER TYPE … ADD VALUE``: a catalog change, no table rewrite, no
type rebuild). It is a revision of its own because PostgreSQL refuses to use a label added
in the same transaction ("unsafe use of new value"): revision 0012, which runs in a later
transaction, uses it (the transitions, the enqueue functions, the suppression list).

**Downgrade.** PostgreSQL cannot drop an enum label: the type is rebuilt without it, as
alembic-postgresql-enum's sync does, plus what that cannot do alone here — the objects that
depend on the type are put aside and restored exactly. It refuses while any delivery is still
``suppressed`` (delete those first; their events go with them). Then, in one transaction
under lock_timeout: the 14 functions whose arguments or results name the type are dropped,
and the view pending_deliveries (it reads deliveries.status); the type is renamed, the
six-label type created, the three status columns (deliveries, the partitioned audit log,
the rollups) converted ``USING status::text`` (this rewrites them and rebuilds their indexes
and CHECKs: acceptable for a downgrade, never run on the upgrade path), the old type dropped;
and the functions and the view are created again from the frozen files of the revisions
that last defined them, with their grants.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from alembic import op

import email_delivery.migration_ops  # noqa: F401 - registers the grant and SQL object ops

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HERE = Path(__file__).parent
LABELS = ("queued", "in_progress", "sent", "retrying", "failed", "dead_letter")
"""The labels before this revision, in order."""
DEPENDENT_FUNCTIONS = {
    # name: (the frozen file that defines it before this revision, EXECUTE grantees),
    # in creation order (mark_delivery_* call mark_deliveries_*, checked at creation).
    "is_allowed_transition": ("0005", "email_writer, email_reader"),
    "failure_outcome": ("0008", ""),
    "raw_delivery_rollups": ("0007", "email_reader"),
    "enqueue_delivery": ("0008", "email_writer"),
    "enqueue_deliveries": ("0008", "email_writer"),
    "claim_deliveries": ("0008", "email_writer"),
    "claim_delivery": ("0008", "email_writer"),
    "mark_deliveries_sent": ("0010", "email_writer"),
    "mark_deliveries_failed": ("0010", "email_writer"),
    "mark_delivery_sent": ("0010", "email_writer"),
    "mark_delivery_failed": ("0010", "email_writer"),
    "mark_delivery_dead_letter": ("0008", "email_writer"),
    "reap_stale_deliveries": ("0008", "email_writer"),
    "requeue_delivery": ("0008", ""),
    "delivery_feed": ("0009", "email_reader, email_writer"),
}
"""Every function whose arguments or result name email.delivery_status (pg_depend)."""
STATUS_COLUMNS = ("deliveries", "delivery_events", "delivery_rollups")
STATUS_CHECKS = {
    # CHECKs whose stored expressions hold labels of the type: set aside while it changes.
    "ck_deliveries_sent_at_iff_sent": "(status = 'sent') = (sent_at IS NOT NULL)",
    "ck_deliveries_lease_iff_in_progress": (
        "(status = 'in_progress') = (lease_expires_at IS NOT NULL)"
    ),
    "ck_deliveries_next_attempt_only_retrying": "next_attempt_at IS NULL OR status = 'retrying'",
}
FINISHED_INDEX = (
    "CREATE INDEX ix_deliveries_finished ON email.deliveries (status, queued_at, delivery_id) "
    "WHERE status NOT IN ('queued', 'in_progress', 'retrying')"
)


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("SET LOCAL statement_timeout = '60s'")
    if _has_label():
        return  # a database downgraded below 0011 keeps the label (see the docstring)
    op.add_enum_value(enum_schema="email", enum_name="delivery_status", new_value="suppressed")


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(
        """
        DO $$
        BEGIN
            IF EXISTS (SELECT FROM email.deliveries WHERE status::text = 'suppressed') THEN
                RAISE EXCEPTION 'deliveries are still suppressed: delete them before '
                                'downgrading below revision 0011'
                    USING ERRCODE = '55000';
            END IF;
        END
        $$
        """
    )
    op.drop_sql_object(HERE / "0008/views/pending_deliveries.sql")
    for name in reversed(DEPENDENT_FUNCTIONS):
        revision_id, _ = DEPENDENT_FUNCTIONS[name]
        op.drop_sql_object(HERE / f"{revision_id}/functions/{name}.sql")
    op.execute("ALTER TYPE email.delivery_status RENAME TO delivery_status_0011")
    labels = ", ".join(f"'{label}'" for label in LABELS)
    op.execute(f"CREATE TYPE email.delivery_status AS ENUM ({labels})")
    op.execute("ALTER TABLE email.deliveries ALTER COLUMN status DROP DEFAULT")
    for name in STATUS_CHECKS:
        op.execute(f"ALTER TABLE email.deliveries DROP CONSTRAINT {name}")
    op.execute("DROP INDEX email.ix_deliveries_finished")
    # PostgreSQL 18 catalogues NOT NULL as named constraints, and changing the type of a
    # partitioned table's column names its partitions' after the parent's: the audit log's
    # NOT NULL is dropped and set again, so every partition (the legacy one included, which
    # revision 0006's downgrade turns back into the table) gets the table's own name.
    op.execute("ALTER TABLE email.delivery_events ALTER COLUMN status DROP NOT NULL")
    for table in STATUS_COLUMNS:
        op.execute(
            f"ALTER TABLE email.{table} ALTER COLUMN status TYPE email.delivery_status "
            "USING status::text::email.delivery_status"
        )
    op.execute("ALTER TABLE email.delivery_events ALTER COLUMN status SET NOT NULL")
    op.execute(
        "ALTER TABLE email.deliveries ALTER COLUMN status "
        "SET DEFAULT 'queued'::email.delivery_status"
    )
    for name, check in STATUS_CHECKS.items():
        op.execute(f"ALTER TABLE email.deliveries ADD CONSTRAINT {name} CHECK ({check})")
    op.execute(FINISHED_INDEX)
    op.execute("DROP TYPE email.delivery_status_0011")
    for name, (revision_id, grantees) in DEPENDENT_FUNCTIONS.items():
        op.create_sql_object(HERE / f"{revision_id}/functions/{name}.sql")
        op.execute(f"REVOKE EXECUTE ON FUNCTION email.{name} FROM PUBLIC")
        if grantees:
            op.execute(f"GRANT EXECUTE ON FUNCTION email.{name} TO {grantees}")
    op.create_sql_object(HERE / "0008/views/pending_deliveries.sql")
    op.revoke_privileges(
        privileges=["ALL"],
        target="TABLE email.pending_deliveries",
        roles=["PUBLIC", "anon", "authenticated"],
    )
    op.grant_privileges(
        privileges=["SELECT"], target="TABLE email.pending_deliveries", roles=["email_reader"]
    )


def _has_label() -> bool:
    if op.get_context().as_sql:
        return False
    return bool(
        op.get_bind()
        .exec_driver_sql(
            "SELECT EXISTS (SELECT FROM pg_enum WHERE enumlabel = 'suppressed' "
            "AND enumtypid = 'email.delivery_status'::regtype)"
        )
        .scalar()
    )
