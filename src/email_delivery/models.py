"""The tables of schema ``email`` and their status type; declarations only, no I/O."""

from __future__ import annotations

import enum
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Double,
    Enum,
    ForeignKey,
    Identity,
    Index,
    Integer,
    SmallInteger,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, INTERVAL
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

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
    SUPPRESSED = "suppressed"
    """Never sent: the recipient is on the suppression list (revision 0011/0012); final."""


delivery_status = Enum(
    DeliveryStatus,
    name="delivery_status",
    schema=SCHEMA,
    values_callable=lambda members: [m.value for m in members],
    validate_strings=True,
)


_ACTIVE_STATUS_LIST = "'queued', 'in_progress', 'retrying'"
"""rules.ACTIVE_STATUSES as SQL, for an index predicate (rules imports this module; a test
keeps the two equal)."""


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
    """Kept current by the guard trigger ``deliveries_guard`` (``email.guard_delivery``)."""
    lease_expires_at: Mapped[datetime | None]
    """When the live claim ends unless its worker reports or heartbeats (revision 0008): set
    by a claim from the workflow's policy, extended by ``extend_claim``; set exactly while
    ``in_progress``. Every component judges a claim by it, so none can disagree."""
    next_attempt_at: Mapped[datetime | None]
    """The earliest next claim of a ``retrying`` delivery: its policy's backoff (revision
    0008); NULL in every other status."""

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
        CheckConstraint(
            "(status = 'in_progress') = (lease_expires_at IS NOT NULL)",
            name="lease_iff_in_progress",
        ),
        CheckConstraint(
            "next_attempt_at IS NULL OR status = 'retrying'", name="next_attempt_only_retrying"
        ),
        # Every status UPDATE writes a new row version into every btree here (updated_at
        # changes, so none is HOT): each index is paid three times per delivery. Each one
        # below serves a named query (docs/scaling.md, "The index diet").
        # The seed's two: pending/stuck work and the reaper; a recipient's latest mail.
        Index(None, "status", "updated_at"),
        Index(None, "recipient", "updated_at"),
        # A recipient's history newest first with a stable keyset cursor (queries.find).
        Index(None, "recipient", "queued_at", "delivery_id"),
        # Finished deliveries by status and age: retention's walk, and the statistics'
        # raw rows (rollups cover closed hours). Partial: a row enters it once, when it
        # finishes, instead of at each of its three writes. The predicate is
        # rules.ACTIVE_STATUSES (a test keeps them equal).
        Index(
            "ix_deliveries_finished",
            "status",
            "queued_at",
            "delivery_id",
            postgresql_where=text(f"status NOT IN ({_ACTIVE_STATUS_LIST})"),
        ),
    )


DELIVERY_REFERENCES = ("delivery_attempts", "delivery_outcomes", "outcome_events")
"""The tables whose ``delivery_id`` names a delivery. Until revision 0015 each had a foreign key
with ON DELETE CASCADE; a cascade fires one query per deleted delivery and table, the largest
part of retention's cost per delivery. Since then the triggers ``<table>_reference_insert`` /
``<table>_reference_update`` (``email.check_delivery_reference``, set-based, locking the
deliveries FOR KEY SHARE as the key's check did) keep every ``delivery_id`` pointing at a
delivery, and ``email.purge_delivery_events`` deletes these rows with their delivery, once per
statement."""


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
        # The change feed's order (revision 0009, replacing 0006's BRIN on xact_id): a page
        # is one index range scan from the cursor per partition, merged; the rollups' refresh
        # finds the transactions after its watermark through it too.
        Index(None, "xact_id", "id"),
        {"postgresql_partition_by": "RANGE (created_at)"},
    )


class DeliveryRollup(Base):
    """Deliveries queued in one UTC hour, per workflow, counted by current status.

    The dashboards' source for closed hours (``email.delivery_stats``): kept by
    ``email.refresh_delivery_rollups()`` (run by ``maintain``), which recomputes every hour a
    change touched since its last run, found from the audit log's ``xact_id``. One row per
    (hour, workflow, status, error code, latency bucket): sent deliveries by their
    queued-to-sent latency bucket (``rules.LATENCY_BUCKETS_PER_DECADE`` per decade), the
    others by ``last_error_code``.
    """

    __tablename__ = "delivery_rollups"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    hour: Mapped[datetime]
    workflow: Mapped[str] = mapped_column(Text)
    status: Mapped[DeliveryStatus] = mapped_column(delivery_status)
    error_code: Mapped[str | None] = mapped_column(Text)
    latency_bucket: Mapped[int | None] = mapped_column(SmallInteger)
    deliveries: Mapped[int] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(BigInteger)
    """The sum of their ``attempts``."""
    retried: Mapped[int] = mapped_column(BigInteger)
    """How many needed more than one attempt."""

    __table_args__ = (
        UniqueConstraint(
            "hour",
            "workflow",
            "status",
            "error_code",
            "latency_bucket",
            name="uq_delivery_rollups_key",
            postgresql_nulls_not_distinct=True,
        ),
        CheckConstraint("deliveries > 0 AND attempts >= 0 AND retried >= 0", name="counts"),
    )


class DeliveryRollupDaily(Base):
    """The same rows as ``delivery_rollups`` summed per UTC day (revision 0016): the
    dashboards' source for whole closed days, 24 times fewer rows to read over 30 or 90 days.

    Kept by the same refresh: a day enters once it is closed (every hour of it rolled), from
    the hourly rows, and a (day, workflow) is summed again whenever the refresh recomputes one
    of its hours. Same dimensions, so the statistics read from it are identical, percentiles
    included (the same latency buckets)."""

    __tablename__ = "delivery_rollups_daily"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    day: Mapped[datetime]
    workflow: Mapped[str] = mapped_column(Text)
    status: Mapped[DeliveryStatus] = mapped_column(delivery_status)
    error_code: Mapped[str | None] = mapped_column(Text)
    latency_bucket: Mapped[int | None] = mapped_column(SmallInteger)
    deliveries: Mapped[int] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(BigInteger)
    retried: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        UniqueConstraint(
            "day",
            "workflow",
            "status",
            "error_code",
            "latency_bucket",
            name="uq_delivery_rollups_daily_key",
            postgresql_nulls_not_distinct=True,
        ),
        CheckConstraint("deliveries > 0 AND attempts >= 0 AND retried >= 0", name="counts"),
    )


class DeliveryRollupState(Base):
    """How far the rollups reach (one row): every hour before ``rolled_until`` is in
    ``delivery_rollups`` (and every day before ``days_until`` in ``delivery_rollups_daily``)
    as of the transactions below ``xact_watermark``; a reader takes an hour touched by a
    later transaction from the deliveries themselves, and that hour's day from the hourly
    rows."""

    __tablename__ = "delivery_rollup_state"

    singleton: Mapped[bool] = mapped_column(Boolean, primary_key=True, server_default=text("true"))
    rolled_until: Mapped[datetime] = mapped_column(server_default=text("'-infinity'"))
    xact_watermark: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    refreshed_at: Mapped[datetime | None]
    days_until: Mapped[datetime] = mapped_column(server_default=text("'-infinity'"))
    """The daily tier's reach (revision 0016): a UTC midnight at or before ``rolled_until``;
    ``-infinity`` until the first refresh after the upgrade builds the tier."""

    __table_args__ = (CheckConstraint("singleton", name="one_row"),)


class DeliveryRollupDeletion(Base):
    """Hours that lost deliveries (retention), per workflow and deleting transaction:
    deletions write no audit event, so the purge trigger records them here for the next
    refresh."""

    __tablename__ = "delivery_rollup_deletions"

    xact_id: Mapped[int] = mapped_column(
        BigInteger,
        primary_key=True,
        server_default=text("(pg_current_xact_id())::text::bigint"),
    )
    hour: Mapped[datetime] = mapped_column(primary_key=True)
    workflow: Mapped[str] = mapped_column(Text, primary_key=True)


SUPPRESSION_REASONS = ("hard_bounce", "complaint", "manual")
"""Why an address is suppressed, weakest first (an entry keeps the strongest reason)."""
_SUPPRESSION_REASON_LIST = ", ".join(f"'{reason}'" for reason in SUPPRESSION_REASONS)

MAX_POLICY_ATTEMPTS = 100
MAX_LEASE = "1 day"
MAX_BACKOFF_CAP = "7 days"
DEFAULT_POLICY_WORKFLOW = "*"
"""The policy row of every workflow without its own row."""


class WorkflowPolicy(Base):
    """How deliveries of a workflow are worked (revision 0008): leases, retry budget and
    backoff, retention, alert thresholds. The row ``'*'`` is every other workflow's.

    The lifecycle functions read it whenever the caller leaves ``lease`` / ``max_attempts``
    out; only the owner changes it (``email-delivery policy``), and every change is kept in
    ``workflow_policy_changes``.
    """

    __tablename__ = "workflow_policies"

    workflow: Mapped[str] = mapped_column(Text, primary_key=True)
    max_attempts: Mapped[int] = mapped_column(Integer, server_default=text("5"))
    """Attempts of one retry budget; the failure that uses the last one dead-letters."""
    lease: Mapped[timedelta] = mapped_column(INTERVAL, server_default=text("'00:05:00'"))
    """How long a claim lives without a heartbeat: longer than a send (SMTP timeout)."""
    backoff_base: Mapped[timedelta] = mapped_column(INTERVAL, server_default=text("'00:00:30'"))
    backoff_cap: Mapped[timedelta] = mapped_column(INTERVAL, server_default=text("'01:00:00'"))
    backoff_jitter: Mapped[float] = mapped_column(Double, server_default=text("0.2"))
    """The retry after failure n waits base * 2^(n-1), scaled by a uniform factor in
    [1 - jitter, 1 + jitter], at most cap."""
    keep_sent_for: Mapped[timedelta | None] = mapped_column(INTERVAL)
    """Retention of this workflow's sent deliveries (NULL: prune's own ``older_than``)."""
    keep_failed_for: Mapped[timedelta | None] = mapped_column(INTERVAL)
    """Retention of its failed and dead-lettered ones (NULL: prune's ``keep_failed_for``)."""
    alert_queued_age: Mapped[timedelta | None] = mapped_column(
        INTERVAL, server_default=text("'00:15:00'")
    )
    """``health`` fails when the oldest queued delivery waited longer (NULL: never)."""
    alert_retrying_age: Mapped[timedelta | None] = mapped_column(
        INTERVAL, server_default=text("'02:00:00'")
    )
    alert_expired_claim_age: Mapped[timedelta | None] = mapped_column(
        INTERVAL, server_default=text("'00:10:00'")
    )
    """… when a claim expired this long ago and no reaper took it back."""
    alert_dead_letters_per_hour: Mapped[int | None] = mapped_column(
        Integer, server_default=text("5")
    )
    alert_failure_rate: Mapped[float | None] = mapped_column(Double, server_default=text("0.1"))
    """… when over the last 15 minutes more than this share of finished deliveries failed,
    and more than twice the share of the last 24 hours (at least 10 finished)."""
    updated_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
    updated_by: Mapped[str] = mapped_column(Text, server_default=text("SESSION_USER"))
    track_engagement: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    """Record ``opened`` / ``clicked`` provider events as outcomes (revision 0010); off by
    default: tracking pixels and rewritten links are the workflow owner's choice."""
    send_despite_suppression: Mapped[list[str]] = mapped_column(
        ARRAY(Text), server_default=text("'{}'::text[]")
    )
    """Suppression reasons this workflow sends through (revision 0012), e.g. a password
    reset: ``{hard_bounce}`` (a suppressed reset locks the user out)."""
    suppress_for: Mapped[timedelta | None] = mapped_column(INTERVAL)
    """How long a hard bounce or complaint of this workflow's mail suppresses the address
    (NULL: until removed)."""

    __table_args__ = (
        CheckConstraint(
            f"workflow = '{DEFAULT_POLICY_WORKFLOW}' OR workflow ~ '{WORKFLOW_PATTERN}'",
            name="workflow_format",
        ),
        CheckConstraint(
            f"max_attempts BETWEEN 1 AND {MAX_POLICY_ATTEMPTS}", name="max_attempts_range"
        ),
        CheckConstraint(
            f"lease >= interval '1 second' AND lease <= interval '{MAX_LEASE}'",
            name="lease_range",
        ),
        CheckConstraint(
            f"backoff_base >= interval '1 second' AND backoff_base <= interval '{MAX_LEASE}'",
            name="backoff_base_range",
        ),
        CheckConstraint(
            f"backoff_cap >= backoff_base AND backoff_cap <= interval '{MAX_BACKOFF_CAP}'",
            name="backoff_cap_range",
        ),
        CheckConstraint("backoff_jitter BETWEEN 0 AND 1", name="backoff_jitter_range"),
        CheckConstraint(
            "keep_sent_for IS NULL OR keep_sent_for >= interval '1 day'", name="keep_sent_for_range"
        ),
        CheckConstraint(
            "keep_failed_for IS NULL OR (keep_failed_for >= interval '1 day' "
            "AND keep_failed_for >= coalesce(keep_sent_for, keep_failed_for))",
            name="keep_failed_for_range",
        ),
        CheckConstraint(
            "coalesce(alert_queued_age, alert_retrying_age, alert_expired_claim_age) IS NULL "
            "OR least(alert_queued_age, alert_retrying_age, alert_expired_claim_age) "
            "> interval '0'",
            name="alert_ages_positive",
        ),
        CheckConstraint(
            "alert_dead_letters_per_hour IS NULL OR alert_dead_letters_per_hour >= 0",
            name="alert_dead_letters_range",
        ),
        CheckConstraint(
            "alert_failure_rate IS NULL OR alert_failure_rate BETWEEN 0 AND 1",
            name="alert_failure_rate_range",
        ),
        CheckConstraint(
            f"send_despite_suppression <@ ARRAY[{_SUPPRESSION_REASON_LIST}]::text[]",
            name="send_despite_suppression_known",
        ),
        CheckConstraint(
            "suppress_for IS NULL OR suppress_for >= interval '1 hour'", name="suppress_for_range"
        ),
    )


class WorkflowPolicyChange(Base):
    """One change of ``workflow_policies`` (written by its trigger): who, when, before and
    after."""

    __tablename__ = "workflow_policy_changes"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    workflow: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(Text)
    before: Mapped[dict[str, Any] | None]
    after: Mapped[dict[str, Any] | None]
    changed_by: Mapped[str] = mapped_column(Text, server_default=text("SESSION_USER"))
    changed_at: Mapped[datetime] = mapped_column(server_default=text("now()"))

    __table_args__ = (
        CheckConstraint("action IN ('insert', 'update', 'delete')", name="action_known"),
    )


# -----------------------------------------------------------------------------------------
# Webhooks (revision 0009): owner-only tables; nobody else has a grant or a policy.
# -----------------------------------------------------------------------------------------

WEBHOOK_MESSAGE_STATES = ("pending", "delivered", "failed")


class WebhookEndpoint(Base):
    """A downstream receiver of signed ``delivery.status_changed`` webhooks, and what it
    wants. Its signing secret is in ``webhook_secrets``; its messages in
    ``webhook_messages``."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    """As ``webhooks.urls.check_endpoint_url`` normalised it at registration."""
    description: Mapped[str | None] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    workflows: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    """Only these workflows (NULL: every workflow)."""
    statuses: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    """Only changes into these statuses (NULL: every status change)."""
    include_recipient: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    include_metadata: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    first_failure_at: Mapped[datetime | None]
    """Start of the current failure streak (NULL after any 2xx): the failure budget."""
    disabled_at: Mapped[datetime | None]
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    disabled_automatically: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    """Disabled by the sender (410 or the failure budget), not by an operator: ``health``
    reports it."""
    created_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
    updated_at: Mapped[datetime] = mapped_column(server_default=text("now()"))

    __table_args__ = (
        CheckConstraint("url ~ '^https?://' AND char_length(url) <= 2000", name="url_http"),
        CheckConstraint("char_length(description) <= 500", name="description_length"),
        CheckConstraint("enabled = (disabled_at IS NULL)", name="disabled_at_iff_disabled"),
    )


class WebhookSecret(Base):
    """An endpoint's signing secret (``whsec_…``): owner-only, in a table of its own so that
    no grant on endpoints (or a ``SELECT *`` in a support query) can ever show it."""

    __tablename__ = "webhook_secrets"

    endpoint_id: Mapped[int] = mapped_column(
        BigInteger,
        ForeignKey(f"{SCHEMA}.webhook_endpoints.id", ondelete="CASCADE"),
        primary_key=True,
    )
    secret: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=text("now()"))

    __table_args__ = (CheckConstraint("secret ~ '^whsec_'", name="secret_format"),)


class WebhookMessage(Base):
    """The outbox: one message per (endpoint, audit event), built from the change feed,
    rendered once (``body`` is the exact bytes every attempt sends)."""

    __tablename__ = "webhook_messages"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey(f"{SCHEMA}.webhook_endpoints.id", ondelete="CASCADE")
    )
    event_id: Mapped[int] = mapped_column(BigInteger)
    delivery_id: Mapped[str] = mapped_column(Text)
    message_id: Mapped[str] = mapped_column(Text)
    """The ``webhook-id`` of every attempt (``payloads.message_id``)."""
    body: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(Text, server_default=text("'pending'"))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    """Attempts since the message was (re)scheduled; a claim adds one."""
    next_attempt_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
    """When it is due; while a sender holds it, the end of that sender's lease."""
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("endpoint_id", "event_id"),
        CheckConstraint("state IN ('pending', 'delivered', 'failed')", name="state_known"),
        CheckConstraint("attempts >= 0", name="attempts_non_negative"),
        Index(
            None,
            "next_attempt_at",
            "id",
            postgresql_where=text("state = 'pending'"),
        ),
        Index(None, "delivery_id"),
    )


class WebhookAttempt(Base):
    """One HTTP attempt of a message: what the receiver answered, capped and sanitised."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    message_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey(f"{SCHEMA}.webhook_messages.id", ondelete="CASCADE")
    )
    attempt: Mapped[int] = mapped_column(Integer)
    attempted_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Double)
    error: Mapped[str | None] = mapped_column(Text)
    response_excerpt: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint("char_length(error) <= 500", name="error_length"),
        CheckConstraint("char_length(response_excerpt) <= 1024", name="excerpt_length"),
        Index(None, "message_id", "attempt"),
    )


class WebhookFeedState(Base):
    """How far the outbox has read the change feed (one row): every event at or before
    (``after_xact_id``, ``after_event_id``) has its messages. Starts at the feed's head when
    the table is created: history is not sent (``webhooks replay --since`` sends it)."""

    __tablename__ = "webhook_feed_state"

    singleton: Mapped[bool] = mapped_column(Boolean, primary_key=True, server_default=text("true"))
    after_xact_id: Mapped[int] = mapped_column(
        BigInteger,
        server_default=text("(pg_snapshot_xmin(pg_current_snapshot()))::text::bigint - 1"),
    )
    after_event_id: Mapped[int] = mapped_column(
        BigInteger, server_default=text("'9223372036854775807'::bigint")
    )
    updated_at: Mapped[datetime] = mapped_column(server_default=text("now()"))

    __table_args__ = (CheckConstraint("singleton", name="one_row"),)


class FeedListener(Base):
    """A session that LISTENs for the change feed (revision 0009), until ``expires_at``
    (refreshed by ``email.feed_listener_heartbeat``). Writers notify only while one is
    registered: a NOTIFY serialises commits cluster-wide. Owner-only; written through the
    SECURITY DEFINER heartbeat and stop functions."""

    __tablename__ = "feed_listeners"

    backend_pid: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    expires_at: Mapped[datetime]


PROVIDER_PATTERN = r"^[a-z][a-z0-9-]{0,31}$"
"""A provider slug: ``ses``, ``postmark``, ``smtp-primary`` …"""
MAX_PROVIDER_MESSAGE_ID_LENGTH = 150
PROVIDER_MESSAGE_ID_PATTERN = f"^[!-~]{{1,{MAX_PROVIDER_MESSAGE_ID_LENGTH}}}$"
"""Printable ASCII: every provider's message id is (UUIDs, ``<…@…>`` Message-IDs, SendGrid's
dotted ids), and 150 of them escaped as JSON fit the audit payload's 512-byte headroom."""
MAX_PROVIDER_EVENT_ID_LENGTH = 256
MAX_OUTCOME_REASON_LENGTH = 500
OUTCOME_KINDS = ("deferred", "delivered", "opened", "clicked", "bounced", "rejected", "complained")
"""``providers.events.OutcomeKind``, in precedence order (a test keeps them equal)."""
_OUTCOME_KIND_LIST = ", ".join(f"'{kind}'" for kind in OUTCOME_KINDS)
_XACT_ID = "(pg_current_xact_id())::text::bigint"
"""The writing transaction's id, as the audit log and the rollups' bookkeeping store it."""


class DeliveryAttempt(Base):
    """The provider facts of one reported attempt (revision 0011): which provider took it,
    the id its API returned, its reply code and how long the send took.

    Written by ``mark_deliveries_sent`` / ``mark_deliveries_failed`` when the caller passes
    any of them (a call without them writes nothing here). The same facts ride on the
    attempt's audit event payload; these typed columns are what support (a provider message
    id to a delivery) and the provider metrics query.
    """

    __tablename__ = "delivery_attempts"

    delivery_id: Mapped[str] = mapped_column(Text, primary_key=True)
    """The delivery. No foreign key since revision 0015: ``email.check_delivery_reference``
    checks it, the purge trigger deletes these rows with it (``DELIVERY_REFERENCES``)."""
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    result: Mapped[str] = mapped_column(Text, primary_key=True)
    """``sent`` or ``failed``: which report carried the facts."""
    workflow: Mapped[str] = mapped_column(Text)
    """The delivery's workflow, copied so provider metrics need no join."""
    provider: Mapped[str | None] = mapped_column(Text)
    provider_message_id: Mapped[str | None] = mapped_column(Text)
    reply_code: Mapped[int | None] = mapped_column(Integer)
    """The SMTP reply code (250, 421, 550) or the provider API's HTTP status (200, 429)."""
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    """How long the send took, as the worker measured it."""
    reported_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
    xact_id: Mapped[int | None] = mapped_column(BigInteger, server_default=text(_XACT_ID))
    """The writing transaction (revision 0014; NULL on older rows): the provider rollups'
    refresh finds the rows written since its last run through it."""

    __table_args__ = (
        CheckConstraint("result IN ('sent', 'failed')", name="result_known"),
        CheckConstraint("attempt >= 0", name="attempt_non_negative"),
        CheckConstraint(f"provider ~ '{PROVIDER_PATTERN}'", name="provider_format"),
        CheckConstraint(
            "provider_message_id IS NULL OR (provider IS NOT NULL AND "
            f"provider_message_id ~ '{PROVIDER_MESSAGE_ID_PATTERN}')",
            name="provider_message_id_format",
        ),
        CheckConstraint("reply_code BETWEEN 100 AND 599", name="reply_code_range"),
        CheckConstraint("duration_ms >= 0", name="duration_ms_non_negative"),
        # A provider's message id names one message: unique per provider, and the way an
        # outcome event (which carries only that id) finds its delivery.
        Index(
            "ix_delivery_attempts_provider_message_id",
            "provider",
            "provider_message_id",
            unique=True,
            postgresql_where=text("provider_message_id IS NOT NULL"),
        ),
        # Provider metrics read a time window.
        Index(None, "reported_at"),
        Index(None, "xact_id"),
    )


class OutcomeEvent(Base):
    """One provider event about a message (revision 0011), as
    ``email.record_delivery_outcome`` received it: append-only, one row per (provider,
    event_id), so a retried webhook is recorded once.

    ``delivery_id`` is NULL while the event matches no delivery (its provider message id is
    not stored yet): such an event is kept and matched when ``mark_sent`` stores the id (or
    the delivery id it echoed arrives), and listed by ``unmatched_outcome_events`` until
    then. It is the outcome's audit trail; ``delivery_events`` stays the pipeline's.
    """

    __tablename__ = "outcome_events"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    provider: Mapped[str] = mapped_column(Text)
    event_id: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    permanent: Mapped[bool | None] = mapped_column(Boolean)
    occurred_at: Mapped[datetime]
    provider_message_id: Mapped[str | None] = mapped_column(Text)
    echoed_delivery_id: Mapped[str | None] = mapped_column(Text)
    """The delivery id the provider echoed back (header or custom variable), if any."""
    delivery_id: Mapped[str | None] = mapped_column(Text)
    """The matched delivery; NULL until matched. No foreign key since revision 0015 (see
    ``DELIVERY_REFERENCES``)."""
    recipient: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    smtp_code: Mapped[int | None] = mapped_column(Integer)
    provider_event_type: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
    matched_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("provider", "event_id", name="uq_outcome_events_provider_event"),
        CheckConstraint(f"provider ~ '{PROVIDER_PATTERN}'", name="provider_format"),
        CheckConstraint(
            f"char_length(event_id) BETWEEN 1 AND {MAX_PROVIDER_EVENT_ID_LENGTH}",
            name="event_id_length",
        ),
        CheckConstraint(f"kind IN ({_OUTCOME_KIND_LIST})", name="kind_known"),
        CheckConstraint("permanent IS NULL OR kind = 'bounced'", name="permanent_only_bounced"),
        CheckConstraint(
            f"provider_message_id ~ '{PROVIDER_MESSAGE_ID_PATTERN}'",
            name="provider_message_id_format",
        ),
        CheckConstraint(
            "provider_message_id IS NOT NULL OR echoed_delivery_id IS NOT NULL",
            name="names_a_message",
        ),
        CheckConstraint(
            f"echoed_delivery_id ~ '{DELIVERY_ID_PATTERN}'", name="echoed_delivery_id_format"
        ),
        CheckConstraint(
            f"char_length(reason) BETWEEN 1 AND {MAX_OUTCOME_REASON_LENGTH}", name="reason_length"
        ),
        CheckConstraint("smtp_code BETWEEN 200 AND 599", name="smtp_code_range"),
        CheckConstraint(
            "char_length(provider_event_type) BETWEEN 1 AND 100", name="provider_event_type_length"
        ),
        CheckConstraint(
            f"char_length(recipient) <= {MAX_RECIPIENT_LENGTH} AND recipient = lower(recipient)",
            name="recipient_format",
        ),
        CheckConstraint(
            "(delivery_id IS NULL) = (matched_at IS NULL)", name="matched_iff_delivery"
        ),
        Index(None, "delivery_id", "occurred_at"),
        # The unmatched events, waiting for their message id or delivery id to arrive.
        Index(
            "ix_outcome_events_unmatched_message",
            "provider",
            "provider_message_id",
            postgresql_where=text("delivery_id IS NULL"),
        ),
        Index(
            "ix_outcome_events_unmatched_delivery",
            "echoed_delivery_id",
            postgresql_where=text("delivery_id IS NULL"),
        ),
    )


class DeliveryOutcome(Base):
    """What the provider says became of a delivery (revision 0011): the outcome of highest
    precedence among its events (``providers.events``: deferred < delivered < opened <
    clicked < bounced < rejected < complained; a permanent bounce outranks a transient one).
    It only ever rises: a late ``delivered`` never hides a bounce. The pipeline status is
    untouched (``sent`` stays final)."""

    __tablename__ = "delivery_outcomes"

    delivery_id: Mapped[str] = mapped_column(Text, primary_key=True)
    """The delivery. No foreign key since revision 0015: ``email.check_delivery_reference``
    checks it, the purge trigger deletes these rows with it (``DELIVERY_REFERENCES``)."""
    workflow: Mapped[str] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(Text)
    permanent: Mapped[bool | None] = mapped_column(Boolean)
    reason: Mapped[str | None] = mapped_column(Text)
    provider: Mapped[str] = mapped_column(Text)
    outcome_at: Mapped[datetime]
    """When the event of the current outcome happened (the provider's time)."""
    delivered_at: Mapped[datetime | None]
    """The first ``delivered`` (or opened/clicked) event's time: sent-to-delivered latency."""
    events: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    """How many of its provider events were recorded."""
    updated_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
    xact_id: Mapped[int | None] = mapped_column(BigInteger, server_default=text(_XACT_ID))
    """The transaction that last changed it (revision 0014; NULL on older rows): an outcome
    changes its attempt's hour in the provider rollups."""

    __table_args__ = (
        CheckConstraint(f"outcome IN ({_OUTCOME_KIND_LIST})", name="outcome_known"),
        CheckConstraint("permanent IS NULL OR outcome = 'bounced'", name="permanent_only_bounced"),
        CheckConstraint("events >= 1", name="events_positive"),
        Index(None, "outcome_at"),
        Index(None, "xact_id"),
    )


class ProviderCounts:
    """What a provider rollup row holds for its span, provider and workflow: the counts
    ``provider_metrics`` reports and two latency histograms, the send duration and the time
    from sent to delivered (buckets ascending, their counts beside them;
    ``rules.LATENCY_BUCKETS_PER_DECADE`` per decade, in seconds)."""

    provider: Mapped[str] = mapped_column(Text, primary_key=True)
    workflow: Mapped[str] = mapped_column(Text, primary_key=True)
    attempts: Mapped[int] = mapped_column(BigInteger)
    accepted: Mapped[int] = mapped_column(BigInteger)
    failed: Mapped[int] = mapped_column(BigInteger)
    delivered: Mapped[int] = mapped_column(BigInteger)
    deferred: Mapped[int] = mapped_column(BigInteger)
    bounced: Mapped[int] = mapped_column(BigInteger)
    hard_bounced: Mapped[int] = mapped_column(BigInteger)
    complained: Mapped[int] = mapped_column(BigInteger)
    rejected: Mapped[int] = mapped_column(BigInteger)
    send_buckets: Mapped[list[int]] = mapped_column(ARRAY(SmallInteger))
    send_counts: Mapped[list[int]] = mapped_column(ARRAY(BigInteger))
    delivered_buckets: Mapped[list[int]] = mapped_column(ARRAY(SmallInteger))
    delivered_counts: Mapped[list[int]] = mapped_column(ARRAY(BigInteger))

    @declared_attr.directive
    @classmethod
    def __table_args__(cls) -> tuple[CheckConstraint, ...]:
        # A function: each table needs constraints of its own (named after it).
        return (
            CheckConstraint("attempts > 0", name="attempts_positive"),
            CheckConstraint(
                "cardinality(send_buckets) = cardinality(send_counts) "
                "AND cardinality(delivered_buckets) = cardinality(delivered_counts)",
                name="histograms_aligned",
            ),
        )


class ProviderRollup(ProviderCounts, Base):
    """The attempts reported in one UTC hour by one provider for one workflow (revision
    0014): the provider metrics' source for closed hours (``email.provider_metrics``), kept
    by ``email.refresh_provider_rollups()`` (run by ``maintain``), which recomputes every
    hour whose attempts or their outcomes a transaction changed since its last run (found
    through the ``xact_id`` of ``delivery_attempts`` and ``delivery_outcomes``) or whose
    attempts retention removed."""

    __tablename__ = "provider_rollups"

    hour: Mapped[datetime] = mapped_column(primary_key=True, sort_order=-1)


class ProviderRollupDaily(ProviderCounts, Base):
    """The same per closed UTC day (revision 0014), summed from its hours by the same
    refresh whenever one of them is written: a 30-day window reads 30 rows per provider and
    workflow, not 720."""

    __tablename__ = "provider_rollups_daily"

    day: Mapped[datetime] = mapped_column(primary_key=True, sort_order=-1)


class ProviderRollupState(Base):
    """How far the provider rollups reach (one row), as ``DeliveryRollupState`` for the
    delivery rollups: every hour before ``rolled_until`` is in ``provider_rollups`` as of the
    transactions below ``xact_watermark``."""

    __tablename__ = "provider_rollup_state"

    singleton: Mapped[bool] = mapped_column(Boolean, primary_key=True, server_default=text("true"))
    rolled_until: Mapped[datetime] = mapped_column(server_default=text("'-infinity'"))
    xact_watermark: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    refreshed_at: Mapped[datetime | None]

    __table_args__ = (CheckConstraint("singleton", name="one_row"),)


class ProviderRollupDeletion(Base):
    """Provider hours that lost attempts (retention removing their deliveries), per
    deleting transaction: recorded by the statement trigger on ``delivery_attempts`` for
    the provider rollups' next refresh."""

    __tablename__ = "provider_rollup_deletions"

    xact_id: Mapped[int] = mapped_column(
        BigInteger, primary_key=True, server_default=text(_XACT_ID)
    )
    hour: Mapped[datetime] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(Text, primary_key=True)
    workflow: Mapped[str] = mapped_column(Text, primary_key=True)


class Suppression(Base):
    """An address no mail goes to (revision 0012): hard bounces and complaints add entries
    when their outcome is recorded, the owner adds and removes them by hand. ``enqueue``
    checks it; see ``email_delivery.suppressions``."""

    __tablename__ = "suppressions"

    address: Mapped[str] = mapped_column(Text, primary_key=True)
    """Normalised like a recipient: trimmed, lower-cased."""
    reason: Mapped[str] = mapped_column(Text)
    source_delivery_id: Mapped[str | None] = mapped_column(Text)
    """The delivery whose bounce or complaint added it (kept after retention removed it)."""
    provider: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[str | None] = mapped_column(Text)
    """The provider's reason, or the operator's note."""
    created_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
    expires_at: Mapped[datetime | None]
    """NULL: until removed."""
    created_by: Mapped[str] = mapped_column(Text, server_default=text("SESSION_USER"))

    __table_args__ = (
        CheckConstraint(
            f"char_length(address) <= {MAX_RECIPIENT_LENGTH} "
            "AND address ~ '^[^@[:space:]]+@[^@[:space:]]+$' AND address = lower(address)",
            name="address_format",
        ),
        CheckConstraint(f"reason IN ({_SUPPRESSION_REASON_LIST})", name="reason_known"),
        CheckConstraint(
            f"char_length(detail) BETWEEN 1 AND {MAX_OUTCOME_REASON_LENGTH}", name="detail_length"
        ),
        CheckConstraint("expires_at > created_at", name="expires_after_created"),
    )
