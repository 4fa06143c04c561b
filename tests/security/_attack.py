"""Helpers of the red-team tests: arrange deliveries, run an attack, compare what is stored.

The rule every test applies: an attack is refused when it raises or has no effect, and in
both cases nothing may be half-written. ``snapshot`` reads everything an attack could touch
(every delivery column except ``updated_at``, which a refused no-op may legitimately leave
alone or not, and every event column), so ``after == before`` proves both at once.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest

LEASE = "5 minutes"
WORKFLOW = "verification-code"

Snapshot = tuple[tuple[tuple[str, Any], ...], ...]


async def attempt(conn: asyncpg.Connection, sql: str, *args: Any) -> asyncpg.PostgresError | None:
    """Run one attack statement (autocommit); return the error it raised, if any."""
    try:
        await conn.execute(sql, *args)
    except asyncpg.PostgresError as error:
        return error
    return None


async def attempt_fetch(
    conn: asyncpg.Connection, sql: str, *args: Any
) -> tuple[list[asyncpg.Record] | None, asyncpg.PostgresError | None]:
    try:
        return await conn.fetch(sql, *args), None
    except asyncpg.PostgresError as error:
        return None, error


async def deliveries(owner: asyncpg.Connection) -> Snapshot:
    rows = await owner.fetch(
        "SELECT delivery_id, workflow, recipient, status::text, attempts, last_error_code, "
        "last_error_message, last_attempted_at, queued_at, sent_at, metadata::text, created_at "
        "FROM email.deliveries ORDER BY delivery_id"
    )
    return tuple(tuple(row.items()) for row in rows)


async def events(owner: asyncpg.Connection) -> Snapshot:
    rows = await owner.fetch(
        "SELECT id, delivery_id, status::text, attempt, error_code, error_message, "
        "payload::text, created_at FROM email.delivery_events ORDER BY id"
    )
    return tuple(tuple(row.items()) for row in rows)


async def snapshot(owner: asyncpg.Connection) -> tuple[Snapshot, Snapshot]:
    """Everything stored in both tables, as the owner sees it."""
    return await deliveries(owner), await events(owner)


def verdict(error: asyncpg.PostgresError | None) -> str:
    if error is None:
        return "the attack was ACCEPTED and changed what is stored"
    return f"the attack raised {type(error).__name__} ({error.sqlstate}) but left a change"


def _diff(table: str, key: str, before: Snapshot, after: Snapshot) -> list[str]:
    """Changed rows (only the changed columns), added and removed rows, keyed by ``key``."""
    old = {dict(row)[key]: dict(row) for row in before}
    new = {dict(row)[key]: dict(row) for row in after}
    lines = []
    for k in old.keys() | new.keys():
        if k not in new:
            lines.append(f"  {table} {k!r} removed: {old[k]}")
        elif k not in old:
            lines.append(f"  {table} {k!r} added: {new[k]}")
        else:
            changed = {c: (old[k][c], v) for c, v in new[k].items() if old[k][c] != v}
            lines += [f"  {table} {k!r}.{c}: {a!r} -> {b!r}" for c, (a, b) in changed.items()]
    return sorted(lines)


async def assert_nothing_changed(
    owner: asyncpg.Connection,
    before: tuple[Snapshot, Snapshot],
    error: asyncpg.PostgresError | None,
) -> None:
    """The attack raised or had no effect, and nothing was half-written."""
    after = await snapshot(owner)
    changes = _diff("deliveries", "delivery_id", before[0], after[0])
    changes += _diff("delivery_events", "id", before[1], after[1])
    if changes:
        pytest.fail(f"{verdict(error)}:\n" + "\n".join(changes), pytrace=False)


# ---------------------------------------------------------------------------------------
# Arranging deliveries through the lifecycle functions, as a well-behaved worker would
# ---------------------------------------------------------------------------------------


async def enqueue(
    conn: asyncpg.Connection,
    delivery_id: str,
    *,
    recipient: str = "ada@example.com",
    metadata: dict[str, Any] | None = None,
) -> None:
    await conn.execute(
        "SELECT FROM email.enqueue_delivery($1, $2, $3, $4::jsonb, NULL)",
        delivery_id,
        WORKFLOW,
        recipient,
        json.dumps(metadata or {}),
    )


async def claim(conn: asyncpg.Connection, delivery_id: str, lease: str = LEASE) -> bool:
    changed: bool = await conn.fetchval(
        "SELECT changed FROM email.claim_delivery($1, $2::text::interval)", delivery_id, lease
    )
    return changed


async def arrange(conn: asyncpg.Connection, delivery_id: str, status: str) -> None:
    """Drive a new delivery to ``status`` through the lifecycle functions."""
    await enqueue(conn, delivery_id, recipient=f"{delivery_id}@example.com")
    if status == "queued":
        return
    assert await claim(conn, delivery_id)
    if status == "in_progress":
        return
    if status == "sent":
        await conn.execute(
            'SELECT FROM email.mark_delivery_sent($1, 1, \'{"smtp": "250 2.0.0 OK"}\')',
            delivery_id,
        )
        return
    retryable, max_attempts = {
        "retrying": (True, 5),
        "failed": (False, 5),
        "dead_letter": (True, 1),
    }[status]
    await conn.execute(
        "SELECT FROM email.mark_delivery_failed($1, 1, 'SMTP_421', '4.7.0 Try again later', "
        "$2, $3, NULL)",
        delivery_id,
        retryable,
        max_attempts,
    )


ALL_STATUSES = ("queued", "in_progress", "sent", "retrying", "failed", "dead_letter")


async def arrange_one_of_each(conn: asyncpg.Connection) -> None:
    """One delivery in every status, id = its status (``d-queued``, ``d-sent``, …)."""
    for status in ALL_STATUSES:
        await arrange(conn, f"d-{status}", status)


async def status_of(owner: asyncpg.Connection, delivery_id: str) -> str | None:
    status: str | None = await owner.fetchval(
        "SELECT status::text FROM email.deliveries WHERE delivery_id = $1", delivery_id
    )
    return status


async def all_event_text(owner: asyncpg.Connection) -> str:
    """Every stored event payload and error message, and every row's message and
    metadata, as one text to search for a leaked secret."""
    parts = await owner.fetch(
        "SELECT coalesce(payload::text, '') || ' ' || coalesce(error_message, '') AS t "
        "FROM email.delivery_events "
        "UNION ALL SELECT metadata::text || ' ' || coalesce(last_error_message, '') "
        "FROM email.deliveries"
    )
    return "\n".join(row["t"] for row in parts)


async def time_travel(superuser: asyncpg.Connection, statement: str, *args: Any) -> None:
    """Arrange the past (an old ``updated_at``, an expired claim) with no trigger firing."""
    async with superuser.transaction():
        await superuser.execute("SET LOCAL session_replication_role = replica")
        await superuser.execute(statement, *args)
