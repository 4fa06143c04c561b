"""Delivery health (``email.delivery_health``, revision 0008): the signals an on-call
engineer needs before users notice, each with its threshold.

Checks, one row each (per workflow where it says so); ``--json`` keys are only ever added:

- ``oldest_queued_age_s`` / ``oldest_retrying_age_s`` (per workflow): seconds since the
  oldest ``queued`` / ``retrying`` delivery last changed; thresholds ``alert_queued_age`` /
  ``alert_retrying_age``;
- ``oldest_expired_claim_age_s`` (per workflow, when there are any): seconds since the
  oldest claim that passed its stored expiry without a reaper taking it back;
  ``alert_expired_claim_age``;
- ``dead_letters_last_hour`` (per workflow), with the 24-hour count and the newest in
  ``detail``; ``alert_dead_letters_per_hour``;
- ``failure_rate_15m`` (per workflow): the share of failed and dead-lettered deliveries
  among those queued in the last 15 minutes that finished; breached when above
  ``alert_failure_rate`` *and* above twice the 24-hour rate, with at least 10 finished;
- ``partitions_ahead_days``: how far the audit log's partitions reach (breached under 7);
- ``events_in_default_partition`` (breached above 0) and ``rollups_behind_s`` (above 2 h):
  ``maintain`` has not run.

Thresholds come from each workflow's policy (``email.workflow_policies``), or from the
arguments, which override them for every workflow. Readable by ``email_reader``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from email_delivery import sql
from email_delivery.errors import InvalidInput, translate_errors
from email_delivery.urls import location

__all__ = ["HealthCheck", "HealthReport", "health"]

_SQL = {name: text(statement) for name, statement in sql.blocks("health.sql").items()}


@dataclass(frozen=True, kw_only=True)
class HealthCheck:
    check: str
    workflow: str | None
    value: float | None
    threshold: float | None
    breached: bool
    detail: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "workflow": self.workflow,
            "value": self.value,
            "threshold": self.threshold,
            "breached": self.breached,
            "detail": self.detail,
        }


@dataclass(frozen=True, kw_only=True)
class HealthReport:
    checks: tuple[HealthCheck, ...]

    @property
    def ok(self) -> bool:
        return not any(check.breached for check in self.checks)

    @property
    def breached(self) -> tuple[HealthCheck, ...]:
        return tuple(check for check in self.checks if check.breached)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "breached": [c.as_dict() for c in self.breached],
            "checks": [c.as_dict() for c in self.checks],
        }


def _age(value: object, field: str) -> timedelta | None:
    if value is not None and (not isinstance(value, timedelta) or value <= timedelta(0)):
        raise InvalidInput(field, "must be a positive timedelta")
    return value


async def health(
    engine: AsyncEngine,
    *,
    queued_age: timedelta | None = None,
    retrying_age: timedelta | None = None,
    expired_claim_age: timedelta | None = None,
    dead_letters_per_hour: int | None = None,
    failure_rate: float | None = None,
) -> HealthReport:
    """Every check, in one round trip. A threshold given here overrides the policies'."""
    params = {
        "queued_age": _age(queued_age, "queued_age"),
        "retrying_age": _age(retrying_age, "retrying_age"),
        "expired_claim_age": _age(expired_claim_age, "expired_claim_age"),
        "dead_letters_per_hour": dead_letters_per_hour,
        "failure_rate": failure_rate,
    }
    if dead_letters_per_hour is not None and (
        isinstance(dead_letters_per_hour, bool)
        or not isinstance(dead_letters_per_hour, int)
        or dead_letters_per_hour < 0
    ):
        raise InvalidInput("dead_letters_per_hour", "must be an integer >= 0")
    if failure_rate is not None and (
        isinstance(failure_rate, bool)
        or not isinstance(failure_rate, int | float)
        or not 0 <= failure_rate <= 1
    ):
        raise InvalidInput("failure_rate", "must be a number between 0 and 1")
    async with translate_errors(database=location(engine.url)), engine.connect() as conn:
        rows = (await conn.execute(_SQL["health"], params)).all()
        await conn.rollback()
    return HealthReport(
        checks=tuple(
            HealthCheck(
                check=row.check_name,
                workflow=row.workflow,
                value=row.value,
                threshold=row.threshold,
                breached=row.breached,
                detail=row.detail,
            )
            for row in rows
        )
    )
