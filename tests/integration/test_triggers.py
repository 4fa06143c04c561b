"""The triggers on email.deliveries: updated_at, the audit trail, the event payload, the guard."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import asyncpg
import pytest

from email_delivery.errors import AttemptsDecreased, IllegalTransition
from email_delivery.rules import DELIVERY_ROW_COLUMNS, EVENT_PAYLOAD_SETTING
from tests.support.cluster import Cluster
from tests.support.db import connect, events, insert_delivery

ILLEGAL_TRANSITION_SQLSTATE = IllegalTransition.sqlstate
ATTEMPTS_DECREASED_SQLSTATE = AttemptsDecreased.sqlstate


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


# (SET clause, the columns its event names, or None: no event); applied in order, as the owner.
CHANGES = [
    ("metadata = '{\"k\": 1}'", ["metadata"]),
    ("last_error_code = 'x', last_error_message = 'y'", ["last_error_code", "last_error_message"]),
    ("last_attempted_at = now()", ["last_attempted_at"]),
    ("status = 'queued'", None),  # nothing changes: a no-op writes no row version, no event
    ("attempts = attempts", None),
    (
        # Entering in_progress by hand gets the workflow's lease (the guard fills it).
        "status = 'in_progress', attempts = 1, last_error_code = NULL, last_error_message = NULL",
        ["status", "attempts", "last_error_code", "last_error_message", "lease_expires_at"],
    ),
    (
        "status = 'retrying', last_error_code = 'smtp_451', last_error_message = 'greylisted'",
        ["status", "last_error_code", "last_error_message", "lease_expires_at"],
    ),
    ("attempts = 2", ["attempts"]),
    ("metadata = '{\"k\": 2}', last_error_code = 'smtp_452'", ["last_error_code", "metadata"]),
    (
        "status = 'failed', last_error_code = 'smtp_550', last_error_message = 'no such user'",
        ["status", "last_error_code", "last_error_message"],
    ),
]


async def test_one_event_per_change_naming_its_columns_and_none_for_a_no_op(
    owner_tx: asyncpg.Connection,
) -> None:
    await insert_delivery(owner_tx, "audit-2")
    expected: list[list[str] | None] = [None]  # the insert's event names no columns
    for clause, changed in CHANGES:
        await owner_tx.execute(f"UPDATE email.deliveries SET {clause}")
        if changed is not None:
            expected.append(changed)
        rows = await owner_tx.fetch(
            "SELECT changed_columns FROM email.delivery_events WHERE delivery_id = 'audit-2' "
            "ORDER BY id"
        )
        assert [r["changed_columns"] for r in rows] == [
            sorted(c, key=_COLUMN_ORDER.index) if c else c for c in expected
        ], clause
    assert [tuple(e)[:2] for e in await events(owner_tx, "audit-2")][-5:] == [
        ("in_progress", 1),
        ("retrying", 1),
        ("retrying", 2),
        ("retrying", 2),
        ("failed", 2),
    ]


_COLUMN_ORDER = [c for c in DELIVERY_ROW_COLUMNS if c not in ("delivery_id", "updated_at")]
"""changed_columns lists columns in table order (delivery_id never changes; updated_at always)."""


async def test_a_no_op_update_keeps_updated_at(owner_tx: asyncpg.Connection) -> None:
    """Touching a row without changing it cannot hide stuck work from `stuck` and
    `pending_deliveries` (they age rows by updated_at)."""
    await insert_delivery(owner_tx, "touch-2", updated_at=LONG_AGO)
    await owner_tx.execute("UPDATE email.deliveries SET metadata = metadata, status = status")
    assert await owner_tx.fetchval("SELECT updated_at FROM email.deliveries") == LONG_AGO
    assert len(await events(owner_tx, "touch-2")) == 1


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


async def _attach(conn: asyncpg.Connection, delivery_id: str, payload: object) -> None:
    await conn.execute(
        "SELECT email.attach_event_payloads(jsonb_build_object($1::text, $2::jsonb))",
        delivery_id,
        json.dumps(payload),
    )


async def test_payload_attaches_to_its_deliverys_event_of_the_next_statement(
    owner_tx: asyncpg.Connection,
) -> None:
    await _attach(owner_tx, "payload-1", {"created_by": "api"})
    await insert_delivery(owner_tx, "payload-1")
    # The insert's statement consumed it: the next change carries nothing.
    await owner_tx.execute("UPDATE email.deliveries SET status = 'in_progress', attempts = 1")
    await _attach(owner_tx, "payload-1", {"smtp": "250 2.0.0 OK"})
    await owner_tx.execute("UPDATE email.deliveries SET status = 'sent'")
    await owner_tx.execute("UPDATE email.deliveries SET metadata = '{\"m\": 2}'")
    assert [(e["status"], e["payload"]) for e in await events(owner_tx, "payload-1")] == [
        ("queued", '{"created_by": "api"}'),
        ("in_progress", None),
        ("sent", '{"smtp": "250 2.0.0 OK"}'),
        ("sent", None),
    ]
    assert await owner_tx.fetchval("SELECT current_setting($1, true)", EVENT_PAYLOAD_SETTING) == ""


async def test_payload_in_the_same_statement(owner_tx: asyncpg.Connection) -> None:
    await insert_delivery(owner_tx, "payload-2", status="in_progress", attempts=1)
    await owner_tx.execute(
        "WITH p AS (SELECT email.attach_event_payloads("
        "jsonb_build_object('payload-2', $1::jsonb))) "
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
                await _attach(conn, "payload-3", {"stale": True})
            await conn.execute(
                "UPDATE email.deliveries SET status = 'in_progress' WHERE delivery_id = 'payload-3'"
            )
            assert [e["payload"] for e in await events(conn, "payload-3")] == [None, None]
        finally:
            # The other tests of this module see an empty table.
            await conn.execute("DELETE FROM email.deliveries WHERE delivery_id = 'payload-3'")


@pytest.mark.parametrize("payload", [[1, 2], "just text"], ids=["array", "string"])
async def test_a_payload_that_is_not_an_object_rejects_the_whole_change(
    owner_tx: asyncpg.Connection, payload: object
) -> None:
    await insert_delivery(owner_tx, "payload-4")
    with pytest.raises(asyncpg.InvalidParameterValueError, match="JSON object"):
        async with owner_tx.transaction():
            await _attach(owner_tx, "payload-4", payload)
            await owner_tx.execute("UPDATE email.deliveries SET status = 'in_progress'")
    assert await owner_tx.fetchval("SELECT status::text FROM email.deliveries") == "queued"


async def test_a_payload_set_by_hand_is_ignored_unless_stamped_by_its_transaction(
    owner_tx: asyncpg.Connection,
) -> None:
    """Only email.attach_event_payloads' stamp makes a value count: a plain set_config (or a
    session-level SET) attaches nothing and breaks nothing, JSON or not."""
    await insert_delivery(owner_tx, "payload-5")
    for value in ('{"payload-5": {"forged": true}}', "not json", "1:[1]"):
        await owner_tx.execute("SELECT set_config($1, $2, true)", EVENT_PAYLOAD_SETTING, value)
        await owner_tx.execute(
            "UPDATE email.deliveries SET metadata = jsonb_build_object('v', $1::text)", value
        )
    assert [e["payload"] for e in await events(owner_tx, "payload-5")] == [None] * 4
    # Stamped with this transaction but malformed: only this transaction fails.
    with pytest.raises(asyncpg.InvalidTextRepresentationError):
        async with owner_tx.transaction():
            await owner_tx.execute(
                "SELECT set_config($1, pg_current_xact_id()::text || ':not json', true)",
                EVENT_PAYLOAD_SETTING,
            )
            await owner_tx.execute("UPDATE email.deliveries SET metadata = '{}'")


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
