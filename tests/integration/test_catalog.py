"""Seed conformance, read from the catalog of a database migrated to head, and every CHECK tried."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from email_delivery import catalog
from email_delivery.models import DeliveryStatus
from tests.support.cluster import Cluster
from tests.support.db import connect, events, insert_delivery

TS = "timestamp with time zone"
STATUS = "email.delivery_status"

# (name, type, NOT NULL, default, identity) per column, in table order: the seed's tables
# (and what later revisions added to them).
COLUMNS = {
    "deliveries": [
        ("delivery_id", "text", True, None, ""),
        ("workflow", "text", True, None, ""),
        ("recipient", "text", True, None, ""),
        ("status", STATUS, True, f"'queued'::{STATUS}", ""),
        ("attempts", "integer", True, "0", ""),
        ("last_error_code", "text", False, None, ""),
        ("last_error_message", "text", False, None, ""),
        ("last_attempted_at", TS, False, None, ""),
        ("queued_at", TS, True, "now()", ""),
        ("sent_at", TS, False, None, ""),
        ("metadata", "jsonb", True, "'{}'::jsonb", ""),
        ("created_at", TS, True, "now()", ""),
        ("updated_at", TS, True, "now()", ""),
        # Revision 0008: the claim's stored expiry and the retry's earliest time.
        ("lease_expires_at", TS, False, None, ""),
        ("next_attempt_at", TS, False, None, ""),
    ],
    "delivery_events": [
        ("id", "bigint", True, None, "a"),  # GENERATED ALWAYS AS IDENTITY
        ("delivery_id", "text", True, None, ""),
        ("status", STATUS, True, None, ""),
        ("attempt", "integer", True, None, ""),
        ("error_code", "text", False, None, ""),
        ("error_message", "text", False, None, ""),
        ("payload", "jsonb", False, None, ""),
        ("created_at", TS, True, "now()", ""),
        ("changed_columns", "text[]", False, None, ""),
        ("xact_id", "bigint", False, "((pg_current_xact_id())::text)::bigint", ""),
    ],
}


@pytest.mark.parametrize("table", sorted(COLUMNS))
async def test_columns_types_nullability_defaults(owner_tx: asyncpg.Connection, table: str) -> None:
    rows = await owner_tx.fetch(
        """
        SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid), a.attidentity::text
        FROM pg_attribute a
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE a.attrelid = ('email.' || $1)::regclass AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum""",
        table,
    )
    assert [tuple(r) for r in rows] == COLUMNS[table]
    # The same through information_schema, which is what most tools read.
    info = await owner_tx.fetch(
        "SELECT column_name, is_nullable, is_identity, identity_generation "
        "FROM information_schema.columns WHERE table_schema = 'email' AND table_name = $1 "
        "ORDER BY ordinal_position",
        table,
    )
    assert [(r[0], r[1] == "NO") for r in info] == [(c[0], c[2]) for c in COLUMNS[table]]
    identities = [(r[0], r[3]) for r in info if r[2] == "YES"]
    assert identities == ([("id", "ALWAYS")] if table == "delivery_events" else [])


async def test_status_enum_labels_in_order(owner_tx: asyncpg.Connection) -> None:
    labels = await owner_tx.fetchval(
        "SELECT array_agg(enumlabel::text ORDER BY enumsortorder) FROM pg_enum "
        "WHERE enumtypid = 'email.delivery_status'::regtype"
    )
    assert labels == [
        "queued",
        "in_progress",
        "sent",
        "retrying",
        "failed",
        "dead_letter",
        "suppressed",
    ]
    assert labels == [s.value for s in DeliveryStatus]


async def test_keys_and_the_purge_of_a_deliverys_events(owner_tx: asyncpg.Connection) -> None:
    """The seed's ON DELETE CASCADE, kept by the statement-level purge trigger (revision
    0006: a foreign key would search every partition of the log per deleted delivery)."""
    keys = await owner_tx.fetch(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE connamespace = 'email'::regnamespace AND contype IN ('p', 'f', 'u') "
        "AND conrelid IN ('email.deliveries'::regclass, 'email.delivery_events'::regclass) "
        "ORDER BY 1"
    )
    assert [tuple(r) for r in keys] == [
        ("pk_deliveries", "PRIMARY KEY (delivery_id)"),
        ("pk_delivery_events", "PRIMARY KEY (id, created_at)"),
    ]
    await insert_delivery(owner_tx, "cascade-1")
    await insert_delivery(owner_tx, "cascade-2")
    await owner_tx.execute("UPDATE email.deliveries SET status = 'in_progress'")
    assert len(await events(owner_tx, "cascade-1")) == 2
    await owner_tx.execute("DELETE FROM email.deliveries WHERE delivery_id = 'cascade-1'")
    assert await owner_tx.fetchval(
        "SELECT array_agg(DISTINCT delivery_id) FROM email.delivery_events"
    ) == ["cascade-2"]


async def test_required_indexes(owner_tx: asyncpg.Connection) -> None:
    rows = await owner_tx.fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'email'"
    )
    defs = {name: re.sub(r"^.* USING ", "", d) for name, d in rows}
    # Later issues add indexes for their queries; these are the seed's.
    assert defs["ix_deliveries_status_updated_at"] == "btree (status, updated_at)"
    assert defs["ix_deliveries_recipient_updated_at"] == "btree (recipient, updated_at)"
    assert defs["ix_delivery_events_delivery_id_id"] == "btree (delivery_id, id)"


async def test_every_constraint_and_index_is_named_by_the_convention(
    owner_tx: asyncpg.Connection,
) -> None:
    # contype 'n' (PostgreSQL 18 catalogues NOT NULL) is named by the server, not by us.
    constraints = await owner_tx.fetch(
        "SELECT conname, contype::text, conrelid::regclass::text, "
        "confrelid::regclass::text, "
        "(SELECT attname FROM pg_attribute WHERE attrelid = conrelid AND attnum = conkey[1]) "
        "FROM pg_constraint WHERE connamespace = 'email'::regnamespace AND contype <> 'n' "
        "AND conrelid <> 'email.alembic_version'::regclass "
        # The log's partitions carry their parent's constraints (and the legacy one its own).
        "AND NOT EXISTS (SELECT FROM pg_inherits WHERE inhrelid = conrelid)"
    )
    assert len(constraints) >= 14
    for name, kind, table, referred, first_column in constraints:
        table = table.removeprefix("email.")
        expected = {
            "p": f"pk_{table}",
            "f": f"fk_{table}_{first_column}_{str(referred).removeprefix('email.')}",
        }.get(kind)
        if expected:
            assert name == expected
        else:
            assert name.startswith({"c": f"ck_{table}_", "u": f"uq_{table}_"}[kind]), name
    indexes = await owner_tx.fetch(
        "SELECT indexname, tablename FROM pg_indexes WHERE schemaname = 'email' "
        "AND indexname NOT IN (SELECT conname FROM pg_constraint) "
        "AND tablename <> 'alembic_version' AND tablename NOT LIKE 'delivery\\_events\\_%'"
    )
    assert indexes
    for name, table in indexes:
        assert name.startswith(f"ix_{table}_"), name


LONG_AGO_EVENT = datetime(2020, 1, 1, tzinfo=UTC)


def _json(size: int) -> str:
    return json.dumps({"k": "x" * (size - len('{"k": ""}'))})


LONG_ADDRESS = "a" * 308 + "@example.com"  # 320 characters

# (overrides, violated constraint or None when the row is valid at the boundary)
DELIVERY_CASES: list[tuple[dict[str, Any], str | None]] = [
    ({"delivery_id": "pubsub:" + "9" * 193}, None),
    ({"delivery_id": "p" + "9" * 200}, "ck_deliveries_delivery_id_format"),
    ({"delivery_id": ""}, "ck_deliveries_delivery_id_format"),
    ({"delivery_id": " id-1"}, "ck_deliveries_delivery_id_format"),
    ({"workflow": "verification-code"}, None),
    ({"workflow": "w" + "a" * 62}, None),
    ({"workflow": "w" + "a" * 63}, "ck_deliveries_workflow_format"),
    ({"workflow": "Welcome"}, "ck_deliveries_workflow_format"),
    ({"workflow": "1welcome"}, "ck_deliveries_workflow_format"),
    ({"workflow": "welcome_email"}, "ck_deliveries_workflow_format"),
    ({"workflow": ""}, "ck_deliveries_workflow_format"),
    ({"recipient": LONG_ADDRESS}, None),
    ({"recipient": "b" + LONG_ADDRESS}, "ck_deliveries_recipient_format"),
    ({"recipient": "user.example.com"}, "ck_deliveries_recipient_format"),
    ({"recipient": "a@b@example.com"}, "ck_deliveries_recipient_format"),
    ({"recipient": "User@example.com"}, "ck_deliveries_recipient_format"),
    ({"recipient": "us er@example.com"}, "ck_deliveries_recipient_format"),
    ({"recipient": "@example.com"}, "ck_deliveries_recipient_format"),
    ({"attempts": 0}, None),
    ({"attempts": -1}, "ck_deliveries_attempts_non_negative"),
    ({"last_error_code": "c" * 64}, None),
    ({"last_error_code": "c" * 65}, "ck_deliveries_last_error_code_length"),
    ({"last_error_message": "m" * 2000}, None),
    # The guard caps a stored message at 2000 characters before the CHECK sees it.
    ({"last_error_message": "m" * 2001}, None),
    ({"status": "sent"}, None),  # sent_at is filled by the guard trigger
    ({"status": "queued", "sent_at_now": True}, "ck_deliveries_sent_at_iff_sent"),
    ({"status": "failed", "sent_at_now": True}, "ck_deliveries_sent_at_iff_sent"),
    ({"metadata": _json(16 * 1024)}, None),
    ({"metadata": _json(16 * 1024 + 1)}, "ck_deliveries_metadata_object"),
    ({"metadata": "[]"}, "ck_deliveries_metadata_object"),
    ({"metadata": '"text"'}, "ck_deliveries_metadata_object"),
    ({"metadata": "null"}, "ck_deliveries_metadata_object"),
]


@pytest.mark.parametrize(("overrides", "violated"), DELIVERY_CASES)
async def test_delivery_checks(
    owner_tx: asyncpg.Connection, overrides: dict[str, Any], violated: str | None
) -> None:
    overrides = dict(overrides)
    delivery_id = overrides.pop("delivery_id", "check-1")
    if overrides.pop("sent_at_now", False):
        overrides["sent_at"] = await owner_tx.fetchval("SELECT now()")
    if violated is None:
        await insert_delivery(owner_tx, delivery_id, **overrides)
        row = await owner_tx.fetchrow(
            "SELECT status::text, sent_at FROM email.deliveries WHERE delivery_id = $1",
            delivery_id,
        )
        assert (row["status"] == "sent") == (row["sent_at"] is not None)
        return
    with pytest.raises(asyncpg.CheckViolationError) as raised:
        async with owner_tx.transaction():
            await insert_delivery(owner_tx, delivery_id, **overrides)
    assert raised.value.constraint_name == violated
    assert await owner_tx.fetchval("SELECT count(*) FROM email.deliveries") == 0


async def test_the_guard_sanitises_and_caps_a_message_from_any_client(
    owner_tx: asyncpg.Connection,
) -> None:
    await insert_delivery(
        owner_tx, "check-2", last_error_message="to ada@example.com " + "m" * 3000
    )
    stored = await owner_tx.fetchval("SELECT last_error_message FROM email.deliveries")
    assert stored.startswith("to [email] m") and len(stored) == 2000


async def test_sent_at_cannot_be_set_without_sent_by_update(owner_tx: asyncpg.Connection) -> None:
    await insert_delivery(owner_tx, "check-2")
    with pytest.raises(asyncpg.CheckViolationError) as raised:
        async with owner_tx.transaction():
            await owner_tx.execute("UPDATE email.deliveries SET sent_at = now()")
    assert raised.value.constraint_name == "ck_deliveries_sent_at_iff_sent"


async def test_required_columns_reject_null(owner_tx: asyncpg.Connection) -> None:
    for column in ("workflow", "recipient", "metadata", "status", "attempts"):
        with pytest.raises(asyncpg.NotNullViolationError) as raised:
            async with owner_tx.transaction():
                await insert_delivery(owner_tx, "null-1", **{column: None})
        assert raised.value.column_name == column


EVENT_CASES: list[tuple[dict[str, Any], str | None]] = [
    ({"payload": None}, None),
    ({"payload": _json(16 * 1024)}, None),
    ({"payload": _json(16 * 1024 + 1)}, "ck_delivery_events_payload_object"),
    ({"payload": "[1]"}, "ck_delivery_events_payload_object"),
    ({"payload": "42"}, "ck_delivery_events_payload_object"),
    ({"attempt": -1}, "ck_delivery_events_attempt_non_negative"),
    ({"error_code": "c" * 64}, None),
    ({"error_code": "c" * 65}, "ck_delivery_events_error_code_length"),
    ({"error_message": "m" * 2000}, None),
    ({"error_message": "m" * 2001}, "ck_delivery_events_error_message_length"),
]


@pytest.mark.parametrize(("overrides", "violated"), EVENT_CASES)
async def test_event_checks(
    owner_tx: asyncpg.Connection, overrides: dict[str, Any], violated: str | None
) -> None:
    await insert_delivery(owner_tx, "event-1")
    values = {"delivery_id": "event-1", "status": "queued", "attempt": 0, **overrides}
    params = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    statement = f"INSERT INTO email.delivery_events ({', '.join(values)}) VALUES ({params})"
    if violated is None:
        await owner_tx.execute(statement, *values.values())
        assert len(await events(owner_tx, "event-1")) == 2
        return
    with pytest.raises(asyncpg.CheckViolationError) as raised:
        async with owner_tx.transaction():
            await owner_tx.execute(statement, *values.values())
    assert raised.value.constraint_name == violated


async def test_a_purge_reaches_every_partition_of_the_span(
    cluster: Cluster, empty_database: str
) -> None:
    """A delivery recorded long ago has its first event in the default partition (built from
    the head, no partition covers 2020) and its later ones in this month's: the purge
    searches created_at..updated_at and removes them all, leaving other deliveries' alone."""
    async with connect(cluster, empty_database) as conn:
        for statement in catalog.head_ddl():
            await conn.execute(statement)
        for delivery_id in ("span-1", "span-2"):
            await insert_delivery(conn, delivery_id, created_at=LONG_AGO_EVENT)
        await conn.execute("UPDATE email.deliveries SET status = 'in_progress', attempts = 1")
        await conn.execute("UPDATE email.deliveries SET status = 'sent'")
        partitions = await conn.fetchval(
            "SELECT array_agg(DISTINCT tableoid::regclass::text ORDER BY tableoid::regclass::text) "
            "FROM email.delivery_events WHERE delivery_id = 'span-1'"
        )
        assert len(partitions) == 2 and "email.delivery_events_default" in partitions
        await conn.execute("DELETE FROM email.deliveries WHERE delivery_id = 'span-1'")
        remaining = await conn.fetch(
            "SELECT delivery_id, count(*) FROM email.delivery_events GROUP BY 1"
        )
        assert [tuple(r) for r in remaining] == [("span-2", 3)]


async def test_created_at_is_never_in_the_future_nor_changed(owner_tx: asyncpg.Connection) -> None:
    """For every login, the owner included: the purge relies on it."""
    with pytest.raises(asyncpg.PostgresError, match="future") as future:
        async with owner_tx.transaction():
            await owner_tx.execute(
                "INSERT INTO email.deliveries (delivery_id, workflow, recipient, created_at) "
                "VALUES ('later', 'welcome', 'a@b.io', now() + interval '1 day')"
            )
    assert future.value.sqlstate == "ED004"
    await insert_delivery(owner_tx, "fixed")
    with pytest.raises(asyncpg.PostgresError, match="never changes") as changed:
        async with owner_tx.transaction():
            await owner_tx.execute(
                "UPDATE email.deliveries SET created_at = created_at - interval '1 day'"
            )
    assert changed.value.sqlstate == "ED004"


async def test_event_id_is_generated_always(owner_tx: asyncpg.Connection) -> None:
    await insert_delivery(owner_tx, "event-2")
    with pytest.raises(asyncpg.GeneratedAlwaysError):
        await owner_tx.execute(
            "INSERT INTO email.delivery_events (id, delivery_id, status, attempt) "
            "VALUES (999, 'event-2', 'queued', 0)"
        )


async def test_checks_above_ran_as_the_non_superuser_owner(
    cluster: Any, module_database: str
) -> None:
    async with connect(cluster, module_database) as conn:
        assert await conn.fetchval("SELECT current_user") == "email_test_owner"
        assert not await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
