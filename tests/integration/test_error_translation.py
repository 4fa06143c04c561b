"""Database errors reach a caller as the package's own (``errors.translate_errors``), through
the tracker's connection path and through retention, against real PostgreSQL; a bug's
error is left as it is."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from email_delivery import (
    AttemptsDecreased,
    DatabaseUnavailable,
    DeliveryTracker,
    EmailDeliveryError,
    IllegalTransition,
    InvalidInput,
    NotMigrated,
    PermissionDenied,
    SecretInInput,
    StatementTimeout,
    make_engine,
    retention,
)
from email_delivery.connector import Connector
from email_delivery.errors import translate_errors
from tests.support.cluster import NOBODY_LOGIN, OWNER, WORKER_LOGIN, Cluster

D = timedelta(days=1)


@pytest.fixture
async def connector(worker_engine: AsyncEngine) -> AsyncIterator[Connector]:
    """The tracker's connection path, for statements the tracker itself never sends."""
    async with Connector(worker_engine, connections=1) as held:
        yield held


@pytest.fixture
async def owner_connector(cluster: Cluster, database: str) -> AsyncIterator[Connector]:
    """The same path as the schema owner, the one login that may still update by hand."""
    engine = make_engine(cluster.url(database, OWNER), pool_size=1, max_overflow=0)
    async with Connector(engine, connections=1) as held:
        yield held
    await engine.dispose()


async def _sent(tracker: DeliveryTracker, delivery_id: str) -> None:
    await tracker.enqueue(delivery_id, workflow="invite", recipient="a@b.io")
    claim = await tracker.claim(delivery_id)
    assert claim is not None
    await tracker.mark_sent(delivery_id, attempt=claim.attempt)


async def test_a_hand_typed_illegal_update_is_an_illegal_transition(
    worker_tracker: DeliveryTracker, connector: Connector, owner_connector: Connector
) -> None:
    await _sent(worker_tracker, "d1")
    # The worker may not update by hand at all (revision 0005)...
    with pytest.raises(PermissionDenied):
        await connector.fetch(
            "UPDATE email.deliveries SET status = 'queued' WHERE delivery_id = $1", "d1"
        )
    # ...and the owner's hand-typed statement still meets the guard.
    connector = owner_connector
    with pytest.raises(IllegalTransition) as caught:
        await connector.fetch(
            "UPDATE email.deliveries SET status = 'queued' WHERE delivery_id = $1", "d1"
        )
    assert str(caught.value) == "illegal delivery status transition from sent to queued"
    assert caught.value.hint
    assert isinstance(caught.value.__cause__, asyncpg.PostgresError)
    assert caught.value.__cause__.sqlstate == "ED001"
    with pytest.raises(AttemptsDecreased, match=r"may not decrease \(from 1 to 0\)"):
        await connector.fetch("UPDATE email.deliveries SET attempts = 0 WHERE delivery_id = 'd1'")
    # The connection survived both (they are statement errors, not connection faults).
    assert connector.checked_out == 1
    assert (await worker_tracker.get("d1")) is not None


async def test_the_databases_own_input_checks_are_invalid_input(connector: Connector) -> None:
    with pytest.raises(SecretInInput, match="holds a secret") as secret:
        await connector.fetch(
            "SELECT * FROM email.enqueue_delivery('d1', 'invite', 'a@b.io', $1::jsonb, NULL)",
            '{"token": "abc"}',
        )
    assert isinstance(secret.value, InvalidInput)
    with pytest.raises(InvalidInput, match="reference must be"):
        await connector.fetch("SELECT * FROM email.mark_delivery_dead_letter('d1', '')")


async def test_a_login_without_grants_gets_permission_denied(
    cluster: Cluster, database: str
) -> None:
    engine = make_engine(cluster.url(database, NOBODY_LOGIN))
    try:
        async with DeliveryTracker(engine) as tracker:
            with pytest.raises(PermissionDenied, match="permission denied for schema email"):
                await tracker.get("d1")
            with pytest.raises(PermissionDenied):
                await tracker.enqueue("d1", workflow="invite", recipient="a@b.io")
            assert PermissionDenied.hint and "email_writer" in PermissionDenied.hint
    finally:
        await engine.dispose()


async def test_an_unreachable_server_is_database_unavailable() -> None:
    engine = make_engine("postgresql://nobody@127.0.0.1:1/nothing")
    try:
        async with DeliveryTracker(engine) as tracker:
            with pytest.raises(DatabaseUnavailable) as caught:
                await tracker.get("d1")
        assert str(caught.value).startswith("cannot connect to 127.0.0.1:1/nothing: ")
        assert isinstance(caught.value.__cause__, OSError)
        with pytest.raises(DatabaseUnavailable, match=r"cannot connect to 127\.0\.0\.1:1/nothing"):
            await retention.prune(engine, older_than=90 * D, keep_failed_for=365 * D)
    finally:
        await engine.dispose()


async def test_a_database_that_does_not_exist_is_database_unavailable(cluster: Cluster) -> None:
    engine = make_engine(cluster.url("no_such_database", WORKER_LOGIN))
    try:
        async with DeliveryTracker(engine) as tracker:
            with pytest.raises(DatabaseUnavailable, match="no_such_database") as caught:
                await tracker.get("d1")
        assert "database name" in caught.value.hint  # not the network advice
    finally:
        await engine.dispose()


async def test_an_unmigrated_database_is_not_migrated(
    cluster: Cluster, empty_database: str
) -> None:
    engine = make_engine(cluster.url(empty_database, OWNER))
    try:
        async with DeliveryTracker(engine) as tracker:
            with pytest.raises(NotMigrated, match="schema email is not migrated") as caught:
                await tracker.enqueue("d1", workflow="invite", recipient="a@b.io")
        assert "migrate upgrade" in caught.value.hint
        with pytest.raises(NotMigrated):
            await retention.prune(engine, older_than=90 * D, keep_failed_for=365 * D)
    finally:
        await engine.dispose()


async def test_a_connection_closed_mid_statement_is_a_lost_connection(
    cluster: Cluster, database: str
) -> None:
    conn = await asyncpg.connect(cluster.dsn(database))
    running = asyncio.create_task(conn.fetch("SELECT pg_sleep(5)"))
    await asyncio.sleep(0.1)
    conn.terminate()  # the socket goes away without a word from the server
    with (
        pytest.raises(DatabaseUnavailable, match=r"^lost the connection to db:5432/x: ") as caught,
        translate_errors(database="db:5432/x"),
    ):
        await running
    assert isinstance(caught.value.__cause__, asyncpg.ConnectionDoesNotExistError)


async def test_a_cancelled_statement_is_a_statement_timeout(
    cluster: Cluster, database: str
) -> None:
    engine = make_engine(
        cluster.url(database, WORKER_LOGIN),
        connect_args={"server_settings": {"statement_timeout": "50"}},
    )
    try:
        async with Connector(engine, connections=1) as connector:
            with pytest.raises(StatementTimeout, match="statement timeout"):
                await connector.fetch("SELECT pg_sleep(5)")
    finally:
        await engine.dispose()


async def test_a_bug_is_not_translated(connector: Connector) -> None:
    # A malformed statement is our mistake, not the user's: it keeps the driver's type.
    with pytest.raises(asyncpg.PostgresSyntaxError) as caught:
        await connector.fetch("SELEC 1")
    assert not isinstance(caught.value, EmailDeliveryError)
