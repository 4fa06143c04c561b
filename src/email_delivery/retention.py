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
  ``ix_deliveries_finished`` (status, queued_at, delivery_id), with a cursor, so no batch
  rescans what an earlier one skipped.

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

from email_delivery import rules, sql
from email_delivery.errors import InvalidInput, PermissionDenied, translate_errors
from email_delivery.models import DEFAULT_POLICY_WORKFLOW, DeliveryStatus
from email_delivery.urls import location

_PRUNED_STATUSES = (
    DeliveryStatus.SENT,
    DeliveryStatus.FAILED,
    DeliveryStatus.DEAD_LETTER,
    DeliveryStatus.SUPPRESSED,
)
"""The finished statuses retention deletes: sent ones after ``older_than``, the others
(suppressed ones too, revision 0012) after ``keep_failed_for``."""

__all__ = ["PruneReport", "prune"]

SCRUB_KEEPS_METADATA_KEYS = rules.RESERVED_METADATA_KEYS
"""Operational references, not personal data: a scrub keeps them (see ``prune``)."""

_SQL = {name: text(statement) for name, statement in sql.blocks("retention.sql").items()}
"""The statements of ``email_delivery/sql/retention.sql``, by name."""
_PRUNE_BATCH = _SQL["prune_batch"]
_SCRUB_BATCH = _SQL["scrub_batch"]
_COUNT = _SQL["count_candidates"]
_COUNT_EVENTS = _SQL["count_candidate_events"]
_CAN_DELETE = _SQL["may_delete"]
_PURGED_EVENTS = _SQL["purged_events"]
_DROP_PARTITIONS = _SQL["drop_expired_event_partitions"]
_EXPIRED_PARTITIONS = _SQL["expired_event_partitions"]
_RETENTION_POLICIES = _SQL["retention_policies"]
_PRUNE_WEBHOOK_MESSAGES = _SQL["prune_webhook_messages"]
_COUNT_WEBHOOK_MESSAGES = _SQL["count_webhook_messages"]
_PRUNE_UNMATCHED_OUTCOMES = _SQL["prune_unmatched_outcome_events"]
_COUNT_UNMATCHED_OUTCOMES = _SQL["count_unmatched_outcome_events"]

_EPOCH = datetime.fromisoformat("0001-01-01T00:00:00+00:00")


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
    dropped_partitions: list[str] = field(default_factory=list)
    """Partitions of the audit log dropped whole (their events went with them)."""
    dropped_events_estimate: int = 0
    """The events those partitions held, as the statistics estimated them."""
    deleted_webhook_messages: int = 0
    """Finished webhook messages (with their attempts) of deliveries gone or finished before
    the sent window: a body may carry the recipient, so it goes with the audit trail."""
    deleted_unmatched_outcome_events: int = 0
    """Provider outcome events that never matched a delivery, received before the sent
    window (they hold the provider-reported recipient)."""
    expected_deliveries: int | None = None
    """Candidates counted before the run (the progress bar's total); None if not counted
    (a run without ``progress`` and not ``dry_run`` does not count them)."""
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
            "dropped_partitions": list(self.dropped_partitions),
            "dropped_events_estimate": self.dropped_events_estimate,
            "deleted_webhook_messages": self.deleted_webhook_messages,
            "deleted_unmatched_outcome_events": self.deleted_unmatched_outcome_events,
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

    A workflow whose policy sets ``keep_sent_for`` / ``keep_failed_for``
    (``email.workflow_policies``) keeps its own windows; the row ``'*'``'s, when set, replace
    these two arguments for every other workflow (the policy in the database wins over the
    scheduler's flags).

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
        scopes = _scopes(
            (await conn.execute(_RETENTION_POLICIES)).all(), older_than, keep_failed_for
        )
        deletions = [
            (
                status,
                moment - (scope.sent if status is DeliveryStatus.SENT else scope.failed),
                scope,
            )
            for scope in scopes
            for status in _PRUNED_STATUSES
        ]
        # The candidates are counted for a dry run and for a progress bar's total only: at
        # 10 M deliveries counting them reads the finished index up to the cutoff once more.
        counted = dry_run or progress is not None
        for status, cutoff, scope in deletions if counted else ():
            params = {"status": status.value, "cutoff": cutoff, **scope.params}
            count = int((await conn.execute(_COUNT, params)).scalar_one())
            report.expected_deliveries = (report.expected_deliveries or 0) + count
            if dry_run:
                report.deleted_deliveries += count
                report.deleted_events += int(
                    (await conn.execute(_COUNT_EVENTS, params)).scalar_one()
                )
                report.by_status[status.value] = report.by_status.get(status.value, 0) + count
        # Whole partitions first: the events of the deliveries deleted next are then mostly
        # gone already, and the purge trigger finds next to nothing to delete row by row.
        # Events live as long as the longest sent window (a delivery kept longer than that,
        # failed ones by default, is kept as a row).
        before = moment - max(scope.sent for scope in scopes)
        partitions = _DROP_PARTITIONS if not dry_run else _EXPIRED_PARTITIONS
        for name, rows in (await conn.execute(partitions, {"before": before})).all():
            report.dropped_partitions.append(name)
            report.dropped_events_estimate += int(rows)
        if dry_run:
            report.deleted_webhook_messages = int(
                (await conn.execute(_COUNT_WEBHOOK_MESSAGES, {"before": before})).scalar_one()
            )
            report.deleted_unmatched_outcome_events = int(
                (await conn.execute(_COUNT_UNMATCHED_OUTCOMES, {"before": before})).scalar_one()
            )
            await conn.rollback()
            report.elapsed_s = time.perf_counter() - started
            return report
        await conn.commit()
        if progress:
            progress(report)
        for status, cutoff, scope in deletions:
            deleted = await _walk(
                conn, _PRUNE_BATCH, status, cutoff, scope, batch_size, report, progress
            )
            report.deleted_deliveries += deleted[0]
            report.deleted_events += deleted[1]
            report.by_status[status.value] = report.by_status.get(status.value, 0) + deleted[0]
        report.deleted_webhook_messages += await _prune_in_batches(
            conn, _PRUNE_WEBHOOK_MESSAGES, before, batch_size, report
        )
        report.deleted_unmatched_outcome_events += await _prune_in_batches(
            conn, _PRUNE_UNMATCHED_OUTCOMES, before, batch_size, report
        )
        if scrub_after is not None:
            every = _Scope(sent=older_than, failed=keep_failed_for)
            for status in _PRUNED_STATUSES:
                scrubbed = await _walk(
                    conn,
                    _SCRUB_BATCH,
                    status,
                    moment - scrub_after,
                    every,
                    batch_size,
                    report,
                    None,
                )
                report.scrubbed_deliveries += scrubbed[0]
                report.scrubbed_events += scrubbed[1]
    report.elapsed_s = time.perf_counter() - started
    return report


async def _prune_in_batches(
    conn: AsyncConnection,
    statement: TextClause,
    before: datetime,
    batch_size: int,
    report: PruneReport,
) -> int:
    """Run a ``DELETE … LIMIT :batch_size`` until a batch comes back short, one transaction
    per batch; how many rows went."""
    deleted = 0
    while True:
        statement_started = time.perf_counter()
        result = await conn.execute(statement, {"before": before, "batch_size": batch_size})
        await conn.commit()
        report.longest_statement_s = max(
            report.longest_statement_s, time.perf_counter() - statement_started
        )
        report.batches += 1
        deleted += result.rowcount
        if result.rowcount < batch_size:
            return deleted


@dataclass(frozen=True)
class _Scope:
    """One retention window and the workflows it covers: ``only`` these (None: all but
    ``excluded``)."""

    sent: timedelta
    failed: timedelta
    only: tuple[str, ...] | None = None
    excluded: tuple[str, ...] = ()

    @property
    def params(self) -> dict[str, Any]:
        return {
            "only": None if self.only is None else list(self.only),
            "excluded": list(self.excluded),
        }


def _scopes(rows: Any, older_than: timedelta, keep_failed_for: timedelta) -> list[_Scope]:
    """The passes of a prune: a workflow whose policy sets ``keep_sent_for`` /
    ``keep_failed_for`` gets its own windows; the row ``'*'``'s windows, else the call's,
    cover every other workflow. A failed delivery is never kept shorter than a sent one."""
    default_sent, default_failed = older_than, keep_failed_for
    own: dict[str, tuple[timedelta | None, timedelta | None]] = {}
    for workflow, sent, failed in rows:
        if workflow == DEFAULT_POLICY_WORKFLOW:
            default_sent, default_failed = sent or default_sent, failed or default_failed
        else:
            own[workflow] = (sent, failed)
    grouped: dict[tuple[timedelta, timedelta], list[str]] = {}
    for workflow, (sent, failed) in sorted(own.items()):
        window = (sent or default_sent, max(failed or default_failed, sent or default_sent))
        grouped.setdefault(window, []).append(workflow)
    scopes = [
        _Scope(sent=sent, failed=failed, only=tuple(workflows))
        for (sent, failed), workflows in grouped.items()
    ]
    scopes.append(
        _Scope(
            sent=default_sent,
            failed=max(default_failed, default_sent),
            excluded=tuple(sorted(own)),
        )
    )
    return scopes


async def _walk(
    conn: AsyncConnection,
    statement: Any,
    status: DeliveryStatus,
    cutoff: datetime,
    scope: _Scope,
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
                    **scope.params,
                },
            )
        ).one()
        changed_events = result.events
        if statement is _PRUNE_BATCH:
            # The purge trigger deleted the events; it counts them in the transaction.
            changed_events = int((await conn.execute(_PURGED_EVENTS)).scalar_one())
        await conn.commit()
        report.longest_statement_s = max(report.longest_statement_s, time.perf_counter() - began)
        report.batches += 1
        rows += result.deliveries
        events += changed_events
        if progress:
            snapshot = PruneReport(**{**report.__dict__})
            snapshot.deleted_deliveries += rows if statement is _PRUNE_BATCH else 0
            progress(snapshot)
        if result.scanned < batch_size:
            return rows, events
        after_queued_at, after_id = result.last_queued_at, result.last_id
