"""Read-side statements for support tools, dashboards and analytics.

Every function returns a SQLAlchemy Core ``Select`` and does no I/O, so one statement runs
unchanged on an async engine (asyncpg), a sync engine (psycopg) and ``pandas.read_sql``::

    rows = (await conn.execute(queries.delivery(delivery_id="abc"))).all()   # asyncpg
    rows = conn.execute(queries.delivery(delivery_id="abc")).all()           # psycopg
    frame = pandas.read_sql(queries.workflow_stats(since=since), sync_engine)

Constants that the planner should see (bucket width, percentiles, status sets) are rendered
inline; values from callers are always bound parameters. Each statement has an index
(see ``models.Delivery.__table_args__``): by id the primary key, a recipient's history
``(recipient, queued_at, delivery_id)``, pending work ``(status, updated_at)``, statistics
``(queued_at)``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Double,
    Integer,
    Select,
    Text,
    bindparam,
    column,
    func,
    literal_column,
    select,
    tuple_,
)
from sqlalchemy.dialects.postgresql import JSONB, aggregate_order_by

from email_delivery import catalog, rules
from email_delivery.errors import InvalidInput
from email_delivery.models import (
    Delivery,
    DeliveryAttempt,
    DeliveryEvent,
    DeliveryOutcome,
    DeliveryStatus,
    OutcomeEvent,
)

__all__ = [
    "ACTIVE_STATUSES",
    "TERMINAL_STATUSES",
    "Bucket",
    "Cursor",
    "delivery",
    "delivery_events",
    "delivery_outcome",
    "delivery_with_events",
    "normalize_recipient",
    "outcome_events",
    "pending_deliveries",
    "recipient_deliveries",
    "workflow_stats",
]

ACTIVE_STATUSES = rules.ACTIVE_STATUSES
TERMINAL_STATUSES = rules.TERMINAL_STATUSES

Bucket = Literal["hour", "day"]

_D = Delivery.__table__.c
_E = DeliveryEvent.__table__.c
_O = DeliveryOutcome.__table__.c
_A = DeliveryAttempt.__table__.c
_OE = OutcomeEvent.__table__.c
_MAX_PAGE = 1000


# Status constants are inlined, so the planner sees the exact set (as in the views).
def _status_in(
    column: ColumnElement[Any], statuses: Sequence[DeliveryStatus]
) -> ColumnElement[bool]:
    return column.in_([literal_column(f"'{DeliveryStatus(s).value}'") for s in statuses])


def _status_is(column: ColumnElement[Any], status: DeliveryStatus) -> ColumnElement[bool]:
    return column == literal_column(f"'{status.value}'")


# ---------------------------------------------------------------------------------------------
# One delivery
# ---------------------------------------------------------------------------------------------


def delivery(*, delivery_id: str) -> Select[Any]:
    """The delivery's row (no row: unknown id). Uses the primary key."""
    return select(Delivery.__table__).where(_D.delivery_id == delivery_id)


def _since_the_delivery(delivery_id: ColumnElement[Any] | str) -> ColumnElement[bool]:
    # A delivery's events are never older than the delivery: only the log's partitions from
    # its created_at on are searched (pruned at run time).
    created = select(_D.created_at).where(_D.delivery_id == delivery_id).scalar_subquery()
    return _E.created_at >= created


def delivery_events(*, delivery_id: str) -> Select[Any]:
    """The delivery's audit trail, oldest first. Uses ``(delivery_id, id)`` in the
    partitions from the delivery's ``created_at`` on."""
    return (
        select(DeliveryEvent.__table__)
        .where(_E.delivery_id == delivery_id, _since_the_delivery(delivery_id))
        .order_by(_E.id)
    )


def delivery_outcome(*, delivery_id: str) -> Select[Any]:
    """What the provider says became of the delivery (revision 0010) and which provider
    took its latest reported attempt: one row (``outcome`` … NULL before any provider event
    matched it, ``provider`` NULL when no attempt named one), none when neither exists."""
    outcome = (
        select(
            _O.outcome,
            _O.permanent.label("outcome_permanent"),
            _O.reason.label("outcome_reason"),
            _O.outcome_at,
            _O.delivered_at,
        )
        .where(_O.delivery_id == delivery_id)
        .subquery()
    )
    attempt = (
        select(_A.provider, _A.provider_message_id)
        .where(_A.delivery_id == delivery_id, _A.provider.is_not(None))
        .order_by(_A.attempt.desc(), (_A.result == "sent").desc())
        .limit(1)
        .subquery()
    )
    return select(*outcome.c, *attempt.c).select_from(
        outcome.join(attempt, literal_column("true"), full=True)
    )


def outcome_events(*, delivery_id: str) -> Select[Any]:
    """The delivery's provider events (its outcome's audit trail), in the order they
    happened. Uses ``(delivery_id, occurred_at)``."""
    return (
        select(
            _OE.occurred_at,
            _OE.provider,
            _OE.kind,
            _OE.permanent,
            _OE.reason,
            _OE.smtp_code,
            _OE.provider_event_type,
            _OE.event_id,
            _OE.received_at,
        )
        .where(_OE.delivery_id == delivery_id)
        .order_by(_OE.occurred_at, _OE.id)
    )


def delivery_with_events(*, delivery_id: str) -> Select[Any]:
    """The delivery's row plus ``events``: a JSON array of its events, oldest first.

    One round trip for a support tool; timestamps inside ``events`` are ISO 8601 strings.
    """
    event = func.jsonb_build_object(
        literal_column("'id'"),
        _E.id,
        literal_column("'status'"),
        _E.status,
        literal_column("'attempt'"),
        _E.attempt,
        literal_column("'error_code'"),
        _E.error_code,
        literal_column("'error_message'"),
        _E.error_message,
        literal_column("'payload'"),
        _E.payload,
        literal_column("'created_at'"),
        _E.created_at,
    )
    events = (
        select(
            func.coalesce(
                func.jsonb_agg(aggregate_order_by(event, _E.id)),
                literal_column("'[]'::jsonb"),
                type_=JSONB,
            )
        )
        .where(_E.delivery_id == _D.delivery_id, _E.created_at >= _D.created_at)
        .scalar_subquery()
    )
    return select(Delivery.__table__, events.label("events")).where(_D.delivery_id == delivery_id)


# ---------------------------------------------------------------------------------------------
# A recipient's deliveries, keyset-paginated
# ---------------------------------------------------------------------------------------------


def normalize_recipient(recipient: str) -> str:
    """The form the lifecycle API stores: surrounding whitespace trimmed, lower-cased."""
    return recipient.strip().lower()


@dataclass(frozen=True, kw_only=True)
class Cursor:
    """Where a page ended: the last row's ``(queued_at, delivery_id)``.

    ``queued_at`` never changes after enqueue, so pages neither repeat nor skip rows while
    deliveries progress. ``encode()`` gives an opaque token for a CLI or an HTTP API.
    """

    queued_at: datetime
    delivery_id: str

    @classmethod
    def after(cls, row: Any) -> Cursor:
        """The cursor after ``row`` (any row of ``recipient_deliveries``)."""
        return cls(queued_at=row.queued_at, delivery_id=row.delivery_id)

    def encode(self) -> str:
        raw = json.dumps([self.queued_at.isoformat(), self.delivery_id], separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        try:
            padded = token + "=" * (-len(token) % 4)
            queued_at, delivery_id = json.loads(base64.urlsafe_b64decode(padded))
            parsed = datetime.fromisoformat(queued_at)
        except (ValueError, TypeError, binascii.Error) as exc:
            raise InvalidInput("cursor", f"not a cursor token ({exc})") from None
        if parsed.tzinfo is None or not isinstance(delivery_id, str):
            raise InvalidInput("cursor", "not a cursor token")
        return cls(queued_at=parsed, delivery_id=delivery_id)


def recipient_deliveries(
    *, recipient: str, limit: int = 50, after: Cursor | None = None
) -> Select[Any]:
    """A recipient's deliveries, newest ``queued_at`` first; pass ``after`` for the next page.

    ``recipient`` is normalised as the lifecycle API stores it. Uses
    ``(recipient, queued_at, delivery_id)`` backwards, with no sort.
    """
    if not 1 <= limit <= _MAX_PAGE:
        raise InvalidInput("limit", f"must be between 1 and {_MAX_PAGE}")
    query = (
        select(Delivery.__table__, _O.outcome)
        .select_from(
            Delivery.__table__.outerjoin(
                DeliveryOutcome.__table__,
                Delivery.delivery_id == DeliveryOutcome.delivery_id,
            )
        )
        .where(_D.recipient == normalize_recipient(recipient))
    )
    if after is not None:
        query = query.where(
            tuple_(_D.queued_at, _D.delivery_id) < tuple_(after.queued_at, after.delivery_id)
        )
    return query.order_by(_D.queued_at.desc(), _D.delivery_id.desc()).limit(limit)


# ---------------------------------------------------------------------------------------------
# Pending and stuck work
# ---------------------------------------------------------------------------------------------


def pending_deliveries(
    *,
    older_than: timedelta = timedelta(0),
    workflow: str | None = None,
    statuses: Sequence[DeliveryStatus] = ACTIVE_STATUSES,
    limit: int = 100,
) -> Select[Any]:
    """Non-terminal deliveries untouched (``updated_at``) for longer than ``older_than``,
    but for what is still on time: an ``in_progress`` one whose claim (``lease_expires_at``)
    is live, a ``retrying`` one whose next attempt (``next_attempt_at``) has not come.

    Oldest first, with ``idle_for`` (an interval). With ``older_than`` of a few minutes these
    are the stuck ones: an ``in_progress`` row here outlived its claim, by the expiry the
    claim stored (the one the reaper and every worker go by). Uses ``(status, updated_at)``.
    """
    if older_than < timedelta(0):
        raise InvalidInput("older_than", "must not be negative")
    if not 1 <= limit <= 100_000:
        raise InvalidInput("limit", "must be between 1 and 100000")
    chosen = [DeliveryStatus(s) for s in statuses]
    if not chosen or any(s in TERMINAL_STATUSES for s in chosen):
        raise InvalidInput("statuses", "must be a non-empty set of non-terminal statuses")
    query = (
        select(Delivery.__table__, (func.now() - _D.updated_at).label("idle_for"))
        .where(_status_in(_D.status, chosen))
        .where(_D.updated_at < func.now() - older_than)
        .where(func.coalesce(_D.lease_expires_at, _D.next_attempt_at, _D.updated_at) <= func.now())
    )
    if workflow is not None:
        query = query.where(_D.workflow == workflow)
    return query.order_by(_D.updated_at, _D.delivery_id).limit(limit)


# ---------------------------------------------------------------------------------------------
# Per-workflow statistics
# ---------------------------------------------------------------------------------------------

STATS_COLUMNS = catalog.head().function("delivery_stats").result_columns
"""Columns of the ``email.delivery_stats_*`` views, in order: the result columns of
``email.delivery_stats`` (``sql/functions/delivery_stats.sql``)."""
OUTCOME_STATS_COLUMNS = (
    "delivered",
    "bounced",
    "complained",
    "delivery_rate",
    "bounce_rate",
    "complaint_rate",
)
"""What ``workflow_stats`` adds after ``STATS_COLUMNS`` (revision 0010): the sent
deliveries' provider outcomes, counts and shares of ``sent``."""
WORKFLOW_STATS_COLUMNS = (*STATS_COLUMNS, *OUTCOME_STATS_COLUMNS)


def workflow_stats(
    *,
    since: datetime,
    until: datetime | None = None,
    bucket: Bucket | None = None,
    workflow: str | None = None,
    top_errors: int = rules.TOP_ERROR_CODES,
) -> Select[Any]:
    """Statistics of the deliveries queued in ``[since, until)``, per workflow (and bucket).

    A call of ``email.delivery_stats``, the one definition the dashboard views read too, so
    the two never disagree. Columns (``STATS_COLUMNS``; ``bucket`` is NULL unless bucketed
    by UTC hour or day):

    - ``total``, ``sent``, ``failed``, ``dead_letter``, ``in_flight`` (queued, in_progress
      or retrying): counts by current status;
    - ``success_rate``: sent / (sent + failed + dead_letter), NULL while nothing finished;
    - ``retry_rate``: share of deliveries that needed more than one attempt;
    - ``mean_attempts``: average ``attempts``;
    - ``latency_p50_s``/``p95``/``p99``: seconds from ``queued_at`` to ``sent_at`` over sent
      deliveries (``percentile_cont``, interpolated), NULL without any;
    - ``top_error_codes``: ``[{"code": …, "count": …}]``, the ``top_errors`` most frequent
      ``last_error_code`` values (the error that ended or is holding up each delivery; errors
      that a retry overcame are in the audit trail and in ``retry_rate``).

    Then ``OUTCOME_STATS_COLUMNS`` (revision 0010): ``delivered``, ``bounced``,
    ``complained`` among the sent ones (their provider outcome), and each as a share of
    ``sent`` (NULL while none was sent). Columns in all: ``WORKFLOW_STATS_COLUMNS``.

    Uses ``(queued_at)``; a 24-hour window reads only that day's rows. The arguments are
    checked here first (``InvalidInput`` names the field) and again by the database.
    """
    if since.tzinfo is None:
        raise InvalidInput("since", "must be timezone-aware")
    if until is not None and until.tzinfo is None:
        raise InvalidInput("until", "must be timezone-aware")
    if until is not None and until <= since:
        raise InvalidInput("until", "must be later than since")
    if bucket not in (None, "hour", "day"):
        raise InvalidInput("bucket", "must be 'hour', 'day' or None")
    if not 0 <= top_errors <= 20:
        raise InvalidInput("top_errors", "must be between 0 and 20")
    stats = func.email.delivery_stats(
        bindparam("since", since, type_=DateTime(timezone=True)),
        bindparam("until", until, type_=DateTime(timezone=True)),
        bindparam("bucket", bucket, type_=Text()),
        bindparam("workflow", workflow, type_=Text()),
        bindparam("top_errors", top_errors, type_=Integer()),
    ).table_valued(*(column(name) for name in STATS_COLUMNS))
    outcomes = _outcome_counts(since, until, bucket, workflow)
    sent = func.nullif(stats.c.sent, 0)
    return (
        select(
            *stats.c,
            func.coalesce(outcomes.c.delivered, 0).label("delivered"),
            func.coalesce(outcomes.c.bounced, 0).label("bounced"),
            func.coalesce(outcomes.c.complained, 0).label("complained"),
            (func.coalesce(outcomes.c.delivered, 0) / func.cast(sent, Double)).label(
                "delivery_rate"
            ),
            (func.coalesce(outcomes.c.bounced, 0) / func.cast(sent, Double)).label("bounce_rate"),
            (func.coalesce(outcomes.c.complained, 0) / func.cast(sent, Double)).label(
                "complaint_rate"
            ),
        )
        .select_from(
            stats.outerjoin(
                outcomes,
                (outcomes.c.workflow == stats.c.workflow)
                & outcomes.c.bucket.is_not_distinct_from(stats.c.bucket),
            )
        )
        .order_by(stats.c.workflow, stats.c.bucket)
    )


def _outcome_counts(
    since: datetime, until: datetime | None, bucket: Bucket | None, workflow: str | None
) -> Any:
    """Per workflow (and bucket, as ``email.delivery_stats`` buckets), what became of the
    sent deliveries queued in the window (revision 0010): delivered, bounced, complained.
    Uses ``ix_deliveries_finished`` (status, queued_at) and the outcomes' primary key."""
    bucket_of = (
        literal_column("CAST(NULL AS timestamptz)")
        if bucket is None
        else func.date_bin(
            literal_column(f"interval '1 {bucket}'"),
            _D.queued_at,
            literal_column(rules.STATS_BUCKET_ORIGIN),
        )
    )
    query = (
        select(
            _D.workflow,
            bucket_of.label("bucket"),
            func.count().filter(_O.delivered_at.is_not(None)).label("delivered"),
            func.count().filter(_O.outcome == "bounced").label("bounced"),
            func.count().filter(_O.outcome == "complained").label("complained"),
        )
        .select_from(
            Delivery.__table__.join(
                DeliveryOutcome.__table__, Delivery.delivery_id == DeliveryOutcome.delivery_id
            )
        )
        .where(
            _status_is(_D.status, DeliveryStatus.SENT),
            _D.queued_at >= bindparam("outcome_since", since, type_=DateTime(timezone=True)),
        )
        .group_by(_D.workflow, literal_column("2"))
    )
    if until is not None:
        query = query.where(
            _D.queued_at < bindparam("outcome_until", until, type_=DateTime(timezone=True))
        )
    if workflow is not None:
        query = query.where(_D.workflow == bindparam("outcome_workflow", workflow))
    return query.subquery()
