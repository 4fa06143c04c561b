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
    Float,
    Select,
    and_,
    func,
    literal_column,
    null,
    select,
    tuple_,
)
from sqlalchemy.dialects.postgresql import JSONB, aggregate_order_by

from email_delivery import ddl
from email_delivery.errors import InvalidInput
from email_delivery.models import Delivery, DeliveryEvent, DeliveryStatus

__all__ = [
    "ACTIVE_STATUSES",
    "TERMINAL_STATUSES",
    "Bucket",
    "Cursor",
    "delivery",
    "delivery_events",
    "delivery_with_events",
    "normalize_recipient",
    "pending_deliveries",
    "recipient_deliveries",
    "workflow_stats",
]

ACTIVE_STATUSES = (DeliveryStatus.QUEUED, DeliveryStatus.IN_PROGRESS, DeliveryStatus.RETRYING)
"""Not finished: the worker still owes these an attempt or a report."""
TERMINAL_STATUSES = (DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.DEAD_LETTER)

Bucket = Literal["hour", "day"]

_D = Delivery.__table__.c
_E = DeliveryEvent.__table__.c
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


def delivery_events(*, delivery_id: str) -> Select[Any]:
    """The delivery's audit trail, oldest first. Uses ``(delivery_id, id)``."""
    return select(DeliveryEvent.__table__).where(_E.delivery_id == delivery_id).order_by(_E.id)


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
        .where(_E.delivery_id == _D.delivery_id)
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
    query = select(Delivery.__table__).where(_D.recipient == normalize_recipient(recipient))
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
    """Non-terminal deliveries untouched (``updated_at``) for longer than ``older_than``.

    Oldest first, with ``idle_for`` (an interval). With ``older_than`` of a few minutes these
    are the stuck ones: an ``in_progress`` row here outlived its worker's lease. Uses
    ``(status, updated_at)``.
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
    )
    if workflow is not None:
        query = query.where(_D.workflow == workflow)
    return query.order_by(_D.updated_at, _D.delivery_id).limit(limit)


# ---------------------------------------------------------------------------------------------
# Per-workflow statistics
# ---------------------------------------------------------------------------------------------

STATS_COLUMNS = (
    "workflow",
    "bucket",
    "total",
    "sent",
    "failed",
    "dead_letter",
    "in_flight",
    "success_rate",
    "retry_rate",
    "mean_attempts",
    "latency_p50_s",
    "latency_p95_s",
    "latency_p99_s",
    "top_error_codes",
)
"""Columns of ``workflow_stats`` and of the ``email.delivery_stats_*`` views, in order."""


def workflow_stats(
    *,
    since: datetime,
    until: datetime | None = None,
    bucket: Bucket | None = None,
    workflow: str | None = None,
    top_errors: int = ddl.TOP_ERROR_CODES,
) -> Select[Any]:
    """Statistics of the deliveries queued in ``[since, until)``, per workflow (and bucket).

    Columns (``STATS_COLUMNS``; ``bucket`` is NULL unless bucketed by UTC hour or day):

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

    Uses ``(queued_at)``; a 24-hour window reads only that day's rows.
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

    bucket_expr: ColumnElement[Any] = (
        func.date_bin(
            literal_column(f"interval '1 {bucket}'"),
            _D.queued_at,
            literal_column(ddl.STATS_BUCKET_ORIGIN),
        )
        if bucket
        else null()
    )
    window = [_D.queued_at >= since]
    if until is not None:
        window.append(_D.queued_at < until)
    if workflow is not None:
        window.append(_D.workflow == workflow)
    base = (
        select(
            _D.workflow,
            bucket_expr.label("bucket"),
            _D.status,
            _D.attempts,
            _D.last_error_code,
            func.extract("epoch", _D.sent_at - _D.queued_at).cast(Float).label("latency_s"),
        )
        .where(and_(*window))
        .cte("base")
    )
    b = base.c
    keys = [b.workflow, b.bucket] if bucket else [b.workflow]

    counted = func.count()
    ranked = (
        select(
            *keys,
            b.last_error_code.label("code"),
            counted.label("n"),
            func.row_number()
            .over(partition_by=keys, order_by=(func.count().desc(), b.last_error_code))
            .label("rank"),
        )
        .where(b.last_error_code.is_not(None))
        .group_by(*keys, b.last_error_code)
        .subquery("ranked")
    )
    r_keys = [ranked.c.workflow, ranked.c.bucket] if bucket else [ranked.c.workflow]
    errors = (
        select(
            *r_keys,
            func.jsonb_agg(
                aggregate_order_by(
                    func.jsonb_build_object(
                        literal_column("'code'"),
                        ranked.c.code,
                        literal_column("'count'"),
                        ranked.c.n,
                    ),
                    ranked.c.n.desc(),
                    ranked.c.code,
                )
            ).label("top_error_codes"),
        )
        .where(ranked.c.rank <= top_errors)
        .group_by(*r_keys)
        .subquery("errors")
    )

    def share(part: ColumnElement[Any], whole: ColumnElement[Any]) -> ColumnElement[Any]:
        return part.cast(Float) / func.nullif(whole, 0)

    sent = func.count().filter(_status_is(b.status, DeliveryStatus.SENT))
    failed = func.count().filter(_status_is(b.status, DeliveryStatus.FAILED))
    dead = func.count().filter(_status_is(b.status, DeliveryStatus.DEAD_LETTER))
    stats = (
        select(
            *keys,
            func.count().label("total"),
            sent.label("sent"),
            failed.label("failed"),
            dead.label("dead_letter"),
            func.count().filter(_status_in(b.status, ACTIVE_STATUSES)).label("in_flight"),
            func.count().filter(b.attempts > 1).label("retried"),
            func.avg(b.attempts).cast(Float).label("mean_attempts"),
            *(
                func.percentile_cont(literal_column(q))
                .within_group(b.latency_s)
                .label(f"latency_{name}_s")
                for q, name in (("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99"))
            ),
        )
        .group_by(*keys)
        .subquery("s")
    )
    s = stats.c
    join_on = and_(
        errors.c.workflow == s.workflow,
        *([errors.c.bucket == s.bucket] if bucket else []),
    )
    order = [s.workflow, s.bucket] if bucket else [s.workflow]
    return (
        select(
            s.workflow,
            (s.bucket if bucket else null().cast(_D.queued_at.type)).label("bucket"),
            s.total,
            s.sent,
            s.failed,
            s.dead_letter,
            s.in_flight,
            share(s.sent, s.sent + s.failed + s.dead_letter).label("success_rate"),
            share(s.retried, s.total).label("retry_rate"),
            s.mean_attempts,
            s.latency_p50_s,
            s.latency_p95_s,
            s.latency_p99_s,
            func.coalesce(
                errors.c.top_error_codes, literal_column("'[]'::jsonb"), type_=JSONB
            ).label("top_error_codes"),
        )
        .select_from(stats.outerjoin(errors, join_on))
        .order_by(*order)
    )
