"""Revision 0011 adds the status ``suppressed`` (``op.add_enum_value``) to a type a busy,
populated table uses; 0012 uses it. Up over data (no rewrite), down (refused while a
delivery is suppressed; then the type is rebuilt without the label and every function, view,
CHECK and index that names it restored), and up again: nothing is lost or changed.
test_history's round trip proves the restored catalog equals the original."""

from __future__ import annotations

import asyncpg
import pytest

from tests.migrations.test_live_data import _deliveries, _events, _work
from tests.support.cluster import Cluster

LABELS = (
    "SELECT array_agg(enumlabel::text ORDER BY enumsortorder) FROM pg_enum "
    "WHERE enumtypid = to_regtype('email.delivery_status')"
)


async def test_the_status_is_added_to_a_populated_table_and_comes_and_goes(
    cluster: Cluster, empty_database: str
) -> None:
    cluster.migrate(empty_database, "0010")
    conn = await asyncpg.connect(cluster.dsn(empty_database))
    try:
        await _work(conn, "old", 30)
        events, deliveries = await _events(conn), await _deliveries(conn)
        relfilenode = await conn.fetchval(
            "SELECT relfilenode FROM pg_class WHERE oid = 'email.deliveries'::regclass"
        )

        cluster.migrate(empty_database, "0011")
        assert (await conn.fetchval(LABELS))[-1] == "suppressed"
        assert await _events(conn) == events and await _deliveries(conn) == deliveries
        assert relfilenode == await conn.fetchval(  # no rewrite
            "SELECT relfilenode FROM pg_class WHERE oid = 'email.deliveries'::regclass"
        )

        cluster.migrate(empty_database, "head")
        await conn.execute(
            "INSERT INTO email.suppressions (address, reason) VALUES ('a@b.io', 'manual')"
        )
        row = await conn.fetchrow(
            "SELECT status::text, last_error_code FROM email.enqueue_delivery("
            "'late', 'invite', 'a@b.io', '{}', NULL)"
        )
        assert tuple(row) == ("suppressed", "SUPPRESSED_MANUAL")

        with pytest.raises(Exception, match="still suppressed"):
            cluster.migrate(empty_database, "0010", downgrade=True)
        # A new session: the type and the functions are new objects (a pooled client's
        # cached plans of the old ones are invalid after a downgrade, as after any DDL of it).
        await conn.close()
        conn = await asyncpg.connect(cluster.dsn(empty_database))
        await conn.execute("DELETE FROM email.deliveries WHERE delivery_id = 'late'")
        cluster.migrate(empty_database, "0010", downgrade=True)
        # A new session: the type and the functions are new objects (a pooled client's
        # cached plans of the old ones are invalid after a downgrade, as after any DDL of it).
        await conn.close()
        conn = await asyncpg.connect(cluster.dsn(empty_database))
        assert await _events(conn) == events and await _deliveries(conn) == deliveries
        assert await conn.fetchval("SELECT to_regclass('email.suppressions')") is None
        # The type was rebuilt without the label, everything that names it restored.
        assert await conn.fetchval(LABELS) == [
            "queued",
            "in_progress",
            "sent",
            "retrying",
            "failed",
            "dead_letter",
        ]
        await _work(conn, "down", 3)

        cluster.migrate(empty_database, "head")
        assert (await conn.fetchval(LABELS)).count("suppressed") == 1
        assert [d for d in await _deliveries(conn) if d[0].startswith("old")] == deliveries
    finally:
        await conn.close()
