"""The two tables of schema ``email`` and their status type; declarations only, no I/O."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Enum,
    Identity,
    Index,
    Integer,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from email_delivery.base import SCHEMA, Base

MAX_RECIPIENT_LENGTH = 320
MAX_ERROR_CODE_LENGTH = 64
MAX_ERROR_MESSAGE_LENGTH = 2000
MAX_JSON_BYTES = 16 * 1024
DELIVERY_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@+=-]{0,199}$"
WORKFLOW_PATTERN = r"^[a-z][a-z0-9-]{0,62}$"


class DeliveryStatus(enum.StrEnum):
    """Values of the Postgres ENUM ``email.delivery_status``, in their declared order."""

    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    SENT = "sent"
    RETRYING = "retrying"
    FAILED = "failed"
    DEAD_LETTER = "dead_letter"


delivery_status = Enum(
    DeliveryStatus,
    name="delivery_status",
    schema=SCHEMA,
    values_callable=lambda members: [m.value for m in members],
    validate_strings=True,
)


def _json_object_check(column: str, *, nullable: bool) -> str:
    rule = f"jsonb_typeof({column}) = 'object' AND octet_length({column}::text) <= {MAX_JSON_BYTES}"
    return f"{column} IS NULL OR ({rule})" if nullable else rule


class Delivery(Base):
    """Latest state of one email, keyed by the upstream ``delivery_id``."""

    __tablename__ = "deliveries"

    delivery_id: Mapped[str] = mapped_column(Text, primary_key=True)
    """Identifier carried by the Pub/Sub event; redeliveries share it."""
    workflow: Mapped[str] = mapped_column(Text)
    """Workflow key, e.g. ``verification-code``; new workflows need no migration."""
    recipient: Mapped[str] = mapped_column(Text)
    """Normalised address: trimmed and lower-cased."""
    status: Mapped[DeliveryStatus] = mapped_column(
        delivery_status, server_default=DeliveryStatus.QUEUED.value
    )
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    """Send attempts started (claims), never decreasing."""
    last_error_code: Mapped[str | None] = mapped_column(Text)
    last_error_message: Mapped[str | None] = mapped_column(Text)
    """Sanitised: no addresses, tokens or query strings."""
    last_attempted_at: Mapped[datetime | None]
    """When the latest attempt was claimed; with a lease, when a stuck claim expires."""
    queued_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
    sent_at: Mapped[datetime | None]
    """Set exactly when ``status`` is ``sent``."""
    metadata_: Mapped[dict[str, Any]] = mapped_column(
        "metadata", server_default=text("'{}'::jsonb")
    )
    """Workflow metadata (hashed tokens, link expiry); never a secret."""
    created_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
    updated_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
    """Kept current by trigger ``deliveries_touch_updated_at``."""

    __table_args__ = (
        CheckConstraint(f"delivery_id ~ '{DELIVERY_ID_PATTERN}'", name="delivery_id_format"),
        CheckConstraint(f"workflow ~ '{WORKFLOW_PATTERN}'", name="workflow_format"),
        CheckConstraint(
            f"char_length(recipient) <= {MAX_RECIPIENT_LENGTH} "
            "AND recipient ~ '^[^@[:space:]]+@[^@[:space:]]+$' "
            "AND recipient = lower(recipient)",
            name="recipient_format",
        ),
        CheckConstraint("attempts >= 0", name="attempts_non_negative"),
        CheckConstraint(
            f"char_length(last_error_code) <= {MAX_ERROR_CODE_LENGTH}",
            name="last_error_code_length",
        ),
        CheckConstraint(
            f"char_length(last_error_message) <= {MAX_ERROR_MESSAGE_LENGTH}",
            name="last_error_message_length",
        ),
        CheckConstraint("(status = 'sent') = (sent_at IS NOT NULL)", name="sent_at_iff_sent"),
        CheckConstraint(_json_object_check("metadata", nullable=False), name="metadata_object"),
        Index(None, "status", "updated_at"),
        Index(None, "recipient", "updated_at"),
        # Read side (email_delivery.queries, email_delivery.retention): a recipient's history
        # newest first with a stable keyset cursor; statistics over a queued_at window; prune
        # and scrub walking one status at a time from the oldest row.
        Index(None, "recipient", "queued_at", "delivery_id"),
        Index(None, "queued_at"),
        Index(None, "status", "queued_at"),
    )


EVENT_PARTITION_PREFIX = "delivery_events_"
"""The partitions of ``delivery_events`` are named ``delivery_events_p<YYYYMMDD>`` (a range),
``delivery_events_default`` and ``delivery_events_legacy`` (the table as it was before
revision 0006). They are data management, not schema: autogenerate and the head-vs-history
comparison leave them out."""


class DeliveryEvent(Base):
    """One audited change of a delivery; written by trigger, never updated.

    Range-partitioned by ``created_at`` (monthly by default, see ``retention.maintain``): the
    audit log grows fastest, and retention drops whole partitions instead of deleting rows.
    There is no foreign key to ``deliveries`` (a cascade would search every partition per
    deleted delivery); the trigger ``deliveries_purge_events`` deletes a purged delivery's
    events, set-based, in the partitions of its span, and the audit trigger is the only
    writer, so no event names a delivery that does not exist.
    """

    __tablename__ = "delivery_events"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    delivery_id: Mapped[str] = mapped_column(Text)
    status: Mapped[DeliveryStatus] = mapped_column(delivery_status)
    """Status after this event."""
    attempt: Mapped[int] = mapped_column(Integer)
    """The delivery's ``attempts`` after this event."""
    error_code: Mapped[str | None] = mapped_column(Text)
    error_message: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict[str, Any] | None]
    """Whatever the writer attached to this transition, e.g. the SMTP reply."""
    created_at: Mapped[datetime] = mapped_column(server_default=text("now()"), primary_key=True)
    """When the change was made: the delivery's ``created_at`` for its insert, its
    ``updated_at`` for a change, so a delivery's events lie within its own time span."""
    changed_columns: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    """The delivery's columns this update changed (NULL for the insert's event)."""
    xact_id: Mapped[int | None] = mapped_column(
        BigInteger, server_default=text("(pg_current_xact_id())::text::bigint")
    )
    """The writing transaction (``pg_current_xact_id()``): readers order by (xact_id, id) and
    take only transactions below their snapshot's xmin, so a late commit is never skipped.
    NULL for events written before revision 0006."""

    __table_args__ = (
        CheckConstraint("attempt >= 0", name="attempt_non_negative"),
        CheckConstraint(
            f"char_length(error_code) <= {MAX_ERROR_CODE_LENGTH}", name="error_code_length"
        ),
        CheckConstraint(
            f"char_length(error_message) <= {MAX_ERROR_MESSAGE_LENGTH}",
            name="error_message_length",
        ),
        CheckConstraint(_json_object_check("payload", nullable=True), name="payload_object"),
        Index(None, "delivery_id", "id"),
        # BRIN: events are appended in transaction order, so block ranges summarise xact_id
        # well; it costs next to nothing per insert.
        Index(None, "xact_id", postgresql_using="brin"),
        {"postgresql_partition_by": "RANGE (created_at)"},
    )
