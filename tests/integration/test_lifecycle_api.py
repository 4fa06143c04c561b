"""Every rule of the lifecycle API, one test per edge, run as the worker login.

The worker login is a member of ``email_writer`` and nothing else, so these also prove the
grants suffice. Arrangement and assertions go through a separate owner connection.
"""

from __future__ import annotations

import asyncio
import json
import smtplib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from email_delivery import (
    DeliveryConflict,
    DeliveryNotFound,
    DeliveryStatus,
    DeliveryTracker,
    InvalidInput,
    NewDelivery,
    PermissionDenied,
    SecretInInput,
    make_engine,
)
from email_delivery.rules import MAX_CALLER_JSON_BYTES
from tests.support.cluster import DASHBOARD_LOGIN, WORKER_LOGIN, Cluster
from tests.support.db import events, expire_claim, skip_backoff
from tests.unit.test_lifecycle_rules import HARMLESS_SAMPLES, SECRET_SAMPLES

S = DeliveryStatus
WF = "verification-code"


@pytest.fixture(params=["per-call", "group-commit"])
async def worker_tracker(
    worker_engine: AsyncEngine, request: pytest.FixtureRequest
) -> AsyncIterator[DeliveryTracker]:
    """Every rule holds in both commit modes: group commit runs each call through the batch
    functions (email.claim_deliveries …), which must answer exactly as the single ones."""
    async with DeliveryTracker(
        worker_engine, group_commit=request.param == "group-commit"
    ) as tracker:
        yield tracker


async def enqueue(tracker: DeliveryTracker, delivery_id: str = "d1", **kw: Any) -> None:
    kw.setdefault("workflow", WF)
    kw.setdefault("recipient", "ada@example.com")
    await tracker.enqueue(delivery_id, **kw)


async def to_status(tracker: DeliveryTracker, status: S, delivery_id: str = "d1") -> int:
    """Enqueue and drive a delivery to ``status``; returns its attempts."""
    await enqueue(tracker, delivery_id)
    if status is S.QUEUED:
        return 0
    claim = await tracker.claim(delivery_id)
    assert claim is not None
    if status is S.IN_PROGRESS:
        return claim.attempt
    if status is S.SENT:
        await tracker.mark_sent(delivery_id, attempt=claim.attempt)
    else:
        retryable, limit = {S.RETRYING: (True, 5), S.FAILED: (False, 5), S.DEAD_LETTER: (True, 1)}[
            status
        ]
        await tracker.mark_failed(
            delivery_id,
            attempt=claim.attempt,
            error=("SMTP_421", "busy"),
            retryable=retryable,
            max_attempts=limit,
        )
    return claim.attempt


async def row(conn: asyncpg.Connection, delivery_id: str = "d1") -> asyncpg.Record:
    return await conn.fetchrow("SELECT * FROM email.deliveries WHERE delivery_id = $1", delivery_id)


# -- enqueue -----------------------------------------------------------------------------


async def test_enqueue_absent_inserts_queued_with_one_event(
    worker_tracker: DeliveryTracker, owner_conn: asyncpg.Connection
) -> None:
    result = await worker_tracker.enqueue(
        "d1", workflow=WF, recipient="  Ada@Example.COM ", metadata={"team_id": 7}
    )
    assert result.created
    assert result.delivery.status is S.QUEUED
    assert result.delivery.recipient == "ada@example.com"
    assert result.delivery.metadata_ == {"team_id": 7}
    assert [e["status"] for e in await events(owner_conn, "d1")] == ["queued"]


async def test_enqueue_redelivery_changes_nothing(
    worker_tracker: DeliveryTracker, owner_conn: asyncpg.Connection
) -> None:
    await enqueue(worker_tracker)
    before = await row(owner_conn)
    # Same workflow and recipient (the recipient differs only before normalisation).
    again = await worker_tracker.enqueue("d1", workflow=WF, recipient="ADA@example.com ")
    assert not again.created
    assert await row(owner_conn) == before
    assert len(await events(owner_conn, "d1")) == 1


async def test_enqueue_redelivery_of_a_sent_delivery_changes_nothing(
    worker_tracker: DeliveryTracker, owner_conn: asyncpg.Connection
) -> None:
    await to_status(worker_tracker, S.SENT)
    again = await worker_tracker.enqueue("d1", workflow=WF, recipient="ada@example.com")
    assert not again.created
    assert again.delivery.status is S.SENT


@pytest.mark.parametrize(
    ("changes", "fields"),
    [
        ({"workflow": "invite"}, ("workflow",)),
        ({"recipient": "bob@example.com"}, ("recipient",)),
        ({"workflow": "invite", "recipient": "bob@example.com"}, ("workflow", "recipient")),
    ],
)
async def test_enqueue_conflict_names_fields_and_writes_nothing(
    worker_tracker: DeliveryTracker,
    owner_conn: asyncpg.Connection,
    changes: dict[str, str],
    fields: tuple[str, ...],
) -> None:
    await enqueue(worker_tracker)
    before = await row(owner_conn)
    with pytest.raises(DeliveryConflict) as caught:
        await enqueue(worker_tracker, **changes)
    assert caught.value.fields == fields
    assert caught.value.existing.recipient == "ada@example.com"
    assert await row(owner_conn) == before
    assert len(await events(owner_conn, "d1")) == 1


async def test_enqueue_keeps_an_aware_queued_at(worker_tracker: DeliveryTracker) -> None:
    at = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    result = await worker_tracker.enqueue("d1", workflow=WF, recipient="a@b.io", queued_at=at)
    assert result.delivery.queued_at == at


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"delivery_id": "bad id"}, "delivery_id"),
        ({"delivery_id": "-leading"}, "delivery_id"),
        ({"workflow": "Verification_Code"}, "workflow"),
        ({"recipient": "not-an-address"}, "recipient"),
        ({"queued_at": datetime(2026, 1, 1)}, "queued_at"),
        ({"metadata": ["not", "an", "object"]}, "metadata"),
        ({"metadata": {"blob": "x" * 17000}}, "metadata"),
        ({"metadata": {"invite": {"token": "abc"}}}, "metadata.invite.token"),
        ({"metadata": {"dead_letter_reference": "x"}}, "metadata.dead_letter_reference"),
    ],
)
async def test_enqueue_rejects_bad_input_before_writing(
    worker_tracker: DeliveryTracker,
    owner_conn: asyncpg.Connection,
    kwargs: dict[str, Any],
    field: str,
) -> None:
    arguments: dict[str, Any] = {"delivery_id": "d1", "workflow": WF, "recipient": "a@b.io"}
    arguments.update(kwargs)
    delivery_id = arguments.pop("delivery_id")
    with pytest.raises(InvalidInput) as caught:
        await worker_tracker.enqueue(delivery_id, **arguments)
    assert caught.value.field == field
    assert await owner_conn.fetchval("SELECT count(*) FROM email.deliveries") == 0


@pytest.mark.parametrize(
    ("delivery_id", "recipient", "metadata", "constraint"),
    [
        ("bad id", "a@b.io", "{}", "ck_deliveries_delivery_id_format"),
        ("d1", "Ada@B.io", "{}", "ck_deliveries_recipient_format"),
        ("d1", "a@b.io", "[1]", "ck_deliveries_metadata_object"),
    ],
)
async def test_database_rejects_the_same_from_any_client(
    cluster: Cluster,
    database: str,
    delivery_id: str,
    recipient: str,
    metadata: str,
    constraint: str,
) -> None:
    conn = await asyncpg.connect(cluster.dsn(database, WORKER_LOGIN))
    try:
        with pytest.raises(asyncpg.CheckViolationError) as caught:
            await conn.fetch(
                "SELECT * FROM email.enqueue_delivery($1, 'invite', $2, $3::jsonb, NULL)",
                delivery_id,
                recipient,
                metadata,
            )
        assert caught.value.constraint_name == constraint
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("sql", "args", "message"),
    [
        (
            "SELECT * FROM email.enqueue_delivery('d1', 'invite', 'a@b.io', $1::jsonb, NULL)",
            [json.dumps({"x": "y" * MAX_CALLER_JSON_BYTES})],
            "metadata is larger than",
        ),
        (
            "SELECT * FROM email.enqueue_delivery('d1', 'invite', 'a@b.io', $1::jsonb, NULL)",
            [json.dumps({"requeued_at_attempt": 1000})],
            "lifecycle's keys",
        ),
        (
            "SELECT * FROM email.enqueue_deliveries(ARRAY['d1', 'd2'], ARRAY['invite', 'invite'], "
            "ARRAY['a@b.io', 'b@b.io'], ARRAY['{}', $1]::jsonb[], "
            "ARRAY[NULL, NULL]::timestamptz[])",
            [json.dumps({"dead_letter_reference": "x"})],
            "lifecycle's keys",
        ),
    ],
)
async def test_database_rejects_what_python_rejects_in_metadata(
    cluster: Cluster,
    database: str,
    owner_conn: asyncpg.Connection,
    sql: str,
    args: list[Any],
    message: str,
) -> None:
    conn = await asyncpg.connect(cluster.dsn(database, WORKER_LOGIN))
    try:
        with pytest.raises(asyncpg.InvalidParameterValueError, match=message):
            await conn.fetch(sql, *args)
    finally:
        await conn.close()
    assert await owner_conn.fetchval("SELECT count(*) FROM email.deliveries") == 0


async def test_a_payload_python_accepts_always_fits_beside_the_lifecycles_keys(
    worker_tracker: DeliveryTracker, owner_conn: asyncpg.Connection
) -> None:
    # The largest payload the API accepts, plus the key mark_sent adds, still fits 16 KiB.
    padding = MAX_CALLER_JSON_BYTES - len(json.dumps({"smtp": ""}).encode())
    payload = {"smtp": "y" * padding}
    await enqueue(worker_tracker)
    claim = await worker_tracker.claim("d1")
    assert claim is not None
    with pytest.raises(InvalidInput) as caught:
        await worker_tracker.mark_sent(
            "d1", attempt=claim.attempt, payload={"smtp": "y" * (padding + 1)}
        )
    assert caught.value.field == "payload"
    result = await worker_tracker.mark_sent("d1", attempt=claim.attempt, payload=payload)
    assert result.changed and result.status is S.SENT
    stored = await owner_conn.fetchval(
        "SELECT payload FROM email.delivery_events WHERE delivery_id = 'd1' AND status = 'sent'"
    )
    assert json.loads(stored)["smtp"] == payload["smtp"]


async def test_database_rejects_a_malformed_dead_letter_reference(
    cluster: Cluster, database: str, worker_tracker: DeliveryTracker
) -> None:
    await enqueue(worker_tracker)
    conn = await asyncpg.connect(cluster.dsn(database, WORKER_LOGIN))
    try:
        for reference in ("", "has space", "x" * 201):
            with pytest.raises(asyncpg.InvalidParameterValueError, match="reference must be"):
                await conn.fetch(
                    "SELECT * FROM email.mark_delivery_dead_letter('d1', $1)", reference
                )
    finally:
        await conn.close()


async def test_enqueue_many_one_batch_with_duplicates_and_conflicts(
    worker_tracker: DeliveryTracker, owner_conn: asyncpg.Connection
) -> None:
    await enqueue(worker_tracker, "old")
    results = await worker_tracker.enqueue_many(
        [
            NewDelivery("n1", WF, "A@x.io"),
            {"delivery_id": "old", "workflow": WF, "recipient": "ada@example.com"},
            NewDelivery("n1", WF, "a@x.io"),  # the same event twice in one batch
            NewDelivery("old", "invite", "ada@example.com"),  # conflict
            NewDelivery("n2", "invite", "b@x.io", metadata={"team_id": 1}),
        ]
    )
    assert [(r.delivery.delivery_id, r.created, r.conflicts) for r in results] == [
        ("n1", True, ()),
        ("old", False, ()),
        ("n1", False, ()),
        ("old", False, ("workflow",)),
        ("n2", True, ()),
    ]
    assert results[0].delivery.recipient == "a@x.io"
    assert (
        await owner_conn.fetchval("SELECT workflow FROM email.deliveries WHERE delivery_id = 'old'")
        == WF
    )
    assert await owner_conn.fetchval("SELECT count(*) FROM email.delivery_events") == 3


async def test_enqueue_many_validates_every_item_before_writing(
    worker_tracker: DeliveryTracker, owner_conn: asyncpg.Connection
) -> None:
    with pytest.raises(SecretInInput) as caught:
        await worker_tracker.enqueue_many(
            [NewDelivery("n1", WF, "a@x.io"), NewDelivery("n2", WF, "b@x.io", {"otp": "1"})]
        )
    assert caught.value.field == "deliveries[1].metadata.otp"
    assert await owner_conn.fetchval("SELECT count(*) FROM email.deliveries") == 0


# -- claim -------------------------------------------------------------------------------


async def test_claim_queued_starts_attempt_one(
    worker_tracker: DeliveryTracker, owner_conn: asyncpg.Connection
) -> None:
    await enqueue(worker_tracker)
    claim = await worker_tracker.claim("d1")
    assert claim is not None
    assert claim.attempt == 1
    assert claim.delivery.status is S.IN_PROGRESS
    assert claim.delivery.last_attempted_at is not None
    assert [(e["status"], e["attempt"]) for e in await events(owner_conn, "d1")] == [
        ("queued", 0),
        ("in_progress", 1),
    ]


async def test_claim_retrying_starts_the_next_attempt(
    worker_tracker: DeliveryTracker, owner_conn: asyncpg.Connection
) -> None:
    await to_status(worker_tracker, S.RETRYING)
    await skip_backoff(owner_conn, "d1")
    claim = await worker_tracker.claim("d1")
    assert claim is not None
    assert claim.attempt == 2


async def test_claim_of_a_live_claim_returns_none_and_changes_nothing(
    worker_tracker: DeliveryTracker, owner_conn: asyncpg.Connection
) -> None:
    await to_status(worker_tracker, S.IN_PROGRESS)
    before = await row(owner_conn)
    assert await worker_tracker.claim("d1") is None
    assert await row(owner_conn) == before


async def test_claim_takes_over_an_expired_lease(
    worker_tracker: DeliveryTracker, owner_conn: asyncpg.Connection
) -> None:
    await to_status(worker_tracker, S.IN_PROGRESS)
    await expire_claim(owner_conn, "d1", "6 minutes")
    claim = await worker_tracker.claim("d1", lease=timedelta(minutes=5))
    assert claim is not None
    assert claim.attempt == 2


@pytest.mark.parametrize("status", [S.SENT, S.FAILED, S.DEAD_LETTER])
async def test_claim_of_a_finished_delivery_returns_none(
    worker_tracker: DeliveryTracker, owner_conn: asyncpg.Connection, status: S
) -> None:
    await to_status(worker_tracker, status)
    before = await row(owner_conn)
    assert await worker_tracker.claim("d1") is None
    assert await row(owner_conn) == before


async def test_claim_of_an_unknown_delivery_raises(worker_tracker: DeliveryTracker) -> None:
    with pytest.raises(DeliveryNotFound):
        await worker_tracker.claim("nope")


async def test_claim_rejects_a_non_positive_lease(worker_tracker: DeliveryTracker) -> None:
    with pytest.raises(InvalidInput) as caught:
        await worker_tracker.claim("d1", lease=timedelta(0))
    assert caught.value.field == "lease"


async def test_of_n_concurrent_claimers_exactly_one_wins(
    cluster: Cluster, database: str, worker_tracker: DeliveryTracker
) -> None:
    await enqueue(worker_tracker)
    engines = [make_engine(cluster.url(database, WORKER_LOGIN), pool_size=1) for _ in range(8)]
    trackers = [DeliveryTracker(engine) for engine in engines]
    try:
        claims = await asyncio.gather(*(t.claim("d1") for t in trackers))
    finally:
        for tracker, engine in zip(trackers, engines, strict=True):
            await tracker.aclose()
            await engine.dispose()
    assert sum(c is not None for c in claims) == 1


# -- mark_sent ---------------------------------------------------------------------------


async def test_mark_sent_from_in_progress(
    worker_tracker: DeliveryTracker, owner_conn: asyncpg.Connection
) -> None:
    attempt = await to_status(worker_tracker, S.IN_PROGRESS)
    result = await worker_tracker.mark_sent("d1", attempt=attempt, payload={"smtp": "250 OK"})
    assert result.changed
    assert result.status is S.SENT
    assert result.delivery.sent_at is not None
    last = (await events(owner_conn, "d1"))[-1]
    assert last["status"] == "sent"
    assert json.loads(last["payload"]) == {"smtp": "250 OK", "reported_attempt": 1}


@pytest.mark.parametrize("status", [S.QUEUED, S.RETRYING, S.FAILED, S.DEAD_LETTER])
async def test_mark_sent_from_any_other_status_clears_the_error(
    worker_tracker: DeliveryTracker, status: S
) -> None:
    attempt = await to_status(worker_tracker, status)
    result = await worker_tracker.mark_sent("d1", attempt=attempt)
    assert result.changed
    assert result.status is S.SENT
    assert result.delivery.last_error_code is None
    assert result.delivery.last_error_message is None


async def test_mark_sent_when_already_sent_changes_nothing(
    worker_tracker: DeliveryTracker, owner_conn: asyncpg.Connection
) -> None:
    await to_status(worker_tracker, S.SENT)
    before = await row(owner_conn)
    result = await worker_tracker.mark_sent("d1", attempt=1, payload={"smtp": "250"})
    assert not result.changed
    assert await row(owner_conn) == before
    assert [e["status"] for e in await events(owner_conn, "d1")].count("sent") == 1


async def test_a_superseded_attempts_success_still_counts(
    worker_tracker: DeliveryTracker, owner_conn: asyncpg.Connection
) -> None:
    await to_status(worker_tracker, S.IN_PROGRESS)
    await expire_claim(owner_conn, "d1", "1 hour")
    assert (await worker_tracker.claim("d1")) is not None  # attempt 2 took over
    result = await worker_tracker.mark_sent("d1", attempt=1)
    assert result.changed
    assert result.status is S.SENT


async def test_a_no_op_does_not_leave_its_payload_for_the_next_statement(
    cluster: Cluster, database: str, worker_tracker: DeliveryTracker
) -> None:
    await to_status(worker_tracker, S.SENT)
    await to_status(worker_tracker, S.RETRYING, "d2")
    # The owner, the one login that may still update by hand, in the same transaction.
    conn = await asyncpg.connect(cluster.dsn(database))
    try:
        async with conn.transaction():
            await conn.fetch("SELECT * FROM email.mark_delivery_sent('d1', 1, '{\"x\": 1}')")
            await conn.execute(
                "UPDATE email.deliveries SET status = 'in_progress', "
                "lease_expires_at = now() + interval '5 minutes' WHERE delivery_id = 'd2'"
            )
        payload = await conn.fetchval(
            "SELECT payload FROM email.delivery_events WHERE delivery_id = 'd2' "
            "ORDER BY id DESC LIMIT 1"
        )
    finally:
        await conn.close()
    assert payload is None


# -- mark_failed -------------------------------------------------------------------------


async def test_mark_failed_retryable_with_attempts_left_retries(
    worker_tracker: DeliveryTracker, owner_conn: asyncpg.Connection
) -> None:
    attempt = await to_status(worker_tracker, S.IN_PROGRESS)
    result = await worker_tracker.mark_failed(
        "d1",
        attempt=attempt,
        error=("SMTP_421", "4.7.0 busy for ada@example.com, see https://x.io/s?k=1"),
        payload={"smtp": "421"},
    )
    assert result.changed
    assert result.status is S.RETRYING
    assert result.delivery.last_error_code == "SMTP_421"
    assert (
        result.delivery.last_error_message
        == "4.7.0 busy for [email], see https://x.io/s?[redacted]"
    )
    last = (await events(owner_conn, "d1"))[-1]
    assert (last["status"], last["error_code"]) == ("retrying", "SMTP_421")
    assert json.loads(last["payload"]) == {"smtp": "421"}


async def test_mark_failed_retryable_and_exhausted_dead_letters(
    worker_tracker: DeliveryTracker,
) -> None:
    attempt = await to_status(worker_tracker, S.IN_PROGRESS)
    result = await worker_tracker.mark_failed(
        "d1", attempt=attempt, error=TimeoutError("slow"), max_attempts=1
    )
    assert result.status is S.DEAD_LETTER
    assert result.delivery.last_error_code == "TimeoutError"


async def test_mark_failed_not_retryable_fails_with_the_smtp_code(
    worker_tracker: DeliveryTracker,
) -> None:
    attempt = await to_status(worker_tracker, S.IN_PROGRESS)
    error = smtplib.SMTPAuthenticationError(535, b"5.7.8 Authentication credentials invalid")
    result = await worker_tracker.mark_failed("d1", attempt=attempt, error=error, retryable=False)
    assert result.status is S.FAILED
    assert result.delivery.last_error_code == "SMTP_535"


async def test_mark_failed_of_a_superseded_attempt_changes_nothing(
    worker_tracker: DeliveryTracker, owner_conn: asyncpg.Connection
) -> None:
    await to_status(worker_tracker, S.IN_PROGRESS)
    await expire_claim(owner_conn, "d1", "1 hour")
    assert (await worker_tracker.claim("d1")) is not None
    before = await row(owner_conn)
    result = await worker_tracker.mark_failed("d1", attempt=1, error=("SMTP_421", "late"))
    assert not result.changed
    assert result.delivery.attempts == 2
    assert await row(owner_conn) == before


@pytest.mark.parametrize("status", [S.QUEUED, S.RETRYING, S.SENT, S.FAILED, S.DEAD_LETTER])
async def test_mark_failed_outside_in_progress_changes_nothing(
    worker_tracker: DeliveryTracker, owner_conn: asyncpg.Connection, status: S
) -> None:
    attempt = await to_status(worker_tracker, status)
    before = await row(owner_conn)
    result = await worker_tracker.mark_failed("d1", attempt=max(attempt, 1), error=("E", "m"))
    assert not result.changed
    assert await row(owner_conn) == before


async def test_database_sanitises_messages_from_any_client(
    cluster: Cluster, database: str, worker_tracker: DeliveryTracker
) -> None:
    await to_status(worker_tracker, S.IN_PROGRESS)
    conn = await asyncpg.connect(cluster.dsn(database, WORKER_LOGIN))
    try:
        message = await conn.fetchval(
            "SELECT last_error_message FROM email.mark_delivery_failed('d1', 1, 'X', "
            "'to bob@example.com token=abc', true, 5, NULL)"
        )
    finally:
        await conn.close()
    assert message == "to [email] token=[redacted]"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"blob": "x" * 17000}, "payload"),
        ({"smtp": {"auth_token": "abc"}}, "payload.smtp.auth_token"),
        ({"link": "https://app.io/reset?token=abc"}, "payload.link"),
    ],
)
async def test_mark_calls_reject_bad_payloads_before_writing(
    worker_tracker: DeliveryTracker,
    owner_conn: asyncpg.Connection,
    payload: dict[str, Any],
    field: str,
) -> None:
    attempt = await to_status(worker_tracker, S.IN_PROGRESS)
    before = await row(owner_conn)
    with pytest.raises(InvalidInput) as sent:
        await worker_tracker.mark_sent("d1", attempt=attempt, payload=payload)
    with pytest.raises(InvalidInput) as failed:
        await worker_tracker.mark_failed("d1", attempt=attempt, error=("E", "m"), payload=payload)
    assert sent.value.field == failed.value.field == field
    assert await row(owner_conn) == before


async def test_database_rejects_an_overlong_error_code_from_any_client(
    cluster: Cluster, database: str, worker_tracker: DeliveryTracker
) -> None:
    await to_status(worker_tracker, S.IN_PROGRESS)
    conn = await asyncpg.connect(cluster.dsn(database, WORKER_LOGIN))
    try:
        with pytest.raises(asyncpg.CheckViolationError) as caught:
            await conn.fetch(
                "SELECT * FROM email.mark_delivery_failed('d1', 1, repeat('X', 65), 'm', "
                "true, 5, NULL)"
            )
    finally:
        await conn.close()
    assert caught.value.constraint_name == "ck_deliveries_last_error_code_length"


@pytest.mark.parametrize(
    "message",
    [
        "421 4.7.0 Try again later",
        "rcpt Ada.Lovelace@Example.co.uk: https://h.io/p?q=1#f Bearer abc password=x, ok",
        "api_key: sk_live_1 code=123456 key 0123456789abcdefABCDEF0123 end\nnext\tline",
        "/var/spool/postfix/deferred/queue token: eyJhbGciOiJIUzI1NiJ9.e30.abc123DEF456ghi789",
        "é" * 2500,
    ],
)
async def test_python_and_database_sanitisers_agree(
    owner_conn: asyncpg.Connection, message: str
) -> None:
    from email_delivery.validation import sanitize_error_message

    in_db = await owner_conn.fetchval("SELECT email.sanitize_error_message($1)", message)
    assert in_db == sanitize_error_message(message)


@pytest.mark.parametrize(("metadata", "path"), SECRET_SAMPLES)
async def test_database_finds_the_same_secrets(
    owner_conn: asyncpg.Connection, metadata: dict[str, object], path: str
) -> None:
    found = await owner_conn.fetchval("SELECT email.find_secret($1::jsonb)", json.dumps(metadata))
    key = path.rsplit(".", 1)[-1]
    assert found in (key, "a link with a secret")


@pytest.mark.parametrize("metadata", HARMLESS_SAMPLES)
async def test_database_lets_the_same_harmless_metadata_pass(
    owner_conn: asyncpg.Connection, metadata: dict[str, object]
) -> None:
    assert (
        await owner_conn.fetchval("SELECT email.find_secret($1::jsonb)", json.dumps(metadata))
        is None
    )


@pytest.mark.parametrize(
    "call",
    [
        "SELECT * FROM email.enqueue_delivery('d2', 'invite', 'a@b.io', '{\"otp\": \"1\"}', NULL)",
        "SELECT * FROM email.enqueue_deliveries('{d2}', '{invite}', '{a@b.io}', "
        'ARRAY[\'{"x": {"password": "p"}}\'::jsonb], NULL)',
        "SELECT * FROM email.mark_delivery_sent('d1', 1, '{\"token\": \"t\"}')",
        "SELECT * FROM email.mark_delivery_failed('d1', 1, 'E', 'm', true, 5, "
        '\'{"link": "https://a.io/x?sig=1"}\')',
    ],
)
async def test_database_rejects_secrets_from_any_client(
    cluster: Cluster,
    database: str,
    worker_tracker: DeliveryTracker,
    owner_conn: asyncpg.Connection,
    call: str,
) -> None:
    await to_status(worker_tracker, S.IN_PROGRESS)
    before = await owner_conn.fetch("SELECT * FROM email.deliveries")
    conn = await asyncpg.connect(cluster.dsn(database, WORKER_LOGIN))
    try:
        with pytest.raises(asyncpg.PostgresError) as caught:
            await conn.fetch(call)
    finally:
        await conn.close()
    assert caught.value.sqlstate == "ED003"
    assert await owner_conn.fetch("SELECT * FROM email.deliveries") == before


# -- mark_dead_letter --------------------------------------------------------------------


@pytest.mark.parametrize("status", [S.QUEUED, S.IN_PROGRESS, S.RETRYING])
async def test_mark_dead_letter_of_an_unfinished_delivery(
    worker_tracker: DeliveryTracker, owner_conn: asyncpg.Connection, status: S
) -> None:
    await to_status(worker_tracker, status)
    result = await worker_tracker.mark_dead_letter("d1", reference="1234567890")
    assert result.changed
    assert result.status is S.DEAD_LETTER
    assert result.delivery.metadata_["dead_letter_reference"] == "1234567890"
    last = (await events(owner_conn, "d1"))[-1]
    assert json.loads(last["payload"]) == {"dead_letter_reference": "1234567890"}


@pytest.mark.parametrize("status", [S.FAILED, S.DEAD_LETTER])
async def test_mark_dead_letter_of_failed_or_dead_letter_records_the_reference_once(
    worker_tracker: DeliveryTracker, owner_conn: asyncpg.Connection, status: S
) -> None:
    await to_status(worker_tracker, status)
    first = await worker_tracker.mark_dead_letter("d1", reference="m-1")
    assert first.changed
    assert first.status is status
    assert first.delivery.metadata_["dead_letter_reference"] == "m-1"
    second = await worker_tracker.mark_dead_letter("d1", reference="m-2")
    assert not second.changed
    assert second.delivery.metadata_["dead_letter_reference"] == "m-1"


async def test_mark_dead_letter_of_a_sent_delivery_changes_nothing(
    worker_tracker: DeliveryTracker, owner_conn: asyncpg.Connection
) -> None:
    await to_status(worker_tracker, S.SENT)
    before = await row(owner_conn)
    result = await worker_tracker.mark_dead_letter("d1", reference="m-1")
    assert not result.changed
    assert await row(owner_conn) == before


async def test_mark_dead_letter_rejects_a_bad_reference(worker_tracker: DeliveryTracker) -> None:
    with pytest.raises(InvalidInput) as caught:
        await worker_tracker.mark_dead_letter("d1", reference="has space")
    assert caught.value.field == "reference"


# -- requeue -----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [S.FAILED, S.DEAD_LETTER])
async def test_requeue_gives_a_fresh_retry_budget(
    worker_tracker: DeliveryTracker,
    operator_tracker: DeliveryTracker,
    owner_conn: asyncpg.Connection,
    status: S,
) -> None:
    attempts = await to_status(worker_tracker, status)
    result = await operator_tracker.requeue("d1", reason="DNS fixed; ticket OPS-12")
    assert result.changed
    assert result.status is S.QUEUED
    assert result.delivery.metadata_["requeued_at_attempt"] == attempts
    last = (await events(owner_conn, "d1"))[-1]
    assert json.loads(last["payload"])["reason"] == "DNS fixed; ticket OPS-12"
    # Attempts never decrease, yet a retryable failure retries again instead of dead-lettering.
    claim = await worker_tracker.claim("d1")
    assert claim is not None
    failed = await worker_tracker.mark_failed(
        "d1", attempt=claim.attempt, error=("SMTP_421", "x"), max_attempts=1 + attempts
    )
    assert failed.status is S.RETRYING


@pytest.mark.parametrize("status", [S.QUEUED, S.IN_PROGRESS, S.RETRYING, S.SENT])
async def test_requeue_of_other_statuses_changes_nothing(
    worker_tracker: DeliveryTracker,
    operator_tracker: DeliveryTracker,
    owner_conn: asyncpg.Connection,
    status: S,
) -> None:
    await to_status(worker_tracker, status)
    before = await row(owner_conn)
    result = await operator_tracker.requeue("d1", reason="try")
    assert not result.changed
    assert await row(owner_conn) == before


async def test_requeue_is_for_operators_only(worker_tracker: DeliveryTracker) -> None:
    await to_status(worker_tracker, S.FAILED)
    with pytest.raises(PermissionDenied, match="permission denied for function requeue_delivery"):
        await worker_tracker.requeue("d1", reason="not mine to do")


async def test_requeue_needs_a_reason(operator_tracker: DeliveryTracker) -> None:
    with pytest.raises(InvalidInput) as caught:
        await operator_tracker.requeue("d1", reason="  ")
    assert caught.value.field == "reason"


# -- reap_stale --------------------------------------------------------------------------


async def test_reap_returns_expired_claims_to_retrying_with_a_reason(
    worker_tracker: DeliveryTracker, owner_conn: asyncpg.Connection
) -> None:
    await to_status(worker_tracker, S.IN_PROGRESS, "stale")
    await to_status(worker_tracker, S.IN_PROGRESS, "live")
    await expire_claim(owner_conn, "stale", "10 minutes")
    reaped = await worker_tracker.reap_stale(lease=timedelta(minutes=5))
    assert [(d.delivery_id, d.status) for d in reaped] == [("stale", S.RETRYING)]
    last = (await events(owner_conn, "stale"))[-1]
    assert (last["status"], last["error_code"]) == ("retrying", "LEASE_EXPIRED")
    assert "before its lease expired" in last["error_message"]
    assert (await row(owner_conn, "live"))["status"] == "in_progress"


async def test_reap_dead_letters_when_attempts_are_exhausted(
    worker_tracker: DeliveryTracker, owner_conn: asyncpg.Connection
) -> None:
    await to_status(worker_tracker, S.IN_PROGRESS)
    await expire_claim(owner_conn, "d1", "10 minutes")
    reaped = await worker_tracker.reap_stale(lease=timedelta(minutes=5), max_attempts=1)
    assert [d.status for d in reaped] == [S.DEAD_LETTER]


async def test_reap_honours_its_limit_and_concurrent_reapers_split_the_work(
    worker_tracker: DeliveryTracker, worker_engine: AsyncEngine, owner_conn: asyncpg.Connection
) -> None:
    for i in range(6):
        await to_status(worker_tracker, S.IN_PROGRESS, f"d{i}")
        await expire_claim(owner_conn, f"d{i}", "10 minutes")
    assert len(await worker_tracker.reap_stale(lease=timedelta(minutes=5), limit=2)) == 2
    other = DeliveryTracker(worker_engine, connections=1)
    batches = await asyncio.gather(
        worker_tracker.reap_stale(lease=timedelta(minutes=5)),
        other.reap_stale(lease=timedelta(minutes=5)),
    )
    await other.aclose()
    ids = [d.delivery_id for batch in batches for d in batch]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 4
    assert (
        await owner_conn.fetchval(
            "SELECT count(*) FROM email.delivery_events WHERE error_code = 'LEASE_EXPIRED'"
        )
        == 6
    )


# -- reads and grants --------------------------------------------------------------------


async def test_get_and_history(worker_tracker: DeliveryTracker) -> None:
    assert await worker_tracker.get("d1") is None
    assert await worker_tracker.history("d1") == []
    await to_status(worker_tracker, S.SENT)
    got = await worker_tracker.get("d1")
    assert got is not None and got.status is S.SENT
    history = await worker_tracker.history("d1")
    assert [(e.status, e.attempt) for e in history] == [
        (S.QUEUED, 0),
        (S.IN_PROGRESS, 1),
        (S.SENT, 1),
    ]
    assert history[-1].payload == {"reported_attempt": 1}


async def test_the_reader_role_cannot_drive_the_lifecycle(cluster: Cluster, database: str) -> None:
    engine = make_engine(cluster.url(database, DASHBOARD_LOGIN))
    try:
        async with DeliveryTracker(engine) as reader:
            # Translated (errors.translate_errors): the driver's error is the cause.
            with pytest.raises(PermissionDenied) as caught:
                await reader.enqueue("d1", workflow=WF, recipient="a@b.io")
            assert isinstance(caught.value.__cause__, asyncpg.InsufficientPrivilegeError)
            with pytest.raises(PermissionDenied, match="permission denied"):
                await reader.claim("d1")
    finally:
        await engine.dispose()


async def test_a_sessionmaker_works_as_the_bind(worker_engine: AsyncEngine) -> None:
    from sqlalchemy.ext.asyncio import async_sessionmaker

    async with DeliveryTracker(async_sessionmaker(worker_engine)) as tracker:
        assert (await tracker.enqueue("d1", workflow=WF, recipient="a@b.io")).created


# -- connection modes --------------------------------------------------------------------


@pytest.mark.parametrize(("pooler", "cached"), [("direct", True), ("transaction", False)])
async def test_make_engine_sets_the_statement_cache_per_mode(
    cluster: Cluster, database: str, pooler: str, cached: bool
) -> None:
    engine = make_engine(cluster.url(database, WORKER_LOGIN), pooler=pooler)  # type: ignore[arg-type]
    try:
        async with engine.connect() as connection:
            raw = await connection.get_raw_connection()
            driver: Any = raw.driver_connection
            assert (driver._stmt_cache.get_max_size() > 0) is cached
        async with DeliveryTracker(engine) as tracker:
            assert (await tracker.enqueue("d1", workflow=WF, recipient="a@b.io")).created
    finally:
        await engine.dispose()


def test_make_engine_rejects_an_unknown_pooler() -> None:
    with pytest.raises(ValueError, match="pooler"):
        make_engine("postgresql://u@h/db", pooler="statement")  # type: ignore[arg-type]
