"""The triggers on email.deliveries: updated_at, the audit trail, the event payload, the guard."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import asyncpg
import pytest

from email_delivery.errors import AttemptsDecreased, IllegalTransition
from email_delivery.rules import EVENT_PAYLOAD_SETTING
from tests.cluster import Cluster
from tests.integration._sql import connect, events, insert_delivery, module_database, owner_tx

ILLEGAL_TRANSITION_SQLSTATE = IllegalTransition.sqlstate
ATTEMPTS_DECREASED_SQLSTATE = AttemptsDecreased.sqlstate

__all__ = ["module_database", "owner_tx"]

LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


async def test_updated_at_is_kept_current_on_every_update(owner_tx: asyncpg.Connection) -> None:
    await insert_delivery(owner_tx, "touch-1", updated_at=LONG_AGO)
    # No touch on insert: the default (or the given value) stands.
    assert await owner_tx.fetchval("SELECT updated_at FROM email.deliveries") == LONG_AGO

    now = await owner_tx.fetchval("SELECT now()")
    await owner_tx.execute("UPDATE email.deliveries SET metadata = '{\"a\": 1}'")
    assert await owner_tx.fetchval("SELECT updated_at FROM email.deliveries") == now

    # A writer cannot backdate it either.
    await owner_tx.execute("UPDATE email.deliveries SET updated_at = $1", LONG_AGO)
    assert await owner_tx.fetchval("SELECT updated_at FROM email.deliveries") == now


async def test_insert_writes_one_event_with_the_row_state(owner_tx: asyncpg.Connection) -> None:
    await insert_delivery(
        owner_tx,
        "audit-1",
        status="retrying",
        attempts=2,
        last_error_code="smtp_421",
        last_error_message="try later",
    )
    assert [tuple(e) for e in await events(owner_tx, "audit-1")] == [
        ("retrying", 2, "smtp_421", "try later", None)
    ]


# (SET clause, whether it writes an event); applied in order to one delivery.
CHANGES = [
    ("metadata = '{\"k\": 1}'", False),
    ("last_error_code = 'x', last_error_message = 'y'", False),
    ("last_attempted_at = now()", False),
    ("status = 'queued'", False),  # same status: no change to audit
    ("attempts = attempts", False),
    (
        "status = 'in_progress', attempts = 1, last_error_code = NULL, last_error_message = NULL",
        True,
    ),
    ("status = 'retrying', last_error_code = 'smtp_451', last_error_message = 'greylisted'", True),
    ("attempts = 2", True),  # attempts alone
    ("metadata = '{\"k\": 2}', last_error_code = 'smtp_452'", False),
    ("status = 'failed', last_error_code = 'smtp_550', last_error_message = 'no such user'", True),
]


async def test_one_event_per_status_or_attempts_change_and_none_otherwise(
    owner_tx: asyncpg.Connection,
) -> None:
    await insert_delivery(owner_tx, "audit-2")
    expected = 1
    for clause, audited in CHANGES:
        await owner_tx.execute(f"UPDATE email.deliveries SET {clause}")
        expected += audited
        assert len(await events(owner_tx, "audit-2")) == expected, clause
    assert [tuple(e) for e in await events(owner_tx, "audit-2")] == [
        ("queued", 0, None, None, None),
        ("in_progress", 1, None, None, None),
        ("retrying", 1, "smtp_451", "greylisted", None),
        ("retrying", 2, "smtp_451", "greylisted", None),
        ("failed", 2, "smtp_550", "no such user", None),
    ]


async def test_multi_row_update_writes_one_event_per_row(owner_tx: asyncpg.Connection) -> None:
    for i in range(3):
        await insert_delivery(owner_tx, f"bulk-{i}")
    await owner_tx.execute("UPDATE email.deliveries SET status = 'dead_letter'")
    for i in range(3):
        assert [e["status"] for e in await events(owner_tx, f"bulk-{i}")] == [
            "queued",
            "dead_letter",
        ]


async def test_hand_typed_update_by_the_owner_is_audited(owner_tx: asyncpg.Connection) -> None:
    """A support engineer requeueing a dead letter from the SQL editor leaves a trace."""
    await insert_delivery(owner_tx, "support-1", status="dead_letter", attempts=5)
    await owner_tx.execute(
        "update email.deliveries set status = 'queued' where delivery_id = 'support-1'"
    )
    assert [tuple(e)[:2] for e in await events(owner_tx, "support-1")] == [
        ("dead_letter", 5),
        ("queued", 5),
    ]


async def _set_payload(conn: asyncpg.Connection, payload: object) -> None:
    await conn.execute(
        "SELECT set_config($1, $2, true)", EVENT_PAYLOAD_SETTING, json.dumps(payload)
    )


async def test_payload_attaches_to_exactly_the_next_event(owner_tx: asyncpg.Connection) -> None:
    await _set_payload(owner_tx, {"created_by": "api"})
    await insert_delivery(owner_tx, "payload-1")
    await owner_tx.execute("UPDATE email.deliveries SET status = 'in_progress', attempts = 1")
    # A change that is not audited leaves the payload waiting for the next event.
    await _set_payload(owner_tx, {"smtp": "250 2.0.0 OK"})
    await owner_tx.execute("UPDATE email.deliveries SET metadata = '{\"m\": 1}'")
    await owner_tx.execute("UPDATE email.deliveries SET status = 'sent'")
    await owner_tx.execute("UPDATE email.deliveries SET metadata = '{\"m\": 2}'")
    assert [(e["status"], e["payload"]) for e in await events(owner_tx, "payload-1")] == [
        ("queued", '{"created_by": "api"}'),
        ("in_progress", None),
        ("sent", '{"smtp": "250 2.0.0 OK"}'),
    ]
    assert await owner_tx.fetchval("SELECT current_setting($1, true)", EVENT_PAYLOAD_SETTING) == ""


async def test_payload_in_the_same_statement(owner_tx: asyncpg.Connection) -> None:
    await insert_delivery(owner_tx, "payload-2", status="in_progress", attempts=1)
    await owner_tx.execute(
        f"WITH p AS (SELECT set_config('{EVENT_PAYLOAD_SETTING}', $1, true)) "
        "UPDATE email.deliveries SET status = 'retrying', last_error_code = 'smtp_421' "
        "FROM p WHERE delivery_id = 'payload-2'",
        json.dumps({"smtp": "421 busy"}),
    )
    assert [e["payload"] for e in await events(owner_tx, "payload-2")] == [
        None,
        '{"smtp": "421 busy"}',
    ]


async def test_payload_does_not_outlive_its_transaction(
    cluster: Cluster, module_database: str
) -> None:
    async with connect(cluster, module_database) as conn:
        await insert_delivery(conn, "payload-3")
        try:
            async with conn.transaction():
                await _set_payload(conn, {"stale": True})
            await conn.execute(
                "UPDATE email.deliveries SET status = 'in_progress' WHERE delivery_id = 'payload-3'"
            )
            assert [e["payload"] for e in await events(conn, "payload-3")] == [None, None]
        finally:
            # The other tests of this module see an empty table.
            await conn.execute("DELETE FROM email.deliveries WHERE delivery_id = 'payload-3'")


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ("[1, 2]", asyncpg.CheckViolationError),
        ('"just text"', asyncpg.CheckViolationError),
        ("not json", asyncpg.InvalidTextRepresentationError),
    ],
)
async def test_bad_payload_rejects_the_whole_change(
    owner_tx: asyncpg.Connection, payload: str, error: type[Exception]
) -> None:
    await insert_delivery(owner_tx, "payload-4")
    with pytest.raises(error):
        async with owner_tx.transaction():
            await owner_tx.execute(
                "SELECT set_config($1, $2, true)", EVENT_PAYLOAD_SETTING, payload
            )
            await owner_tx.execute("UPDATE email.deliveries SET status = 'in_progress'")
    assert await owner_tx.fetchval("SELECT status::text FROM email.deliveries") == "queued"


async def _guard_error(conn: asyncpg.Connection, statement: str) -> asyncpg.PostgresError:
    with pytest.raises(asyncpg.PostgresError) as raised:
        async with conn.transaction():
            await conn.execute(statement)
    return raised.value


async def test_illegal_move_raises_ed001_naming_both_statuses(
    owner_tx: asyncpg.Connection,
) -> None:
    await insert_delivery(owner_tx, "guard-1", status="failed", attempts=3)
    error = await _guard_error(owner_tx, "UPDATE email.deliveries SET status = 'in_progress'")
    assert error.sqlstate == ILLEGAL_TRANSITION_SQLSTATE
    assert "from failed to in_progress" in str(error)
    assert error.detail == "delivery_id=guard-1"
    # Nothing changed, nothing was audited.
    assert await owner_tx.fetchval("SELECT status::text FROM email.deliveries") == "failed"
    assert len(await events(owner_tx, "guard-1")) == 1


async def test_attempts_never_decrease(owner_tx: asyncpg.Connection) -> None:
    await insert_delivery(owner_tx, "guard-2", status="retrying", attempts=3)
    error = await _guard_error(owner_tx, "UPDATE email.deliveries SET attempts = 2")
    assert error.sqlstate == ATTEMPTS_DECREASED_SQLSTATE
    assert "from 3 to 2" in str(error)
    # Also when the status move itself is legal.
    error = await _guard_error(
        owner_tx, "UPDATE email.deliveries SET status = 'in_progress', attempts = 0"
    )
    assert error.sqlstate == ATTEMPTS_DECREASED_SQLSTATE
    assert await owner_tx.fetchval("SELECT attempts FROM email.deliveries") == 3


async def test_sent_is_final_and_sent_at_is_filled(owner_tx: asyncpg.Connection) -> None:
    now = await owner_tx.fetchval("SELECT now()")
    await insert_delivery(owner_tx, "guard-3", status="in_progress", attempts=1)
    await owner_tx.execute("UPDATE email.deliveries SET status = 'sent'")
    assert await owner_tx.fetchval("SELECT sent_at FROM email.deliveries") == now

    for status in ("queued", "in_progress", "retrying", "failed", "dead_letter"):
        error = await _guard_error(owner_tx, f"UPDATE email.deliveries SET status = '{status}'")
        assert error.sqlstate == ILLEGAL_TRANSITION_SQLSTATE
        assert f"from sent to {status}" in str(error)
    # Staying sent is not a move: metadata may still change, sent_at stays.
    await owner_tx.execute("UPDATE email.deliveries SET metadata = '{\"late\": true}'")
    assert await owner_tx.fetchval("SELECT sent_at FROM email.deliveries") == now


async def test_sent_at_given_by_the_writer_is_kept(owner_tx: asyncpg.Connection) -> None:
    await insert_delivery(owner_tx, "guard-4", status="sent", sent_at=LONG_AGO)
    assert await owner_tx.fetchval("SELECT sent_at FROM email.deliveries") == LONG_AGO
    await insert_delivery(owner_tx, "guard-5", status="sent")
    assert await owner_tx.fetchval(
        "SELECT sent_at = now() FROM email.deliveries WHERE delivery_id = 'guard-5'"
    )
