"""Worker policy per workflow (``email.workflow_policies``, revision 0008): read, set, reset.

The lifecycle functions read a workflow's policy whenever the caller leaves ``lease`` or
``max_attempts`` out: the claim's lease (stored with the claim as ``lease_expires_at``), the
retry budget, the retry backoff, and ``health``'s thresholds. The row ``'*'`` is the policy of
every workflow without its own row; a workflow's own row is complete (``set_policy`` starts it
from ``'*'``'s values).

**Precedence:** an argument of the call (``tracker.claim(lease=…)``,
``mark_failed(max_attempts=…)``) > the workflow's row > the row ``'*'``.

Only the schema owner changes policies (``email-delivery policy set|reset``); every change is
kept in ``email.workflow_policy_changes`` (who, when, before and after). The database checks
every value (named CHECK constraints); this module checks the same rules first and names the
field, so bad input never reaches it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from email_delivery import sql
from email_delivery.errors import InvalidInput, translate_errors
from email_delivery.models import (
    DEFAULT_POLICY_WORKFLOW,
    MAX_POLICY_ATTEMPTS,
    SUPPRESSION_REASONS,
    WORKFLOW_PATTERN,
)
from email_delivery.urls import location

__all__ = ["Policy", "PolicyChange", "policies", "policy_changes", "reset_policy", "set_policy"]

_SQL = {name: text(statement) for name, statement in sql.blocks("policies.sql").items()}

MAX_LEASE = timedelta(days=1)
MAX_BACKOFF_CAP = timedelta(days=7)
MIN_INTERVAL = timedelta(seconds=1)
MIN_RETENTION = timedelta(days=1)


@dataclass(frozen=True, kw_only=True)
class Policy:
    workflow: str
    max_attempts: int
    lease: timedelta
    backoff_base: timedelta
    backoff_cap: timedelta
    backoff_jitter: float
    keep_sent_for: timedelta | None
    keep_failed_for: timedelta | None
    alert_queued_age: timedelta | None
    alert_retrying_age: timedelta | None
    alert_expired_claim_age: timedelta | None
    alert_dead_letters_per_hour: int | None
    alert_failure_rate: float | None
    track_engagement: bool = False
    """Record ``opened`` / ``clicked`` provider events as outcomes (revision 0010)."""
    send_despite_suppression: tuple[str, ...] = ()
    """Suppression reasons this workflow still sends through (revision 0012)."""
    suppress_for: timedelta | None = None
    """How long a hard bounce or complaint of its mail suppresses the address (NULL:
    until removed)."""
    updated_at: datetime
    updated_by: str

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


SETTABLE = tuple(
    f.name for f in fields(Policy) if f.name not in ("workflow", "updated_at", "updated_by")
)
"""The fields ``set_policy`` takes."""
_INTERVALS = {
    "lease": (MIN_INTERVAL, MAX_LEASE),
    "backoff_base": (MIN_INTERVAL, MAX_LEASE),
    "backoff_cap": (MIN_INTERVAL, MAX_BACKOFF_CAP),
    "keep_sent_for": (MIN_RETENTION, None),
    "keep_failed_for": (MIN_RETENTION, None),
    "alert_queued_age": (MIN_INTERVAL, None),
    "alert_retrying_age": (MIN_INTERVAL, None),
    "alert_expired_claim_age": (MIN_INTERVAL, None),
    "suppress_for": (timedelta(hours=1), None),
}
_NULLABLE = {
    "keep_sent_for", "keep_failed_for", "alert_queued_age", "alert_retrying_age",
    "alert_expired_claim_age", "alert_dead_letters_per_hour", "alert_failure_rate",
    "suppress_for",
}  # fmt: skip
_CONSTRAINT = re.compile(r"ck_workflow_policies_(\w+?)_(?:range|format|positive)")


@dataclass(frozen=True, kw_only=True)
class PolicyChange:
    id: int
    workflow: str
    action: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    changed_by: str
    changed_at: datetime


def check_workflow_key(workflow: object) -> str:
    if workflow == DEFAULT_POLICY_WORKFLOW:
        return DEFAULT_POLICY_WORKFLOW
    if not isinstance(workflow, str) or not re.fullmatch(WORKFLOW_PATTERN.strip("^$"), workflow):
        raise InvalidInput("workflow", f"must be '*' or match {WORKFLOW_PATTERN}")
    return workflow


def _check(changes: dict[str, Any], merged: dict[str, Any]) -> None:
    """The table's CHECK constraints, in Python, naming the field."""
    for name, value in changes.items():
        if name not in SETTABLE:
            raise InvalidInput(name, f"not a policy field; one of {', '.join(SETTABLE)}")
        if value is None:
            if name not in _NULLABLE:
                raise InvalidInput(name, "is required")
            continue
        if name in _INTERVALS:
            shortest, longest = _INTERVALS[name]
            if (
                not isinstance(value, timedelta)
                or value < shortest
                or (longest is not None and value > longest)
            ):
                bound = f" and at most {longest}" if longest else ""
                raise InvalidInput(name, f"must be a timedelta of at least {shortest}{bound}")
        elif name in ("max_attempts", "alert_dead_letters_per_hour"):
            low, high = (1, MAX_POLICY_ATTEMPTS) if name == "max_attempts" else (0, 2**31 - 1)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise InvalidInput(name, f"must be an integer between {low} and {high}")
        elif name in ("backoff_jitter", "alert_failure_rate") and (
            isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1
        ):
            raise InvalidInput(name, "must be a number between 0 and 1")
        elif name == "track_engagement" and not isinstance(value, bool):
            raise InvalidInput(name, "must be a bool")
        elif name == "send_despite_suppression" and (
            isinstance(value, str)
            or not isinstance(value, list | tuple)
            or any(reason not in SUPPRESSION_REASONS for reason in value)
        ):
            raise InvalidInput(name, f"a list of {', '.join(SUPPRESSION_REASONS)}")
    if merged["backoff_cap"] < merged["backoff_base"]:
        raise InvalidInput("backoff_cap", "must be at least backoff_base")
    sent, failed = merged["keep_sent_for"], merged["keep_failed_for"]
    if sent is not None and failed is not None and failed < sent:
        raise InvalidInput("keep_failed_for", "must be at least keep_sent_for")


def _policy(row: Any) -> Policy:
    values = {f.name: getattr(row, f.name) for f in fields(Policy)}
    values["send_despite_suppression"] = tuple(values["send_despite_suppression"])
    return Policy(**values)


async def _run(engine: AsyncEngine, action: Any) -> Any:
    async with translate_errors(database=location(engine.url)), engine.connect() as conn:
        try:
            result = await action(conn)
        except Exception as exc:
            constraint = getattr(getattr(exc, "orig", None), "__cause__", None)
            name = getattr(constraint, "constraint_name", None) or ""
            if match := _CONSTRAINT.fullmatch(name):
                raise InvalidInput(match[1], str(constraint).splitlines()[0]) from exc
            raise
        await conn.commit()
        return result


async def policies(engine: AsyncEngine, *, workflow: str | None = None) -> list[Policy]:
    """Every policy row (``'*'`` first), or the one ``workflow`` runs under."""

    async def action(conn: AsyncConnection) -> list[Policy]:
        if workflow is None:
            return [_policy(row) for row in (await conn.execute(_SQL["all"])).all()]
        key = check_workflow_key(workflow)
        return [_policy((await conn.execute(_SQL["effective"], {"workflow": key})).one())]

    result: list[Policy] = await _run(engine, action)
    return result


async def set_policy(engine: AsyncEngine, workflow: str, **changes: Any) -> Policy:
    """Change ``workflow``'s policy (``'*'``: the default); a workflow without its own row
    gets one, starting from ``'*'``'s values. Owner only."""
    key = check_workflow_key(workflow)
    if not changes:
        raise InvalidInput("changes", "name at least one field to set")
    if "send_despite_suppression" in changes and changes["send_despite_suppression"] is None:
        changes["send_despite_suppression"] = []  # "none": no reason

    async def action(conn: AsyncConnection) -> Policy:
        current = (await conn.execute(_SQL["effective_for_update"], {"workflow": key})).one()
        merged = {name: getattr(current, name) for name in SETTABLE} | changes
        _check(changes, merged)
        merged["send_despite_suppression"] = sorted(set(merged["send_despite_suppression"]))
        row = (await conn.execute(_SQL["upsert"], {"workflow": key, **merged})).one()
        return _policy(row)

    policy: Policy = await _run(engine, action)
    return policy


async def reset_policy(engine: AsyncEngine, workflow: str) -> Policy:
    """Drop ``workflow``'s own row (it runs under ``'*'`` again); for ``'*'``, put every
    field back to its documented default. Returns the policy in force afterwards."""
    key = check_workflow_key(workflow)

    async def action(conn: AsyncConnection) -> Policy:
        if key == DEFAULT_POLICY_WORKFLOW:
            await conn.execute(_SQL["reset_default"])
        else:
            await conn.execute(_SQL["delete"], {"workflow": key})
        return _policy((await conn.execute(_SQL["effective"], {"workflow": key})).one())

    policy: Policy = await _run(engine, action)
    return policy


async def policy_changes(
    engine: AsyncEngine, *, workflow: str | None = None, limit: int = 50
) -> list[PolicyChange]:
    """The latest changes, newest first."""
    key = None if workflow is None else check_workflow_key(workflow)
    if not 1 <= limit <= 10_000:
        raise InvalidInput("limit", "must be between 1 and 10000")

    async def action(conn: AsyncConnection) -> list[PolicyChange]:
        rows = (await conn.execute(_SQL["changes"], {"workflow": key, "limit": limit})).all()
        return [PolicyChange(**row._asdict()) for row in rows]

    changes: list[PolicyChange] = await _run(engine, action)
    return changes
