"""A small, hand-checkable data set for the read side, written as the superuser.

Triggers are off while seeding (``session_replication_role = replica``) so every timestamp,
including ``updated_at``, is exactly what the expectations below say; the audit events are
written explicitly instead. Times are offsets from the database's ``now()`` at seeding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from tests.support.cluster import Cluster

SEED_LEASE = timedelta(minutes=5)
"""The claims in flight were made with the default policy's lease."""
M = timedelta(minutes=1)
H = timedelta(hours=1)
D = timedelta(days=1)


@dataclass(frozen=True)
class Row:
    delivery_id: str
    workflow: str
    recipient: str
    status: str
    attempts: int
    queued_ago: timedelta
    updated_ago: timedelta
    sent_after: timedelta | None = None  # sent_at - queued_at
    error_code: str | None = None
    error_message: str | None = None
    attempted_ago: timedelta | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


ADA = "ada@example.com"
BOB = "bob@example.com"

ROWS = (
    # invite, inside 24 h: 2 sent (latencies 10 s, 30 s), 1 failed, 1 retrying
    Row("i1", "invite", ADA, "sent", 1, H, H - 50 * M, sent_after=timedelta(seconds=10)),
    Row("i2", "invite", BOB, "sent", 2, 2 * H, 2 * H, sent_after=timedelta(seconds=30)),
    Row("i3", "invite", ADA, "failed", 1, 3 * H, 3 * H, error_code="SMTP_550", error_message="x"),
    Row("i4", "invite", BOB, "retrying", 1, 30 * M, 20 * M, error_code="SMTP_421"),
    # invite, outside 24 h
    Row("i5", "invite", ADA, "sent", 1, 30 * H, 30 * H, sent_after=timedelta(seconds=5)),
    # password-reset, inside 24 h: 1 sent (20 s), 1 dead_letter, 1 in_progress, 1 queued
    Row("p1", "password-reset", ADA, "sent", 1, 10 * M, 9 * M, sent_after=timedelta(seconds=20)),
    Row("p2", "password-reset", BOB, "dead_letter", 5, 5 * H, 4 * H, error_code="SMTP_421"),
    Row("p3", "password-reset", ADA, "in_progress", 1, 15 * M, 14 * M, attempted_ago=14 * M),
    Row("p4", "password-reset", BOB, "queued", 0, M, M),
    # Same queued_at as p3: the recipient cursor must break the tie on delivery_id.
    Row("p5", "password-reset", ADA, "queued", 0, 15 * M, 15 * M),
)

STATS_24H = {
    "invite": {
        "total": 4,
        "sent": 2,
        "failed": 1,
        "dead_letter": 0,
        "in_flight": 1,
        "success_rate": 2 / 3,
        "retry_rate": 1 / 4,
        "mean_attempts": 5 / 4,
        # percentile_cont over [10, 30]: 10 + q * 20
        "latency_p50_s": 20.0,
        "latency_p95_s": 29.0,
        "latency_p99_s": 29.8,
        "top_error_codes": [{"code": "SMTP_421", "count": 1}, {"code": "SMTP_550", "count": 1}],
    },
    "password-reset": {
        "total": 5,
        "sent": 1,
        "failed": 0,
        "dead_letter": 1,
        "in_flight": 3,
        "success_rate": 0.5,
        "retry_rate": 1 / 5,
        "mean_attempts": 7 / 5,
        "latency_p50_s": 20.0,
        "latency_p95_s": 20.0,
        "latency_p99_s": 20.0,
        "top_error_codes": [{"code": "SMTP_421", "count": 1}],
    },
}

# The audit trail written for i2 (a retried delivery), oldest first.
I2_EVENTS = (
    ("queued", 0, None, None),
    ("in_progress", 1, None, None),
    ("retrying", 1, "SMTP_421", None),
    ("in_progress", 2, None, None),
    ("sent", 2, None, {"smtp": "250 2.0.0 OK"}),
)


def superuser_dsn(cluster: Cluster, database: str) -> str:
    return cluster.dsn(database, make_url(cluster.server.admin_url).username or "postgres")


async def seed(cluster: Cluster, database: str, rows: tuple[Row, ...] = ROWS) -> datetime:
    """Insert ``rows`` (one event per row, the full trail for i2); return the seed's now()."""
    conn = await asyncpg.connect(superuser_dsn(cluster, database))
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            now: datetime = await conn.fetchval("SELECT now()")
            for r in rows:
                queued_at = now - r.queued_ago
                await conn.execute(
                    """
                    INSERT INTO email.deliveries (delivery_id, workflow, recipient, status,
                        attempts, last_error_code, last_error_message, last_attempted_at,
                        queued_at, sent_at, metadata, created_at, updated_at, lease_expires_at)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $9, $12,
                            CASE WHEN $4::email.delivery_status = 'in_progress'
                                 THEN $8::timestamptz + $13::interval END)
                    """,
                    r.delivery_id,
                    r.workflow,
                    r.recipient,
                    r.status,
                    r.attempts,
                    r.error_code,
                    r.error_message,
                    None if r.attempted_ago is None else now - r.attempted_ago,
                    queued_at,
                    None if r.sent_after is None else queued_at + r.sent_after,
                    json.dumps(r.metadata),
                    now - r.updated_ago,
                    SEED_LEASE,
                )
                trail = (
                    I2_EVENTS
                    if r.delivery_id == "i2"
                    else ((r.status, r.attempts, r.error_code, None),)
                )
                for status, attempt, code, payload in trail:
                    await conn.execute(
                        "INSERT INTO email.delivery_events (delivery_id, status, attempt, "
                        "error_code, error_message, payload, created_at) "
                        "VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7)",
                        r.delivery_id,
                        status,
                        attempt,
                        code,
                        r.error_message if code else None,
                        None if payload is None else json.dumps(payload),
                        queued_at,
                    )
    finally:
        await conn.close()
    return now
