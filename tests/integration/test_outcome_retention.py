"""Retention of provider outcome events: ``retention.prune`` deletes the events that never
matched a delivery once they were received before the sent window (they hold the
provider-reported recipient); a matched event stays with its delivery."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from email_delivery import retention


async def test_prune_deletes_old_unmatched_outcome_events(
    owner_engine: AsyncEngine, owner_conn: asyncpg.Connection
) -> None:
    await owner_conn.execute(
        "SELECT * FROM email.enqueue_delivery('d-1', 'invite', 'ada@example.com', '{}', NULL)"
    )
    for event_id, delivery_id, days in (
        ("old-unmatched", None, 200),
        ("new-unmatched", None, 1),
        ("old-matched", "d-1", 200),
    ):
        await owner_conn.execute(
            "INSERT INTO email.outcome_events (provider, event_id, kind, occurred_at, "
            "echoed_delivery_id, delivery_id, matched_at, recipient, received_at) "
            "VALUES ('ses', $1, 'delivered', now() - make_interval(days => $3), "
            "coalesce($2, 'd-gone'), $2, "
            "CASE WHEN $2::text IS NULL THEN NULL ELSE now() END, 'someone@example.com', "
            "now() - make_interval(days => $3))",
            event_id,
            delivery_id,
            days,
        )

    windows = {"older_than": timedelta(days=90), "keep_failed_for": timedelta(days=365)}
    dry = await retention.prune(owner_engine, dry_run=True, **windows)
    report = await retention.prune(owner_engine, **windows)

    assert dry.deleted_unmatched_outcome_events == report.deleted_unmatched_outcome_events == 1
    left = await owner_conn.fetch("SELECT event_id FROM email.outcome_events ORDER BY 1")
    assert [row["event_id"] for row in left] == ["new-unmatched", "old-matched"]
