"""Seeding for the read-side and scale benchmarks: many deliveries and their events, fast.

Deliveries and events are generated server-side by ``INSERT … SELECT`` over
``generate_series`` inside one transaction with ``session_replication_role = replica`` (no
audit or purge trigger fires; the events are generated consistently instead: queued, then
in_progress and retrying-or-final per attempt, 1 + 2 x attempts rows, about 4 per delivery).
Both are computed from the row number alone, so they are written in chunks (progress, and
no need to read the deliveries back to make their events).

The indexes and primary keys of both tables are dropped first and rebuilt afterwards, from
their exact definitions. ``pg_indexes`` shows an index of the partitioned
``delivery_events`` as ``CREATE INDEX … ON ONLY email.delivery_events``: replayed as it
stands, that creates the parent's index alone, *invalid* until an index of every partition
is attached, and the planner would then use none. The rebuild drops ``ONLY``, so PostgreSQL
builds one index per partition and attaches each (a primary key re-added on the parent does
the same), and checks that every index of both tables ends up valid.

Data: three workflows, ``recipients`` recipients, insertion order following ``queued_at``
as in production (spread evenly over ``span``, ending now), 93 % sent, 3 % failed,
2 % dead_letter, the newest 2 % (at most 20,000) in flight; attempts 1/2/3 in 60/30/10 %.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

Log = Callable[[str], None]

# One row per delivery number i in [lo, hi]: its id, status, attempts and queued_at. The
# deliveries and the events are both made from it, so they agree without a join.
_ROWS = """
SELECT i,
       'bench-' || i AS delivery_id,
       s.status,
       s.attempts,
       now() - {span} * (1 - i::float8 / {n}) AS queued_at
FROM generate_series({lo}, {hi}) AS i
CROSS JOIN LATERAL (
    SELECT CASE
               WHEN i > {n} - {in_flight}
                   THEN (ARRAY['queued', 'in_progress', 'retrying'])[1 + i % 3]
               WHEN i % 100 < 3 THEN 'failed'
               WHEN i % 100 < 5 THEN 'dead_letter'
               ELSE 'sent'
           END AS status,
           CASE WHEN i % 10 < 6 THEN 1 WHEN i % 10 < 9 THEN 2 ELSE 3 END AS attempts
) s
"""

DELIVERIES = """
INSERT INTO email.deliveries (delivery_id, workflow, recipient, status, attempts,
    last_error_code, last_error_message, last_attempted_at, queued_at, sent_at, metadata,
    created_at, updated_at, lease_expires_at, next_attempt_at)
SELECT r.delivery_id,
       (ARRAY['verification-code', 'invite', 'password-reset'])[1 + r.i % 3],
       'user' || (r.i::bigint * 7919 % {recipients}) || '@example.com',
       r.status::email.delivery_status,
       r.attempts,
       CASE WHEN r.status IN ('failed', 'dead_letter', 'retrying') THEN 'SMTP_421' END,
       CASE WHEN r.status IN ('failed', 'dead_letter', 'retrying')
            THEN '4.7.0 Service not available' END,
       r.queued_at + r.attempts * interval '2 seconds',
       r.queued_at,
       CASE WHEN r.status = 'sent'
            THEN r.queued_at + (0.5 + (r.i % 300) / 10.0) * interval '1 second' END,
       jsonb_build_object('template', 'v' || (r.i % 5)),
       r.queued_at,
       r.queued_at + r.attempts * interval '2 seconds',
       CASE WHEN r.status = 'in_progress'
            THEN r.queued_at + r.attempts * interval '2 seconds' + interval '5 minutes' END,
       CASE WHEN r.status = 'retrying'
            THEN r.queued_at + r.attempts * interval '2 seconds' + interval '1 minute' END
FROM ({rows}) AS r
"""

# 1 + 2 * attempts events: queued, then in_progress and (retrying | the final status) per attempt.
EVENTS = """
INSERT INTO email.delivery_events (delivery_id, status, attempt, error_code, error_message,
    payload, created_at)
SELECT r.delivery_id,
       (CASE WHEN k = 0 THEN 'queued'
             WHEN k % 2 = 1 THEN 'in_progress'
             WHEN k < 2 * r.attempts THEN 'retrying'
             ELSE r.status END)::email.delivery_status,
       (k + 1) / 2,
       CASE WHEN k > 0 AND k % 2 = 0 AND (k < 2 * r.attempts OR r.status <> 'sent')
            THEN 'SMTP_421' END,
       NULL,
       CASE WHEN k = 2 * r.attempts AND r.status = 'sent'
            THEN '{{"smtp": "250 2.0.0 OK"}}'::jsonb END,
       r.queued_at + k * interval '1 second'
FROM ({rows}) AS r
CROSS JOIN LATERAL generate_series(0, 2 * r.attempts) AS k
WHERE r.status <> 'queued' OR k = 0
"""

TABLES = ("deliveries", "delivery_events")
IN_FLIGHT = 20_000
"""The newest 2 % are in flight, but at most this many: a queue's depth does not grow with
the table's history (at 10 M over a year, 2 % would be a week of stuck mail)."""


@dataclass(frozen=True)
class Dropped:
    """What ``drop_indexes`` removed, to be put back by ``rebuild_indexes``."""

    constraints: list[tuple[str, str, str]]  # (table, name, definition)
    indexes: list[str]  # CREATE INDEX statements, ON ONLY removed


async def drop_indexes(conn: asyncpg.Connection) -> Dropped:
    """Drop every index and primary/unique key of both tables (children go with them)."""
    constraints = [
        (row["table"], row["name"], row["definition"])
        for row in await conn.fetch(
            "SELECT c.conrelid::regclass::text AS table, c.conname AS name, "
            "pg_get_constraintdef(c.oid) AS definition FROM pg_constraint c "
            "WHERE c.conrelid = ANY ($1::regclass[]) AND c.contype IN ('p', 'u') "
            "AND c.conparentid = 0",
            [f"email.{t}" for t in TABLES],
        )
    ]
    referenced = await conn.fetchval(
        "SELECT count(*) FROM pg_constraint WHERE contype = 'f' "
        "AND confrelid = ANY ($1::regclass[])",
        [f"email.{t}" for t in TABLES],
    )
    if referenced:  # a foreign key needs its key: keep them all then
        constraints = []
    indexes = await conn.fetch(
        "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = 'email' "
        "AND i.tablename = ANY ($1::text[]) AND NOT EXISTS (SELECT FROM pg_constraint c "
        "WHERE c.conindid = format('%I.%I', i.schemaname, i.indexname)::regclass)",
        list(TABLES),
    )
    for table, name, _ in constraints:
        await conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    for row in indexes:
        await conn.execute(f'DROP INDEX email."{row["indexname"]}"')
    return Dropped(
        constraints=constraints,
        indexes=[row["indexdef"].replace(" ON ONLY ", " ON ", 1) for row in indexes],
    )


async def rebuild_indexes(conn: asyncpg.Connection, dropped: Dropped) -> None:
    """Put back what ``drop_indexes`` dropped: on a partitioned table, one index per
    partition, attached to the parent's (which is then valid)."""
    for table, name, definition in dropped.constraints:
        await conn.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
    for statement in dropped.indexes:
        await conn.execute(statement)
    invalid = await conn.fetch(
        "SELECT i.indexrelid::regclass::text AS name FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'email' AND NOT i.indisvalid"
    )
    if invalid:
        raise RuntimeError(f"invalid indexes after the rebuild: {[r['name'] for r in invalid]}")


async def seed(
    conn: asyncpg.Connection,
    n: int,
    *,
    span: str,
    recipients: int,
    log: Log,
    chunk: int = 1_000_000,
) -> dict[str, Any]:
    """Seed ``n`` deliveries queued over ``span`` (an SQL interval expression) up to now.

    Returns the timings in seconds (and the events written)."""
    timings: dict[str, Any] = {}
    await conn.execute("SET maintenance_work_mem = '1GB'")
    started = time.perf_counter()
    dropped = await drop_indexes(conn)
    timings["drop_indexes_s"] = time.perf_counter() - started
    events = 0
    delivery_s = event_s = 0.0
    async with conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        for lo in range(1, n + 1, chunk):
            hi = min(n, lo + chunk - 1)
            rows = _ROWS.format(span=span, n=n, lo=lo, hi=hi, in_flight=min(n // 50, IN_FLIGHT))
            started = time.perf_counter()
            await conn.execute(DELIVERIES.format(rows=rows, recipients=recipients))
            delivery_s += time.perf_counter() - started
            started = time.perf_counter()
            status = await conn.execute(EVENTS.format(rows=rows))
            events += int(status.split()[-1])
            event_s += time.perf_counter() - started
            log(f"  {hi:,} deliveries, {events:,} events ({delivery_s + event_s:.0f} s)")
    timings["seed_deliveries_s"] = delivery_s
    timings["seed_events_s"] = event_s
    started = time.perf_counter()
    await rebuild_indexes(conn, dropped)
    timings["rebuild_indexes_s"] = time.perf_counter() - started
    log(f"  indexes rebuilt in {timings['rebuild_indexes_s']:.1f} s")
    started = time.perf_counter()
    await conn.execute("VACUUM ANALYZE email.deliveries")
    await conn.execute("VACUUM ANALYZE email.delivery_events")
    timings["vacuum_analyze_s"] = time.perf_counter() - started
    log(f"  VACUUM ANALYZE in {timings['vacuum_analyze_s']:.1f} s")
    timings["events"] = events
    return timings
