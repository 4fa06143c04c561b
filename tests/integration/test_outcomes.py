"""Provider facts per attempt and provider outcomes (revision 0010), run as the worker login
in both commit modes; arrangement and assertions through the owner's connection."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from email_delivery import DeliveryStatus, DeliveryTracker, InvalidInput, policies, queries, rules
from email_delivery.outcomes import provider_order
from email_delivery.providers import OutcomeKind, ProviderEvent, postmark, sendgrid
from tests.support.cluster import DASHBOARD_LOGIN, WORKER_LOGIN, Cluster
from tests.support.db import events
from tests.unit.providers.support import DELIVERY_ID, body_of, fixture

WF = "verification-code"
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["per-call", "group-commit"])
async def tracker(
    worker_engine: AsyncEngine, request: pytest.FixtureRequest
) -> AsyncIterator[DeliveryTracker]:
    async with DeliveryTracker(
        worker_engine, group_commit=request.param == "group-commit"
    ) as tracker:
        yield tracker


async def sent(
    tracker: DeliveryTracker, delivery_id: str = "d1", message_id: str | None = "pm-1", **kw: Any
) -> None:
    recipient = kw.pop("recipient", "ada@example.com")
    await tracker.enqueue(delivery_id, workflow=kw.pop("workflow", WF), recipient=recipient)
    claim = await tracker.claim(delivery_id)
    assert claim is not None
    await tracker.mark_sent(
        delivery_id,
        attempt=claim.attempt,
        provider="postmark" if message_id else None,
        provider_message_id=message_id,
        **kw,
    )


@pytest.fixture
async def worker(cluster: Cluster, database: str) -> AsyncIterator[asyncpg.Connection]:
    """The worker login typing raw SQL (any language's client)."""
    conn = await asyncpg.connect(cluster.dsn(database, WORKER_LOGIN))
    yield conn
    await conn.close()


@pytest.fixture
async def reader_conn(cluster: Cluster, database: str) -> AsyncIterator[asyncpg.Connection]:
    """A dashboard login (email_reader)."""
    conn = await asyncpg.connect(cluster.dsn(database, DASHBOARD_LOGIN))
    yield conn
    await conn.close()


def event(kind: OutcomeKind, n: int = 1, **kw: Any) -> ProviderEvent:
    values: dict[str, Any] = {
        "provider": "postmark",
        "event_id": f"ev-{n}",
        "kind": kind,
        "occurred_at": T0 + timedelta(seconds=n),
        "provider_message_id": "pm-1",
        "delivery_id": None,
        "recipient": "ada@example.com",
        "permanent": None,
        "reason": None,
        "smtp_code": None,
        "provider_event_type": kind.value,
    }
    values.update(kw)
    return ProviderEvent(**values)


# -- 1. provider facts ---------------------------------------------------------------------


async def test_a_report_without_facts_stores_none(
    tracker: DeliveryTracker, owner_conn: asyncpg.Connection
) -> None:
    await sent(tracker, message_id=None)
    assert await owner_conn.fetchval("SELECT count(*) FROM email.delivery_attempts") == 0
    (event_row,) = [e for e in await events(owner_conn, "d1") if e["status"] == "sent"]
    assert json.loads(event_row["payload"]) == {"reported_attempt": 1}


async def test_sent_facts_are_typed_and_on_the_audit_event(
    tracker: DeliveryTracker, owner_conn: asyncpg.Connection
) -> None:
    await sent(tracker, reply_code=250, duration=timedelta(milliseconds=812.4))
    row = await owner_conn.fetchrow("SELECT * FROM email.delivery_attempts")
    assert (row["delivery_id"], row["attempt"], row["result"], row["workflow"]) == (
        "d1",
        1,
        "sent",
        WF,
    )
    assert (row["provider"], row["provider_message_id"], row["reply_code"], row["duration_ms"]) == (
        "postmark",
        "pm-1",
        250,
        812,
    )
    (event_row,) = [e for e in await events(owner_conn, "d1") if e["status"] == "sent"]
    assert json.loads(event_row["payload"]) == {
        "provider": "postmark",
        "provider_message_id": "pm-1",
        "reply_code": 250,
        "duration_ms": 812,
        "reported_attempt": 1,
    }
    assert await tracker.find_by_provider_message_id("postmark", "pm-1") == "d1"
    assert await tracker.find_by_provider_message_id("ses", "pm-1") is None


async def test_a_message_id_belongs_to_one_delivery_per_provider(
    tracker: DeliveryTracker, owner_conn: asyncpg.Connection
) -> None:
    await sent(tracker, "d1", "same")
    await sent(tracker, "d2", "same")  # a provider bug, or a forged report: first one keeps it
    await tracker.enqueue("d3", workflow=WF, recipient="bob@example.com")
    claim = await tracker.claim("d3")
    assert claim is not None
    await tracker.mark_sent("d3", attempt=claim.attempt, provider="ses", provider_message_id="same")
    rows = await owner_conn.fetch(
        "SELECT delivery_id, provider FROM email.delivery_attempts "
        "WHERE provider_message_id = 'same' ORDER BY delivery_id"
    )
    assert [tuple(r) for r in rows] == [("d1", "postmark"), ("d3", "ses")]
    plan = await owner_conn.fetchval(
        "EXPLAIN (FORMAT JSON) SELECT delivery_id FROM email.delivery_attempts "
        "WHERE provider = 'ses' AND provider_message_id = 'same'"
    )
    assert "ix_delivery_attempts_provider_message_id" in str(plan)


async def test_failed_facts_are_kept_for_the_live_attempt_only(
    tracker: DeliveryTracker, owner_conn: asyncpg.Connection
) -> None:
    await tracker.enqueue("d1", workflow=WF, recipient="ada@example.com")
    claim = await tracker.claim("d1")
    assert claim is not None
    for _ in range(2):  # the second report is of a superseded attempt: nothing kept
        await tracker.mark_failed(
            "d1",
            attempt=claim.attempt,
            error=("SMTP_421", "busy"),
            provider="mailgun",
            reply_code=421,
            duration=timedelta(seconds=2),
        )
    rows = await owner_conn.fetch(
        "SELECT result, provider, reply_code, duration_ms FROM email.delivery_attempts"
    )
    assert [tuple(r) for r in rows] == [("failed", "mailgun", 421, 2000)]
    (retrying,) = [e for e in await events(owner_conn, "d1") if e["status"] == "retrying"]
    assert json.loads(retrying["payload"]) == {
        "provider": "mailgun",
        "reply_code": 421,
        "duration_ms": 2000,
    }


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"provider": "Postmark"}, "provider"),
        ({"provider_message_id": "pm-1"}, "provider"),
        ({"provider": "ses", "provider_message_id": "naïve"}, "provider_message_id"),
        ({"provider": "ses", "provider_message_id": "x" * 151}, "provider_message_id"),
        ({"reply_code": 99}, "reply_code"),
        ({"reply_code": 600}, "reply_code"),
        ({"duration": timedelta(seconds=-1)}, "duration"),
        ({"duration": 1.5}, "duration"),
    ],
)
async def test_bad_facts_are_refused_before_anything_is_written(
    worker_tracker: DeliveryTracker,
    owner_conn: asyncpg.Connection,
    kwargs: dict[str, Any],
    field: str,
) -> None:
    await worker_tracker.enqueue("d1", workflow=WF, recipient="ada@example.com")
    claim = await worker_tracker.claim("d1")
    assert claim is not None
    with pytest.raises(InvalidInput) as caught:
        await worker_tracker.mark_sent("d1", attempt=claim.attempt, **kwargs)
    assert caught.value.field == field
    assert await owner_conn.fetchval("SELECT status FROM email.deliveries") == "in_progress"


async def test_the_database_refuses_the_same_bad_facts(worker: asyncpg.Connection) -> None:
    await worker.execute("SELECT email.enqueue_delivery('d1', 'x', 'a@example.com', '{}', NULL)")
    await worker.execute("SELECT email.claim_delivery('d1')")
    with pytest.raises(asyncpg.CheckViolationError, match="provider_message_id_format"):
        await worker.execute("SELECT email.mark_delivery_sent('d1', 1, NULL, NULL, 'pm-1')")
    with pytest.raises(asyncpg.CheckViolationError, match="reply_code_range"):
        await worker.execute("SELECT email.mark_delivery_sent('d1', 1, NULL, 'ses', 'm', 700)")
    assert await worker.fetchval("SELECT status FROM email.deliveries") == "in_progress"


# -- 2. outcomes ---------------------------------------------------------------------------


async def test_an_outcome_is_a_separate_fact_and_sent_stays_final(
    tracker: DeliveryTracker, owner_conn: asyncpg.Connection
) -> None:
    await sent(tracker)
    result = await tracker.record_outcome(event(OutcomeKind.DELIVERED))
    assert (result.delivery_id, result.recorded, result.matched, result.changed) == (
        "d1",
        True,
        True,
        True,
    )
    assert result.outcome is OutcomeKind.DELIVERED
    delivery = await tracker.get("d1")
    assert delivery is not None and delivery.status is DeliveryStatus.SENT
    outcome = await tracker.outcome("d1")
    assert outcome is not None
    assert (outcome.outcome, outcome.provider, outcome.delivered_at, outcome.events) == (
        OutcomeKind.DELIVERED,
        "postmark",
        T0 + timedelta(seconds=1),
        1,
    )
    assert [e.kind for e in await tracker.outcome_events("d1")] == [OutcomeKind.DELIVERED]


async def test_one_provider_event_is_recorded_once(
    tracker: DeliveryTracker, owner_conn: asyncpg.Connection
) -> None:
    await sent(tracker)
    first = await tracker.record_outcome(event(OutcomeKind.DELIVERED))
    again = await tracker.record_outcome(event(OutcomeKind.DELIVERED))
    assert first.recorded and not again.recorded and not again.changed
    assert again.delivery_id == "d1" and again.outcome is OutcomeKind.DELIVERED
    assert await owner_conn.fetchval("SELECT count(*) FROM email.outcome_events") == 1
    assert await owner_conn.fetchval("SELECT events FROM email.delivery_outcomes") == 1


async def test_a_late_delivered_never_erases_a_bounce(tracker: DeliveryTracker) -> None:
    await sent(tracker)
    await tracker.record_outcome(event(OutcomeKind.BOUNCED, 1, permanent=False, reason="full"))
    late = await tracker.record_outcome(event(OutcomeKind.DELIVERED, 2))
    assert not late.changed and late.outcome is OutcomeKind.BOUNCED
    hard = await tracker.record_outcome(event(OutcomeKind.BOUNCED, 3, permanent=True))
    assert hard.changed and hard.permanent is True
    outcome = await tracker.outcome("d1")
    assert outcome is not None
    assert (outcome.outcome, outcome.permanent, outcome.events) == (OutcomeKind.BOUNCED, True, 3)
    assert outcome.delivered_at == T0 + timedelta(seconds=2)  # still a fact of its own


@pytest.mark.parametrize(
    "order", list(itertools.permutations(range(4))), ids=lambda o: "".join(map(str, o))
)
async def test_any_arrival_order_ends_in_the_same_outcome(
    worker_tracker: DeliveryTracker, order: tuple[int, ...]
) -> None:
    await sent(worker_tracker)
    kinds = [
        event(OutcomeKind.DEFERRED, 1),
        event(OutcomeKind.DELIVERED, 2),
        event(OutcomeKind.BOUNCED, 3, permanent=True),
        event(OutcomeKind.DEFERRED, 4),
    ]
    for index in order:
        await worker_tracker.record_outcome(kinds[index])
        await worker_tracker.record_outcome(kinds[index])  # and each twice
    outcome = await worker_tracker.outcome("d1")
    assert outcome is not None
    assert (outcome.outcome, outcome.permanent, outcome.events) == (OutcomeKind.BOUNCED, True, 4)
    assert outcome.outcome_at == T0 + timedelta(seconds=3)


async def test_an_outcome_before_its_message_id_is_kept_and_matched_by_mark_sent(
    tracker: DeliveryTracker, owner_conn: asyncpg.Connection
) -> None:
    early = await tracker.record_outcome(event(OutcomeKind.DELIVERED, provider_message_id="pm-9"))
    assert (early.recorded, early.matched, early.delivery_id, early.outcome) == (
        True,
        False,
        None,
        None,
    )
    unmatched = await owner_conn.fetch(
        "SELECT provider_message_id FROM email.unmatched_outcome_events"
    )
    assert [r[0] for r in unmatched] == ["pm-9"]
    await sent(tracker, "d1", "pm-9")
    outcome = await tracker.outcome("d1")
    assert outcome is not None and outcome.outcome is OutcomeKind.DELIVERED
    assert await owner_conn.fetchval("SELECT count(*) FROM email.unmatched_outcome_events") == 0
    again = await tracker.record_outcome(event(OutcomeKind.DELIVERED, provider_message_id="pm-9"))
    assert (again.recorded, again.matched, again.delivery_id) == (False, True, "d1")


async def test_an_echoed_delivery_id_matches_without_a_message_id(
    tracker: DeliveryTracker,
) -> None:
    await sent(tracker, "d1", None)
    result = await tracker.record_outcome(
        event(OutcomeKind.COMPLAINED, provider_message_id=None, delivery_id="d1")
    )
    assert result.matched and result.outcome is OutcomeKind.COMPLAINED
    # One echoing a delivery not enqueued yet waits, and match_outcomes finds it later.
    early = await tracker.record_outcome(
        event(OutcomeKind.DELIVERED, 2, provider_message_id=None, delivery_id="d2")
    )
    assert not early.matched
    assert await tracker.match_outcomes() == 0
    await tracker.enqueue("d2", workflow=WF, recipient="bob@example.com")
    assert await tracker.match_outcomes() == 1
    outcome = await tracker.outcome("d2")
    assert outcome is not None and outcome.outcome is OutcomeKind.DELIVERED


async def test_engagement_counts_only_where_the_workflow_opts_in(
    tracker: DeliveryTracker, owner_engine: AsyncEngine, owner_conn: asyncpg.Connection
) -> None:
    await sent(tracker)
    await tracker.record_outcome(event(OutcomeKind.DELIVERED, 1))
    opened = await tracker.record_outcome(event(OutcomeKind.OPENED, 2))
    assert not opened.recorded and opened.outcome is OutcomeKind.DELIVERED
    assert await owner_conn.fetchval("SELECT count(*) FROM email.outcome_events") == 1
    await policies.set_policy(owner_engine, WF, track_engagement=True)
    clicked = await tracker.record_outcome(event(OutcomeKind.CLICKED, 3))
    assert clicked.recorded and clicked.outcome is OutcomeKind.CLICKED


async def test_bad_outcomes_are_refused_before_anything_is_written(
    worker_tracker: DeliveryTracker, owner_conn: asyncpg.Connection
) -> None:
    with pytest.raises(InvalidInput) as caught:
        await worker_tracker.record_outcome({"kind": "delivered"})  # type: ignore[arg-type]
    assert caught.value.field == "event"
    with pytest.raises(InvalidInput) as caught:
        await worker_tracker.record_outcome(event(OutcomeKind.DELIVERED, provider_message_id="ü"))
    assert caught.value.field == "event.provider_message_id"
    with pytest.raises(InvalidInput) as caught:
        await worker_tracker.record_outcomes(
            [event(OutcomeKind.DELIVERED, 1), event(OutcomeKind.DELIVERED, 2, delivery_id="bad id")]
        )
    assert caught.value.field == "events[1].delivery_id"
    assert await owner_conn.fetchval("SELECT count(*) FROM email.outcome_events") == 0


async def test_the_database_refuses_bad_outcomes(worker: asyncpg.Connection) -> None:
    call = "SELECT * FROM email.record_delivery_outcome($1, 'e1', $2, now(), $3)"
    with pytest.raises(asyncpg.InvalidParameterValueError, match="unknown outcome kind"):
        await worker.execute(call, "ses", "bounced-ish", "m1")
    with pytest.raises(asyncpg.InvalidParameterValueError, match="provider_message_id or its"):
        await worker.execute(call, "ses", "delivered", None)
    with pytest.raises(asyncpg.CheckViolationError, match="provider_format"):
        await worker.execute(call, "SES", "delivered", "m1")
    assert await worker.fetchval("SELECT count(*) FROM email.outcome_events") == 0


async def test_parsed_webhooks_record_outcomes(
    tracker: DeliveryTracker, owner_conn: asyncpg.Connection
) -> None:
    """Postmark's documented samples (a delivery, then a hard bounce of the same message)
    and SendGrid's batch, through the parsers into the database; a retried batch changes
    nothing."""
    delivery = postmark.parse(body_of(fixture("postmark", "delivery.json")), {})
    bounce = postmark.parse(body_of(fixture("postmark", "bounce-hard.json")), {})
    await sent(tracker, DELIVERY_ID, delivery[0].provider_message_id)
    results = await tracker.record_outcomes([*delivery, *bounce])
    assert [r.outcome for r in results] == [OutcomeKind.DELIVERED, OutcomeKind.BOUNCED]
    assert results[1].permanent is True

    batch = sendgrid.parse(body_of(fixture("sendgrid", "batch.json")), {}, public_key=None)
    message_id = next(
        e.provider_message_id for e in batch if e.delivery_id == "01HZX4B2C3D4E5F6G7H8J9K0MN"
    )
    await sent(tracker, "01HZX4B2C3D4E5F6G7H8J9K0MN", None, recipient="bob@example.com")
    first = await tracker.record_outcomes(batch)
    retried = await tracker.record_outcomes(batch)
    assert any(r.recorded for r in first) and not any(r.recorded for r in retried)
    outcome = await tracker.outcome("01HZX4B2C3D4E5F6G7H8J9K0MN")
    assert outcome is not None and outcome.outcome is OutcomeKind.BOUNCED
    assert message_id is not None


# -- 4. provider metrics -------------------------------------------------------------------


async def test_provider_health_and_order(
    tracker: DeliveryTracker, reader_conn: asyncpg.Connection
) -> None:
    for n in range(4):
        await sent(tracker, f"good-{n}", f"g-{n}", duration=timedelta(milliseconds=100 + n))
        await tracker.record_outcome(event(OutcomeKind.DELIVERED, n, provider_message_id=f"g-{n}"))
    for n in range(4):
        delivery_id = f"bad-{n}"
        await tracker.enqueue(delivery_id, workflow=WF, recipient="bob@example.com")
        claim = await tracker.claim(delivery_id)
        assert claim is not None
        await tracker.mark_failed(
            delivery_id, attempt=claim.attempt, error=("SMTP_421", "busy"), provider="ses"
        )
    health = {row.provider: row for row in await tracker.provider_health()}
    good, bad = health["postmark"], health["ses"]
    assert (good.attempts, good.accepted, good.delivered, good.delivery_rate) == (4, 4, 4, 1.0)
    # A histogram's estimate (revision 0014): within the buckets' relative error.
    assert good.p50_send_ms == pytest.approx(101.5, rel=rules.LATENCY_RELATIVE_ERROR)
    assert (bad.attempts, bad.failed, bad.failure_rate) == (4, 4, 1.0)
    assert provider_order(list(health.values()), ["ses", "postmark"], minimum_attempts=3) == [
        "postmark",
        "ses",
    ]
    rows = await reader_conn.fetch("SELECT provider, attempts FROM email.provider_metrics_24h")
    assert sorted(tuple(r) for r in rows) == [("postmark", 4), ("ses", 4)]
    assert replace(good, attempts=0).attempts == 0


# -- 5. read side ---------------------------------------------------------------------------


async def test_workflow_stats_count_outcomes(
    worker_tracker: DeliveryTracker, owner_engine: AsyncEngine
) -> None:
    for n, kind in enumerate(
        [OutcomeKind.DELIVERED, OutcomeKind.DELIVERED, OutcomeKind.BOUNCED, OutcomeKind.COMPLAINED]
    ):
        await sent(worker_tracker, f"d{n}", f"m{n}", recipient=f"r{n}@example.com")
        extra = {"permanent": True} if kind is OutcomeKind.BOUNCED else {}
        if kind is not OutcomeKind.DELIVERED:
            await worker_tracker.record_outcome(
                event(OutcomeKind.DELIVERED, 10 + n, provider_message_id=f"m{n}")
            )
        await worker_tracker.record_outcome(event(kind, n, provider_message_id=f"m{n}", **extra))
    await sent(worker_tracker, "d9", None)  # sent, nothing heard yet
    since = datetime.now(UTC) - timedelta(hours=1)
    async with owner_engine.connect() as conn:
        (row,) = (await conn.execute(queries.workflow_stats(since=since))).mappings().all()
        (hourly,) = (
            (await conn.execute(queries.workflow_stats(since=since, bucket="hour")))
            .mappings()
            .all()
        )
    assert (row["sent"], row["delivered"], row["bounced"], row["complained"]) == (5, 4, 1, 1)
    assert (row["delivery_rate"], row["bounce_rate"], row["complaint_rate"]) == (0.8, 0.2, 0.2)
    assert (hourly["delivered"], hourly["bounced"]) == (4, 1)


async def test_status_history_and_find_show_outcome_and_provider(
    worker_tracker: DeliveryTracker, cli: Any, database: str
) -> None:
    await sent(worker_tracker, "d1", "pm-1")
    await worker_tracker.record_outcome(
        event(OutcomeKind.BOUNCED, 1, permanent=True, reason="gone")
    )
    code, out, _ = cli(database, "status", "d1", "--json", user=DASHBOARD_LOGIN)
    assert code == 0
    status = json.loads(out)
    assert (status["status"], status["outcome"], status["outcome_permanent"]) == (
        "sent",
        "bounced",
        True,
    )
    assert (status["provider"], status["provider_message_id"]) == ("postmark", "pm-1")
    code, out, _ = cli(database, "history", "d1", "--json")
    assert [e["kind"] for e in json.loads(out)["outcome_events"]] == ["bounced"]
    code, out, _ = cli(database, "history", "d1")
    assert "provider events:" in out and "bounced" in out
    code, out, _ = cli(database, "find", "--recipient", "ada@example.com")
    assert "bounced" in out
