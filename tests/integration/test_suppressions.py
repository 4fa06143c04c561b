"""The suppression list (revision 0012): fed by hard bounces and complaints, checked at
enqueue with the workflow's policy, expiring, clearing itself after a later delivery; run as
the worker login in both commit modes, the list changed by the owner."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from email_delivery import (
    DeliveryStatus,
    DeliveryTracker,
    InvalidInput,
    NewDelivery,
    PermissionDenied,
    policies,
    suppressions,
)
from email_delivery.providers import OutcomeKind, ProviderEvent
from tests.support.db import events

RESET = "password-reset"
CODE = "verification-code"
ADA = "ada@example.com"
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["per-call", "group-commit"])
async def tracker(
    worker_engine: AsyncEngine, request: pytest.FixtureRequest
) -> AsyncIterator[DeliveryTracker]:
    async with DeliveryTracker(
        worker_engine, group_commit=request.param == "group-commit"
    ) as tracker:
        yield tracker


async def sent(tracker: DeliveryTracker, delivery_id: str, workflow: str = CODE) -> None:
    result = await tracker.enqueue(delivery_id, workflow=workflow, recipient=ADA)
    assert result.delivery.status is DeliveryStatus.QUEUED
    claim = await tracker.claim(delivery_id)
    assert claim is not None
    await tracker.mark_sent(
        delivery_id, attempt=claim.attempt, provider="ses", provider_message_id=f"m-{delivery_id}"
    )


async def outcome(
    tracker: DeliveryTracker, delivery_id: str, kind: OutcomeKind, n: int, **kw: Any
) -> None:
    await tracker.record_outcome(
        ProviderEvent(
            provider="ses",
            event_id=f"e-{n}",
            kind=kind,
            occurred_at=T0 + timedelta(minutes=n),
            provider_message_id=f"m-{delivery_id}",
            delivery_id=None,
            recipient=ADA,
            permanent=kw.get("permanent"),
            reason=kw.get("reason"),
            smtp_code=None,
            provider_event_type=kind.value,
        )
    )


async def test_a_hard_bounce_suppresses_the_next_delivery_and_says_why(
    tracker: DeliveryTracker, owner_conn: asyncpg.Connection
) -> None:
    await sent(tracker, "d1")
    await outcome(tracker, "d1", OutcomeKind.BOUNCED, 1, permanent=True, reason="550 5.1.1 no")
    entry = await owner_conn.fetchrow("SELECT * FROM email.suppressions")
    assert (entry["address"], entry["reason"], entry["source_delivery_id"], entry["provider"]) == (
        ADA,
        "hard_bounce",
        "d1",
        "ses",
    )
    assert entry["expires_at"] is None

    result = await tracker.enqueue("d2", workflow=CODE, recipient=" Ada@Example.com ")
    assert result.created and result.delivery.status is DeliveryStatus.SUPPRESSED
    assert result.suppression_reason == "hard_bounce"
    assert result.delivery.last_error_code == "SUPPRESSED_HARD_BOUNCE"
    assert await tracker.claim("d2") is None  # the worker sees it is final: nothing to send
    again = await tracker.enqueue("d2", workflow=CODE, recipient=ADA)
    assert not again.created and again.suppression_reason == "hard_bounce"
    trail = await events(owner_conn, "d2")
    assert [e["status"] for e in trail] == ["queued", "suppressed"]
    assert json.loads(trail[1]["payload"])["suppression"]["reason"] == "hard_bounce"
    # A report for it changes nothing and breaks nothing (a batch neighbour still lands).
    late = await tracker.mark_sent("d2", attempt=0)
    assert not late.changed and late.status is DeliveryStatus.SUPPRESSED


async def test_soft_bounces_do_not_suppress_and_complaints_do(
    tracker: DeliveryTracker, owner_conn: asyncpg.Connection
) -> None:
    await sent(tracker, "d1")
    await outcome(tracker, "d1", OutcomeKind.BOUNCED, 1, permanent=False)
    assert await owner_conn.fetchval("SELECT count(*) FROM email.suppressions") == 0
    await outcome(tracker, "d1", OutcomeKind.COMPLAINED, 2)
    assert await owner_conn.fetchval("SELECT reason FROM email.suppressions") == "complaint"
    result = await tracker.enqueue("d2", workflow=CODE, recipient=ADA)
    assert result.suppression_reason == "complaint"


async def test_enqueue_many_suppresses_only_the_suppressed_recipients(
    tracker: DeliveryTracker, owner_engine: AsyncEngine
) -> None:
    await suppressions.add(owner_engine, ADA, detail="asked by phone")
    results = await tracker.enqueue_many(
        [
            NewDelivery("b1", CODE, ADA),
            NewDelivery("b2", CODE, "bob@example.com"),
            NewDelivery("b1", CODE, ADA),
        ]
    )
    assert [(r.delivery.status, r.created) for r in results] == [
        (DeliveryStatus.SUPPRESSED, True),
        (DeliveryStatus.QUEUED, True),
        (DeliveryStatus.SUPPRESSED, False),
    ]
    assert results[0].suppression_reason == "manual"


async def test_a_password_reset_may_go_to_a_hard_bounced_address_and_clears_it(
    tracker: DeliveryTracker, owner_engine: AsyncEngine, owner_conn: asyncpg.Connection
) -> None:
    await policies.set_policy(owner_engine, RESET, send_despite_suppression=["hard_bounce"])
    await sent(tracker, "d1")
    await outcome(tracker, "d1", OutcomeKind.BOUNCED, 1, permanent=True)
    blocked = await tracker.enqueue("d2", workflow=CODE, recipient=ADA)
    assert blocked.suppression_reason == "hard_bounce"
    await sent(tracker, "reset-1", RESET)  # not suppressed: the user must not be locked out
    # It is delivered: the mailbox works again, the entry clears itself (Postal's rule).
    await outcome(tracker, "reset-1", OutcomeKind.DELIVERED, 2)
    assert await owner_conn.fetchval("SELECT count(*) FROM email.suppressions") == 0
    result = await tracker.enqueue("d3", workflow=CODE, recipient=ADA)
    assert result.delivery.status is DeliveryStatus.QUEUED


async def test_a_complaint_is_not_sent_through_by_a_hard_bounce_policy(
    tracker: DeliveryTracker, owner_engine: AsyncEngine
) -> None:
    await policies.set_policy(owner_engine, RESET, send_despite_suppression=["hard_bounce"])
    await sent(tracker, "d1")
    await outcome(tracker, "d1", OutcomeKind.COMPLAINED, 1)
    result = await tracker.enqueue("reset-1", workflow=RESET, recipient=ADA)
    assert result.suppression_reason == "complaint"


async def test_entries_expire_by_the_workflow_policy(
    tracker: DeliveryTracker, owner_engine: AsyncEngine, owner_conn: asyncpg.Connection
) -> None:
    await policies.set_policy(owner_engine, CODE, suppress_for=timedelta(days=7))
    await sent(tracker, "d1")
    await outcome(tracker, "d1", OutcomeKind.BOUNCED, 1, permanent=True)
    lasts = await owner_conn.fetchval("SELECT expires_at - created_at FROM email.suppressions")
    assert lasts == timedelta(days=7)
    await owner_conn.execute(  # time passes
        "UPDATE email.suppressions SET created_at = now() - interval '8 days', "
        "expires_at = now() - interval '1 day'"
    )
    result = await tracker.enqueue("d2", workflow=CODE, recipient=ADA)
    assert result.delivery.status is DeliveryStatus.QUEUED
    assert await suppressions.check(owner_engine, ADA) is None
    # A new hard bounce starts the expired entry afresh.
    await outcome(tracker, "d1", OutcomeKind.BOUNCED, 2, permanent=True)
    entry = await suppressions.check(owner_engine, ADA)
    assert entry is not None and entry.expires_at is not None


async def test_the_owner_edits_the_list_and_the_worker_may_not(
    owner_engine: AsyncEngine, worker_engine: AsyncEngine
) -> None:
    entry = await suppressions.add(owner_engine, " ADA@example.com", expires_in=timedelta(hours=2))
    assert entry.address == ADA and entry.reason == "manual" and entry.expires_at is not None
    assert [e.address for e in await suppressions.entries(worker_engine)] == [ADA]
    checked = await suppressions.check(worker_engine, ADA)
    assert checked is not None and checked.reason == "manual"
    with pytest.raises(PermissionDenied):
        await suppressions.remove(worker_engine, ADA)
    with pytest.raises(PermissionDenied):
        await suppressions.add(worker_engine, "bob@example.com")
    with pytest.raises(InvalidInput) as caught:
        await suppressions.add(owner_engine, "bob@example.com", reason="soft")
    assert caught.value.field == "reason"
    removed = await suppressions.remove(owner_engine, ADA)
    assert removed is not None and await suppressions.check(owner_engine, ADA) is None
    assert await suppressions.remove(owner_engine, ADA) is None


async def test_policy_fields_are_checked(owner_engine: AsyncEngine) -> None:
    with pytest.raises(InvalidInput) as caught:
        await policies.set_policy(owner_engine, RESET, send_despite_suppression=["soft"])
    assert caught.value.field == "send_despite_suppression"
    with pytest.raises(InvalidInput) as caught:
        await policies.set_policy(owner_engine, RESET, suppress_for=timedelta(minutes=5))
    assert caught.value.field == "suppress_for"
    policy = await policies.set_policy(owner_engine, RESET, send_despite_suppression=None)
    assert policy.send_despite_suppression == ()


async def test_a_forged_outcome_for_a_suppressed_delivery_neither_clears_nor_delivers(
    tracker: DeliveryTracker, owner_conn: asyncpg.Connection
) -> None:
    """The worker login records outcomes; one for a delivery that was never sent (it was
    suppressed) matches nothing: the hard bounce stays, and so does the suppression."""
    await sent(tracker, "d1")
    await outcome(tracker, "d1", OutcomeKind.BOUNCED, 1, permanent=True)
    blocked = await tracker.enqueue("d2", workflow=CODE, recipient=ADA)
    assert blocked.delivery.status is DeliveryStatus.SUPPRESSED

    await tracker.record_outcome(
        ProviderEvent(
            provider="ses",
            event_id="forged",
            kind=OutcomeKind.DELIVERED,
            occurred_at=T0 + timedelta(minutes=5),
            provider_message_id=None,
            delivery_id="d2",
            recipient=ADA,
            permanent=None,
            reason=None,
            smtp_code=None,
            provider_event_type="delivered",
        )
    )

    assert await owner_conn.fetchval("SELECT reason FROM email.suppressions") == "hard_bounce"
    assert (
        await owner_conn.fetchval(
            "SELECT count(*) FROM email.delivery_outcomes WHERE delivery_id = 'd2'"
        )
        == 0
    )
    again = await tracker.enqueue("d3", workflow=CODE, recipient=ADA)
    assert again.delivery.status is DeliveryStatus.SUPPRESSED


async def test_a_bounce_leaves_a_manual_entry_whole(
    tracker: DeliveryTracker, owner_engine: AsyncEngine, owner_conn: asyncpg.Connection
) -> None:
    """An operator's entry is stronger than a bounce: its note, source and expiry stay."""
    await sent(tracker, "d1")
    added = await suppressions.add(
        owner_engine, ADA, detail="asked by phone, ticket 123", expires_in=timedelta(days=30)
    )
    await outcome(tracker, "d1", OutcomeKind.BOUNCED, 1, permanent=True, reason="550 5.1.1")

    entry = await owner_conn.fetchrow("SELECT * FROM email.suppressions")
    assert (entry["reason"], entry["detail"], entry["source_delivery_id"]) == (
        "manual",
        "asked by phone, ticket 123",
        None,
    )
    assert entry["expires_at"] == added.expires_at
