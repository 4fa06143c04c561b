"""2. History rewritten: what a delivery was, and when, cannot be changed afterwards.

The writer's table-wide UPDATE grant (RLS ``USING (true)``) reaches every row, and the
audit trigger only fires on a change of ``status`` or ``attempts``: everything else changes
silently. Each test is one table-wide statement over a delivery in every status.
"""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from email_delivery import retention
from tests.security._attack import (
    arrange,
    arrange_one_of_each,
    assert_nothing_changed,
    attempt,
    snapshot,
    time_travel,
)

REWRITES = {
    "recipient": "UPDATE email.deliveries SET recipient = 'attacker@evil.example'",
    "workflow": "UPDATE email.deliveries SET workflow = 'phishing'",
    "queued_at": "UPDATE email.deliveries SET queued_at = queued_at - interval '1 year'",
    "created_at": "UPDATE email.deliveries SET created_at = created_at - interval '1 year'",
    # NULL - interval stays NULL, so the CHECK sent_at_iff_sent holds for unsent rows
    "sent_at": "UPDATE email.deliveries SET sent_at = sent_at - interval '1 year'",
    "delivery_id": "UPDATE email.deliveries SET delivery_id = delivery_id || '-renamed'",
}


@pytest.mark.parametrize("column", REWRITES)
async def test_writer_cannot_rewrite_history_table_wide(
    owner: asyncpg.Connection, worker: asyncpg.Connection, column: str
) -> None:
    await arrange_one_of_each(worker)
    before = await snapshot(owner)
    error = await attempt(worker, REWRITES[column])
    await assert_nothing_changed(owner, before, error)


BACKDATES = {
    "sent": (
        "sent",
        "UPDATE email.deliveries SET sent_at = now() - interval '100 days', "
        "queued_at = now() - interval '100 days' WHERE delivery_id = 'victim'",
    ),
    "failed": (
        "failed",
        "UPDATE email.deliveries SET last_attempted_at = now() - interval '400 days', "
        "queued_at = now() - interval '400 days' WHERE delivery_id = 'victim'",
    ),
    # the writer reports the success itself and picks the time it "happened"
    "marked-sent-with-a-chosen-sent_at": (
        "in_progress",
        "UPDATE email.deliveries SET status = 'sent', sent_at = now() - interval '100 days', "
        "queued_at = now() - interval '100 days' WHERE delivery_id = 'victim'",
    ),
}


@pytest.mark.parametrize("case", BACKDATES)
async def test_writer_cannot_get_a_fresh_delivery_pruned_by_backdating_it(
    owner: asyncpg.Connection,
    worker: asyncpg.Connection,
    owner_engine: AsyncEngine,
    case: str,
) -> None:
    """Delete-by-proxy: the writer may not DELETE, but backdating a delivery finished a
    minute ago makes the owner's routine prune (default windows) delete it and its trail."""
    status, backdate = BACKDATES[case]
    await arrange(worker, "victim", status)
    trail = await owner.fetchval(
        "SELECT count(*) FROM email.delivery_events WHERE delivery_id = 'victim'"
    )
    await attempt(worker, backdate)
    await retention.prune(
        owner_engine, older_than=timedelta(days=90), keep_failed_for=timedelta(days=365)
    )
    assert (
        await owner.fetchval("SELECT count(*) FROM email.deliveries WHERE delivery_id = 'victim'")
        == 1
    ), "the owner's routine prune deleted a delivery that finished a minute ago"
    assert (
        await owner.fetchval(
            "SELECT count(*) FROM email.delivery_events WHERE delivery_id = 'victim'"
        )
        >= trail
    ), "its audit trail went with it"


SENT_IS_FINAL = {
    "last_error_code": "UPDATE email.deliveries SET last_error_code = 'SMTP_550' "
    "WHERE delivery_id = 'd-sent'",
    "last_error_message": "UPDATE email.deliveries SET last_error_message = "
    "'5.1.1 mailbox unavailable' WHERE delivery_id = 'd-sent'",
    "metadata": 'UPDATE email.deliveries SET metadata = \'{"campaign": "spring"}\' '
    "WHERE delivery_id = 'd-sent'",
    "last_attempted_at": "UPDATE email.deliveries SET last_attempted_at = NULL "
    "WHERE delivery_id = 'd-sent'",
}


@pytest.mark.parametrize("column", SENT_IS_FINAL)
async def test_writer_cannot_alter_a_sent_delivery(
    owner: asyncpg.Connection, worker: asyncpg.Connection, column: str
) -> None:
    """``sent`` is final: no lifecycle function changes a sent row, nor may raw SQL (the
    statistics read ``last_error_code``; support reads the rest)."""
    await arrange_one_of_each(worker)
    before = await snapshot(owner)
    error = await attempt(worker, SENT_IS_FINAL[column])
    await assert_nothing_changed(owner, before, error)


async def test_writer_cannot_hide_a_stuck_delivery_by_touching_it(
    owner: asyncpg.Connection, worker: asyncpg.Connection, superuser: asyncpg.Connection
) -> None:
    """A no-op UPDATE moves ``updated_at``, which is what ``email.pending_deliveries``'s
    ``idle_for`` and ``email-delivery stuck`` measure: stuck work disappears from view."""
    await arrange_one_of_each(worker)
    await time_travel(superuser, "UPDATE email.deliveries SET updated_at = now() - interval '2 h'")
    stuck = await owner.fetchval(
        "SELECT count(*) FROM email.pending_deliveries WHERE idle_for > interval '1 hour'"
    )
    assert stuck == 3  # queued, in_progress, retrying
    await attempt(worker, "UPDATE email.deliveries SET metadata = metadata")
    assert (
        await owner.fetchval(
            "SELECT count(*) FROM email.pending_deliveries WHERE idle_for > interval '1 hour'"
        )
        == stuck
    ), "a no-op UPDATE by the writer reset idle_for"
