"""Retention: delete finished deliveries (with their events) and scrub old details, in batches.

Who runs it: the table owner (Supabase's ``postgres``), the only role that may DELETE from
``email`` (revision 0001 grants DELETE to nobody, and RLS has no DELETE policy), so no new
role or grant exists for retention. Schedule it daily, e.g. ``email-delivery prune`` from
Cloud Scheduler + Cloud Run jobs, or cron (see README).

How it stays harmless beside a running worker:

- Each batch is one statement in its own short transaction: it locks at most ``batch_size``
  rows ``FOR UPDATE SKIP LOCKED`` (a row the worker holds is skipped, never waited for),
  re-checks status and age inside the DELETE itself, and deletes the rows' events first, in
  the same statement. A row requeued or reported concurrently is either locked (skipped) or
  fails the re-check, so a non-terminal row is never deleted.
- Rows are walked one status at a time in ``(queued_at, delivery_id)`` order on the index
  ``(status, queued_at)``, with a cursor, so no batch rescans what an earlier one skipped.

The age of a finished delivery is when it finished: ``sent_at`` for sent ones, else the
last attempt (``last_attempted_at``), else ``queued_at``. ``updated_at`` is not used because
scrubbing itself updates the row (the trigger keeps ``updated_at`` current).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from email_delivery import ddl
from email_delivery.errors import InvalidInput, PermissionDenied, translate_errors
from email_delivery.models import DeliveryStatus
from email_delivery.urls import location

__all__ = ["PruneReport", "prune"]

_FINISHED_AT = "coalesce(d.sent_at, d.last_attempted_at, d.queued_at)"

SCRUB_KEEPS_METADATA_KEYS = (ddl.DEAD_LETTER_REFERENCE_KEY, ddl.REQUEUED_AT_ATTEMPT_KEY)
"""Operational references, not personal data: a scrub keeps them (see ``prune``)."""
_KEPT_KEYS = ", ".join(f"'{key}'" for key in SCRUB_KEEPS_METADATA_KEYS)


def _batch_statement(action: str, *, rows: str, events: str) -> TextClause:
    """One batch of a walk in ``(queued_at, delivery_id)`` order from a cursor: lock up to
    ``:batch_size`` finished rows (skipping any a worker holds), apply ``action`` (CTEs that
    re-check status and age themselves), and return the counts and the next cursor."""
    return text(
        f"""
WITH batch AS (
    SELECT d.delivery_id, d.queued_at
    FROM email.deliveries d
    WHERE d.status = CAST(:status AS email.delivery_status) AND d.queued_at < :cutoff
      AND (d.queued_at, d.delivery_id) > (:after_queued_at, :after_id)
    ORDER BY d.queued_at, d.delivery_id
    LIMIT :batch_size
    FOR UPDATE SKIP LOCKED
), {action.strip()}, last AS (
    SELECT queued_at, delivery_id FROM batch ORDER BY queued_at DESC, delivery_id DESC LIMIT 1
)
SELECT (SELECT count(*) FROM batch) AS scanned,
       (SELECT count(*) FROM {rows}) AS deliveries,
       (SELECT count(*) FROM {events}) AS events,
       (SELECT queued_at FROM last) AS last_queued_at,
       (SELECT delivery_id FROM last) AS last_id
"""
    )


_PRUNE_BATCH = _batch_statement(
    f"""
gone AS (
    DELETE FROM email.deliveries d
    USING batch
    WHERE d.delivery_id = batch.delivery_id
      AND d.status = CAST(:status AS email.delivery_status)
      AND {_FINISHED_AT} < :cutoff
    RETURNING d.delivery_id
), gone_events AS (
    DELETE FROM email.delivery_events e
    USING gone
    WHERE e.delivery_id = gone.delivery_id
    RETURNING 1
)""",
    rows="gone",
    events="gone_events",
)

_SCRUB_BATCH = _batch_statement(
    f"""
scrubbed AS (
    UPDATE email.deliveries d
    SET metadata = (SELECT coalesce(jsonb_object_agg(m.key, m.value), '{{}}'::jsonb)
                    FROM jsonb_each(d.metadata) AS m
                    WHERE m.key IN ({_KEPT_KEYS})),
        last_error_message = NULL
    FROM batch
    WHERE d.delivery_id = batch.delivery_id
      AND d.status = CAST(:status AS email.delivery_status)
      AND {_FINISHED_AT} < :cutoff
      AND (d.metadata - ARRAY[{_KEPT_KEYS}] <> '{{}}'::jsonb
           OR d.last_error_message IS NOT NULL)
    RETURNING d.delivery_id
), scrubbed_events AS (
    UPDATE email.delivery_events e
    SET error_message = NULL, payload = NULL
    FROM batch
    WHERE e.delivery_id = batch.delivery_id
      AND (e.error_message IS NOT NULL OR e.payload IS NOT NULL)
      AND EXISTS (SELECT FROM email.deliveries d
                  WHERE d.delivery_id = batch.delivery_id
                    AND d.status = CAST(:status AS email.delivery_status)
                    AND {_FINISHED_AT} < :cutoff)
    RETURNING 1
)""",
    rows="scrubbed",
    events="scrubbed_events",
)

_COUNT = text(
    f"""
SELECT count(*) FROM email.deliveries d
WHERE d.status = CAST(:status AS email.delivery_status) AND d.queued_at < :cutoff
  AND {_FINISHED_AT} < :cutoff
"""
)

_COUNT_EVENTS = text(
    f"""
SELECT count(*) FROM email.deliveries d JOIN email.delivery_events e USING (delivery_id)
WHERE d.status = CAST(:status AS email.delivery_status) AND d.queued_at < :cutoff
  AND {_FINISHED_AT} < :cutoff
"""
)

_EPOCH = datetime.fromisoformat("0001-01-01T00:00:00+00:00")


_CAN_DELETE = text(
    "SELECT has_table_privilege('email.deliveries', 'DELETE') "
    "AND has_table_privilege('email.delivery_events', 'DELETE') "
    "AND has_table_privilege('email.delivery_events', 'UPDATE')"
)


@dataclass(kw_only=True)
class PruneReport:
    """What a ``prune`` run did (or, with ``dry_run``, would do)."""

    dry_run: bool
    deleted_deliveries: int = 0
    deleted_events: int = 0
    scrubbed_deliveries: int = 0
    scrubbed_events: int = 0
    batches: int = 0
    longest_statement_s: float = 0.0
    elapsed_s: float = 0.0
    expected_deliveries: int | None = None
    """Candidates counted before the run (the progress bar's total); None if not counted."""
    by_status: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "deleted_deliveries": self.deleted_deliveries,
            "deleted_events": self.deleted_events,
            "scrubbed_deliveries": self.scrubbed_deliveries,
            "scrubbed_events": self.scrubbed_events,
            "batches": self.batches,
            "longest_statement_s": round(self.longest_statement_s, 6),
            "elapsed_s": round(self.elapsed_s, 6),
            "by_status": dict(self.by_status),
        }


Progress = Callable[[PruneReport], None]


def _check(
    older_than: timedelta,
    keep_failed_for: timedelta,
    batch_size: int,
    scrub_after: timedelta | None,
) -> None:
    if older_than <= timedelta(0):
        raise InvalidInput("older_than", "must be positive")
    if keep_failed_for < older_than:
        raise InvalidInput(
            "keep_failed_for", "must be at least older_than: failed deliveries are kept longer"
        )
    if not 1 <= batch_size <= 100_000:
        raise InvalidInput("batch_size", "must be between 1 and 100000")
    if scrub_after is not None and scrub_after <= timedelta(0):
        raise InvalidInput("scrub_after", "must be positive")


async def prune(
    engine: AsyncEngine,
    *,
    older_than: timedelta,
    keep_failed_for: timedelta,
    batch_size: int = 5000,
    scrub_after: timedelta | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
    progress: Progress | None = None,
) -> PruneReport:
    """Delete ``sent`` deliveries finished more than ``older_than`` ago, ``failed`` and
    ``dead_letter`` ones after ``keep_failed_for``; their events go with them.

    With ``scrub_after``, finished deliveries older than that (and not yet deleted) keep
    status, attempts, error code and timestamps but lose ``metadata`` and
    ``last_error_message`` (metadata keeps only ``SCRUB_KEEPS_METADATA_KEYS``), and their
    events lose ``error_message`` and ``payload``. Events are otherwise never updated; the
    owner doing it here is the one exception, because payloads may hold SMTP replies.
    ``dry_run`` counts what would go and changes nothing. ``progress`` is called after each
    batch with the report so far. Must run as the table owner (else ``PermissionDenied``);
    bad arguments raise ``InvalidInput``, database failures the ``email_delivery.errors``
    exception that names them (``DatabaseUnavailable``, ``NotMigrated`` …).
    """
    _check(older_than, keep_failed_for, batch_size, scrub_after)
    if now is not None and now.tzinfo is None:
        raise InvalidInput("now", "must be timezone-aware")
    report = PruneReport(dry_run=dry_run)
    started = time.perf_counter()
    async with translate_errors(database=location(engine.url)), engine.connect() as conn:
        if not (await conn.execute(_CAN_DELETE)).scalar():
            raise PermissionDenied(
                f"permission denied: {(await conn.execute(text('SELECT current_user'))).scalar()}"
                " may not delete from email.deliveries; retention runs as the table owner",
                hint="run prune with the DATABASE_URL of the table owner, postgres on Supabase",
            )
        # The windows are measured by the database's clock, as the timestamps were written.
        moment: datetime = now or (await conn.execute(text("SELECT now()"))).scalar_one()
        deletions = [
            (DeliveryStatus.SENT, moment - older_than),
            (DeliveryStatus.FAILED, moment - keep_failed_for),
            (DeliveryStatus.DEAD_LETTER, moment - keep_failed_for),
        ]
        report.expected_deliveries = 0
        for status, cutoff in deletions:
            params = {"status": status.value, "cutoff": cutoff}
            count = int((await conn.execute(_COUNT, params)).scalar_one())
            report.expected_deliveries += count
            if dry_run:
                report.deleted_deliveries += count
                report.deleted_events += int(
                    (await conn.execute(_COUNT_EVENTS, params)).scalar_one()
                )
                report.by_status[status.value] = count
        await conn.rollback()
        if dry_run:
            report.elapsed_s = time.perf_counter() - started
            return report
        if progress:
            progress(report)
        for status, cutoff in deletions:
            deleted = await _walk(conn, _PRUNE_BATCH, status, cutoff, batch_size, report, progress)
            report.deleted_deliveries += deleted[0]
            report.deleted_events += deleted[1]
            report.by_status[status.value] = deleted[0]
        if scrub_after is not None:
            for status in (DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.DEAD_LETTER):
                scrubbed = await _walk(
                    conn, _SCRUB_BATCH, status, moment - scrub_after, batch_size, report, None
                )
                report.scrubbed_deliveries += scrubbed[0]
                report.scrubbed_events += scrubbed[1]
    report.elapsed_s = time.perf_counter() - started
    return report


async def _walk(
    conn: AsyncConnection,
    statement: Any,
    status: DeliveryStatus,
    cutoff: datetime,
    batch_size: int,
    report: PruneReport,
    progress: Progress | None,
) -> tuple[int, int]:
    after_queued_at, after_id = _EPOCH, ""
    rows = events = 0
    while True:
        began = time.perf_counter()
        result = (
            await conn.execute(
                statement,
                {
                    "status": status.value,
                    "cutoff": cutoff,
                    "after_queued_at": after_queued_at,
                    "after_id": after_id,
                    "batch_size": batch_size,
                },
            )
        ).one()
        await conn.commit()
        report.longest_statement_s = max(report.longest_statement_s, time.perf_counter() - began)
        report.batches += 1
        rows += result.deliveries
        events += result.events
        if progress:
            snapshot = PruneReport(**{**report.__dict__})
            snapshot.deleted_deliveries += rows if statement is _PRUNE_BATCH else 0
            progress(snapshot)
        if result.scanned < batch_size:
            return rows, events
        after_queued_at, after_id = result.last_queued_at, result.last_id
