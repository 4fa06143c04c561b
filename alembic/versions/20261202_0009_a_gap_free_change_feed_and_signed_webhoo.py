"""A gap-free change feed and signed webhooks: delivery_feed, the outbox tables, webhook health

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 02:02:39.817650+00:00

Written by `python -m email_delivery.revision`: the SQL objects it creates or replaces are
frozen in 0009/ beside it; the previous definitions are the earlier revisions' files. Added by
hand: the webhook tables (owner-only: RLS on, no policy, no grant; the outbox's place in the
feed seeded at the feed's head, so history is not sent; feed_listeners, the sessions that
LISTEN, so that writers NOTIFY only while someone listens), and the feed's btree index
(xact_id, id) on delivery_events in place of 0006's BRIN on xact_id.

Safe on a busy table: the index is built before the revision's transaction, as 0006 built
its indexes: an invalid index ON ONLY the partitioned parent, then each partition's index
CONCURRENTLY (writers go on) and attached; the parent becomes valid with the last attach.
Each step is idempotent (a rerun after a failure picks up where it stopped). Offline (`alembic
upgrade --sql`, `export-sql`) the partitions cannot be listed, so the script builds the index
with one plain CREATE INDEX on the parent instead, which blocks writes while it builds: fine
for a new or small database; run the online upgrade on a large one. The rest runs in one
short transaction under lock_timeout; the BRIN is dropped there (a catalog change).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

import email_delivery.migration_ops  # noqa: F401 - registers the grant and SQL object ops

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HERE = Path(__file__).parent
TABLES = (
    "webhook_endpoints",
    "webhook_secrets",
    "webhook_messages",
    "webhook_attempts",
    "webhook_feed_state",
    "feed_listeners",
)
FEED_INDEX = "ix_delivery_events_xact_id_id"
PARTITIONS = """
    SELECT c.relname FROM pg_catalog.pg_inherits AS i
    JOIN pg_catalog.pg_class AS c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'email.delivery_events'::regclass
      AND NOT EXISTS (
          SELECT FROM pg_catalog.pg_inherits AS x
          JOIN pg_catalog.pg_class AS ix ON ix.oid = x.inhrelid
          WHERE x.inhparent = 'email.ix_delivery_events_xact_id_id'::regclass
            AND ix.oid IN (SELECT indexrelid FROM pg_catalog.pg_index WHERE indrelid = c.oid))
    ORDER BY c.relname
"""
"""The partitions whose index is not attached to the parent's yet."""
LEGACY_BRIN_NAME = """DO $$
DECLARE
    child regclass;
BEGIN
    SELECT i.inhrelid::regclass INTO child
    FROM pg_catalog.pg_inherits AS i
    JOIN pg_catalog.pg_index AS x ON x.indexrelid = i.inhrelid
    WHERE i.inhparent = 'email.ix_delivery_events_xact_id'::regclass
      AND x.indrelid = to_regclass('email.delivery_events_legacy');
    IF child IS NOT NULL THEN
        EXECUTE format('ALTER INDEX %s RENAME TO delivery_events_legacy_xact_id', child);
    END IF;
END
$$"""
"""The legacy partition's BRIN gets back the name revision 0006 gave it (its downgrade
drops it by that name)."""


def _feed_index() -> None:
    """The btree (xact_id, id) on every partition, built without blocking writers."""
    with op.get_context().autocommit_block():
        op.execute("SET lock_timeout = '5s'")
        op.execute("SET statement_timeout = '6h'")
        if context.is_offline_mode():
            op.execute(
                f"CREATE INDEX IF NOT EXISTS {FEED_INDEX} ON email.delivery_events (xact_id, id)"
            )
        else:
            op.execute(
                f"CREATE INDEX IF NOT EXISTS {FEED_INDEX} "
                "ON ONLY email.delivery_events (xact_id, id)"
            )
            for (partition,) in op.get_bind().execute(sa.text(PARTITIONS)).all():
                index = f"{partition}_xact_id_id_idx"  # the name PostgreSQL would give it
                op.execute(
                    f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {index} "
                    f"ON email.{partition} (xact_id, id)"
                )
                op.execute(f"ALTER INDEX email.{FEED_INDEX} ATTACH PARTITION email.{index}")
        op.execute("RESET statement_timeout")
        op.execute("RESET lock_timeout")


def _create_tables() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("workflows", postgresql.ARRAY(sa.Text()), nullable=True),
        sa.Column("statuses", postgresql.ARRAY(sa.Text()), nullable=True),
        sa.Column(
            "include_recipient", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
        sa.Column(
            "include_metadata", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
        sa.Column("first_failure_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column(
            "disabled_automatically",
            sa.Boolean(),
            server_default=sa.text("false"),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "url ~ '^https?://' AND char_length(url) <= 2000",
            name=op.f("ck_webhook_endpoints_url_http"),
        ),
        sa.CheckConstraint(
            "char_length(description) <= 500", name=op.f("ck_webhook_endpoints_description_length")
        ),
        sa.CheckConstraint(
            "enabled = (disabled_at IS NULL)",
            name=op.f("ck_webhook_endpoints_disabled_at_iff_disabled"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoints")),
        schema="email",
    )
    op.create_table(
        "webhook_secrets",
        sa.Column("endpoint_id", sa.BigInteger(), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("secret ~ '^whsec_'", name=op.f("ck_webhook_secrets_secret_format")),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["email.webhook_endpoints.id"],
            name=op.f("fk_webhook_secrets_endpoint_id_webhook_endpoints"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("endpoint_id", name=op.f("pk_webhook_secrets")),
        schema="email",
    )
    op.create_table(
        "webhook_messages",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("endpoint_id", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("delivery_id", sa.Text(), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), server_default=sa.text("'pending'"), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('pending', 'delivered', 'failed')",
            name=op.f("ck_webhook_messages_state_known"),
        ),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_webhook_messages_attempts_non_negative")),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["email.webhook_endpoints.id"],
            name=op.f("fk_webhook_messages_endpoint_id_webhook_endpoints"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_messages")),
        sa.UniqueConstraint(
            "endpoint_id", "event_id", name=op.f("uq_webhook_messages_endpoint_id_event_id")
        ),
        schema="email",
    )
    op.create_index(
        op.f("ix_webhook_messages_next_attempt_at_id"),
        "webhook_messages",
        ["next_attempt_at", "id"],
        unique=False,
        schema="email",
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.create_index(
        op.f("ix_webhook_messages_delivery_id"),
        "webhook_messages",
        ["delivery_id"],
        unique=False,
        schema="email",
    )
    op.create_table(
        "webhook_attempts",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column(
            "attempted_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Double(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("response_excerpt", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "char_length(error) <= 500", name=op.f("ck_webhook_attempts_error_length")
        ),
        sa.CheckConstraint(
            "char_length(response_excerpt) <= 1024",
            name=op.f("ck_webhook_attempts_excerpt_length"),
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["email.webhook_messages.id"],
            name=op.f("fk_webhook_attempts_message_id_webhook_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_attempts")),
        schema="email",
    )
    op.create_index(
        op.f("ix_webhook_attempts_message_id_attempt"),
        "webhook_attempts",
        ["message_id", "attempt"],
        unique=False,
        schema="email",
    )
    op.create_table(
        "webhook_feed_state",
        sa.Column("singleton", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column(
            "after_xact_id",
            sa.BigInteger(),
            server_default=sa.text("(pg_snapshot_xmin(pg_current_snapshot()))::text::bigint - 1"),
            nullable=False,
        ),
        sa.Column(
            "after_event_id",
            sa.BigInteger(),
            server_default=sa.text("'9223372036854775807'::bigint"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("singleton", name=op.f("ck_webhook_feed_state_one_row")),
        sa.PrimaryKeyConstraint("singleton", name=op.f("pk_webhook_feed_state")),
        schema="email",
    )
    op.execute("INSERT INTO email.webhook_feed_state DEFAULT VALUES")
    op.create_table(
        "feed_listeners",
        sa.Column("backend_pid", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("backend_pid", name=op.f("pk_feed_listeners")),
        schema="email",
    )
    for table in TABLES:
        op.revoke_privileges(
            privileges=["ALL"],
            target=f"TABLE email.{table}",
            roles=["PUBLIC", "anon", "authenticated"],
        )
        op.enable_row_level_security(table=f"email.{table}")


def upgrade() -> None:
    _feed_index()
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("SET LOCAL statement_timeout = '60s'")
    op.drop_index("ix_delivery_events_xact_id", table_name="delivery_events", schema="email")
    _create_tables()
    op.create_sql_object(HERE / "0009/functions/delivery_feed.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.delivery_feed(p_after_xact_id bigint, p_after_event_id bigint, p_limit integer)",
        roles=["PUBLIC"],
    )
    op.grant_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.delivery_feed(p_after_xact_id bigint, p_after_event_id bigint, p_limit integer)",
        roles=["email_writer", "email_reader"],
    )
    op.create_sql_object(HERE / "0009/functions/delivery_feed_head.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"], target="FUNCTION email.delivery_feed_head()", roles=["PUBLIC"]
    )
    op.grant_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.delivery_feed_head()",
        roles=["email_writer", "email_reader"],
    )
    op.replace_sql_object(
        HERE / "0009/functions/delivery_health.sql",
        previous=HERE / "0008/functions/delivery_health.sql",
    )
    op.create_sql_object(HERE / "0009/functions/feed_listener_heartbeat.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.feed_listener_heartbeat(p_ttl interval)",
        roles=["PUBLIC"],
    )
    op.grant_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.feed_listener_heartbeat(p_ttl interval)",
        roles=["email_writer", "email_reader"],
    )
    op.create_sql_object(HERE / "0009/functions/feed_listener_stop.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"], target="FUNCTION email.feed_listener_stop()", roles=["PUBLIC"]
    )
    op.grant_privileges(
        privileges=["EXECUTE"],
        target="FUNCTION email.feed_listener_stop()",
        roles=["email_writer", "email_reader"],
    )
    op.create_sql_object(HERE / "0009/functions/notify_delivery_feed.sql")
    op.revoke_privileges(
        privileges=["EXECUTE"], target="FUNCTION email.notify_delivery_feed()", roles=["PUBLIC"]
    )
    op.create_sql_object(HERE / "0009/triggers/delivery_events_notify.sql")


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("SET LOCAL statement_timeout = '6h'")
    op.drop_sql_object(HERE / "0009/triggers/delivery_events_notify.sql")
    op.drop_sql_object(HERE / "0009/functions/notify_delivery_feed.sql")
    op.drop_sql_object(HERE / "0009/functions/feed_listener_stop.sql")
    op.drop_sql_object(HERE / "0009/functions/feed_listener_heartbeat.sql")
    op.replace_sql_object(
        HERE / "0008/functions/delivery_health.sql",
        previous=HERE / "0009/functions/delivery_health.sql",
    )
    op.drop_sql_object(HERE / "0009/functions/delivery_feed_head.sql")
    op.drop_sql_object(HERE / "0009/functions/delivery_feed.sql")
    for table in reversed(TABLES):
        op.drop_table(table, schema="email")
    # The BRIN again, built on the parent in this transaction: a catalog change plus a
    # summary of each partition's block ranges (blocks writes for the time it reads them).
    op.create_index(
        "ix_delivery_events_xact_id",
        "delivery_events",
        ["xact_id"],
        unique=False,
        schema="email",
        postgresql_using="brin",
    )
    op.execute(LEGACY_BRIN_NAME)
    op.drop_index(FEED_INDEX, table_name="delivery_events", schema="email")
