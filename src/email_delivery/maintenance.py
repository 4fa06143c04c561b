"""Maintenance: the audit log's partitions ahead of time, and the dashboards' rollups.

``maintain`` is the owner's periodic step — every few minutes from the same scheduler as
``prune`` (``email-delivery maintain``), or from pg_cron on Supabase::

    SELECT cron.schedule('email-maintain', '*/5 * * * *', 'SELECT * FROM email.maintain()');

It creates the partitions of ``email.delivery_events`` ``ahead`` into the future (moving any
event that fell into the default partition into its own), then refreshes
``email.delivery_rollups``. Neither is needed for correctness: an event without its
partition lands in the default partition, and the statistics read the deliveries for any
hour the rollups do not cover. Both keep the cost flat; ``warnings`` (shown by
``email-delivery verify``) says when they have not run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from email_delivery import sql
from email_delivery.errors import InvalidInput, translate_errors
from email_delivery.urls import location

__all__ = ["MaintenanceReport", "MaintenanceState", "maintain", "warnings"]

_SQL = {name: text(statement) for name, statement in sql.blocks("maintenance.sql").items()}

DEFAULT_AHEAD = "3 months"
DEFAULT_PARTITION_INTERVAL = "1 month"
WARN_COVERAGE_BELOW = timedelta(days=7)
"""Warn when the audit log's partitions end sooner than this."""
WARN_ROLLUPS_OLDER_THAN = timedelta(hours=2)
"""Warn when the rollups' last closed hour is further back than this."""

_SPAN = re.compile(r"^\s*([1-9][0-9]{0,2})\s+(day|week|month)s?\s*$")


def _span(value: object, field: str) -> str:
    if not isinstance(value, str) or not (match := _SPAN.match(value)):
        raise InvalidInput(field, "must be a count of days, weeks or months, e.g. '1 month'")
    return f"{match[1]} {match[2]}s"


@dataclass(frozen=True, kw_only=True)
class MaintenanceReport:
    partitions_created: tuple[str, ...]
    rollup_hours_recomputed: int
    """Rolled hours recomputed because a change or a deletion touched them."""
    rollup_hours_added: int
    """Hours that closed since the last run and held deliveries (on the first run: every
    such hour so far)."""
    rolled_until: datetime
    covered_until: datetime | None
    """Where the audit log's last partition ends."""
    default_partition_rows: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "partitions_created": list(self.partitions_created),
            "rollup_hours_recomputed": self.rollup_hours_recomputed,
            "rollup_hours_added": self.rollup_hours_added,
            "rolled_until": self.rolled_until.isoformat(),
            "covered_until": self.covered_until.isoformat() if self.covered_until else None,
            "default_partition_rows": self.default_partition_rows,
        }


async def maintain(
    engine: AsyncEngine,
    *,
    ahead: str = DEFAULT_AHEAD,
    partition_interval: str = DEFAULT_PARTITION_INTERVAL,
) -> MaintenanceReport:
    """Run ``email.maintain`` once, as the table owner. ``ahead``/``partition_interval``:
    ``'N days'``, ``'N weeks'`` or ``'N months'`` (a partition spans at least a day)."""
    params = {
        "ahead": _span(ahead, "ahead"),
        "partition_interval": _span(partition_interval, "partition_interval"),
    }
    async with translate_errors(database=location(engine.url)), engine.connect() as conn:
        row = (await conn.execute(_SQL["maintain"], params)).one()
        await conn.commit()
    return MaintenanceReport(
        partitions_created=tuple(row.partitions_created),
        rollup_hours_recomputed=row.rollup_hours_recomputed,
        rollup_hours_added=row.rollup_hours_added or 0,
        rolled_until=row.rolled_until,
        covered_until=row.covered_until,
        default_partition_rows=row.default_partition_rows,
    )


@dataclass(frozen=True, kw_only=True)
class MaintenanceState:
    covered_until: datetime | None
    default_partition_rows: int
    rolled_until: datetime | None
    now: datetime


STATE_SQL = _SQL["state"]
"""The owner's query behind ``MaintenanceState`` (verify runs it)."""


def warnings(state: MaintenanceState) -> list[str]:
    """One line per thing ``maintain`` should have fixed by now."""
    found = []
    if state.covered_until is None or state.covered_until < state.now + WARN_COVERAGE_BELOW:
        found.append(
            "warning: the audit log's partitions end "
            f"{state.covered_until.isoformat() if state.covered_until else 'nowhere'}, less than "
            f"{WARN_COVERAGE_BELOW.days} days ahead: new events go to the default partition; "
            "run email-delivery maintain (or schedule email.maintain())"
        )
    if state.default_partition_rows:
        found.append(
            f"warning: {state.default_partition_rows} events are in the default partition "
            "delivery_events_default; email-delivery maintain moves them into their partitions"
        )
    if state.rolled_until is None or state.rolled_until < state.now - WARN_ROLLUPS_OLDER_THAN:
        found.append(
            "warning: the dashboards' rollups end "
            f"{state.rolled_until.isoformat() if state.rolled_until else 'nowhere'}: the "
            "statistics read every later hour row by row; run email-delivery maintain"
        )
    return found
