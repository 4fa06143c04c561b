"""Retention of the webhook outbox: ``retention.prune`` deletes finished messages (and their
attempts) of deliveries that are gone or that finished before the sent window, because a
body may carry the recipient and metadata; pending messages are the sender's."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from email_delivery import retention

MESSAGES = (
    # (message, state, finished days ago, delivery exists)
    ("gone-old", "delivered", 200, False),
    ("gone-recent", "delivered", 1, False),
    ("kept-recent", "failed", 1, True),
    ("pending", "pending", None, False),
    ("kept-old", "delivered", 200, True),
)


async def test_prune_deletes_finished_messages_of_gone_or_old_deliveries(
    owner_engine: AsyncEngine, owner_conn: asyncpg.Connection
) -> None:
    await owner_conn.execute(
        "SELECT * FROM email.enqueue_delivery('d-kept', 'invite', 'ada@example.com', '{}', NULL)"
    )
    endpoint = await owner_conn.fetchval(
        "INSERT INTO email.webhook_endpoints (url) VALUES ('https://hooks.example.com/x') "
        "RETURNING id"
    )
    for n, (message, state, finished, exists) in enumerate(MESSAGES):
        message_id = await owner_conn.fetchval(
            "INSERT INTO email.webhook_messages (endpoint_id, event_id, delivery_id, message_id, "
            "body, state, finished_at) VALUES ($1, $2, $3, $4, '{}', $5, "
            "now() - make_interval(days => $6)) RETURNING id",
            endpoint,
            n,
            "d-kept" if exists else f"d-{message}",
            f"msg_{message}",
            state,
            finished,
        )
        await owner_conn.execute(
            "INSERT INTO email.webhook_attempts (message_id, attempt, latency_ms) "
            "VALUES ($1, 1, 12.5)",
            message_id,
        )

    windows = {"older_than": timedelta(days=90), "keep_failed_for": timedelta(days=365)}
    dry = await retention.prune(owner_engine, dry_run=True, **windows)
    report = await retention.prune(owner_engine, **windows)

    assert dry.deleted_webhook_messages == report.deleted_webhook_messages == 3
    left = await owner_conn.fetch("SELECT message_id FROM email.webhook_messages ORDER BY 1")
    assert [row["message_id"] for row in left] == ["msg_kept-recent", "msg_pending"]
    assert await owner_conn.fetchval("SELECT count(*) FROM email.webhook_attempts") == 2
    assert report.as_dict()["deleted_webhook_messages"] == 3
