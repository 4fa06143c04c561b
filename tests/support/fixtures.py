"""Every fixture of the suite, loaded as a plugin by ``tests/conftest.py``.

One provisioned server per session (``provisioning``), made Supabase-shaped and given a
template database migrated as the owner (``cluster``); each test gets a fresh clone of it,
and the logins of the roles a user creates (the worker, the dashboard).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from email_delivery import DeliveryTracker, make_engine
from tests.support.cluster import OWNER, WORKER_LOGIN, Cluster, build_template, prepare_cluster
from tests.support.db import connect
from tests.support.provisioning import Server, provision_server


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    with provision_server() as provisioned:
        yield provisioned


@pytest.fixture(scope="session")
async def cluster(server: Server) -> Cluster:
    return await prepare_cluster(server)


@pytest.fixture(scope="session")
async def template_database(cluster: Cluster) -> AsyncIterator[str]:
    name = await build_template(cluster)
    yield name
    await cluster.drop_database(name)


@pytest.fixture
async def database(cluster: Cluster, template_database: str) -> AsyncIterator[str]:
    """A fresh database at head, cloned from the template."""
    async with cluster.clone(template_database, "t") as name:
        yield name


@pytest.fixture(scope="module")
async def module_database(cluster: Cluster, template_database: str) -> AsyncIterator[str]:
    """One clone for a module whose tests each roll back or use their own rows."""
    async with cluster.clone(template_database, "m") as name:
        yield name


@pytest.fixture
async def empty_database(cluster: Cluster) -> AsyncIterator[str]:
    """A fresh database owned by the migration owner, with nothing migrated."""
    name = cluster.new_database_name("e")
    await cluster.create_database(name)
    yield name
    await cluster.drop_database(name)


@pytest.fixture
async def owner_engine(cluster: Cluster, database: str) -> AsyncIterator[AsyncEngine]:
    """The migration owner (table owner) on a fresh database at head."""
    engine = create_async_engine(cluster.url(database))
    yield engine
    await engine.dispose()


@pytest.fixture
async def owner(cluster: Cluster, database: str) -> AsyncIterator[asyncpg.Connection]:
    """The table owner on a fresh clone: may write anything the constraints allow."""
    async with connect(cluster, database) as conn:
        yield conn


@pytest.fixture
async def owner_conn(cluster: Cluster, database: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain asyncpg connection as the owner, for arranging and asserting."""
    async with connect(cluster, database) as conn:
        yield conn


@pytest.fixture
async def owner_tx(cluster: Cluster, module_database: str) -> AsyncIterator[asyncpg.Connection]:
    """The table owner inside a transaction that is rolled back: cheap isolation per test.

    A statement expected to fail must run in its own savepoint (``async with
    conn.transaction():``) so the test can go on; ``now()`` is constant throughout.
    """
    async with connect(cluster, module_database) as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            yield conn
        finally:
            await transaction.rollback()


@pytest.fixture
async def worker_engine(cluster: Cluster, database: str) -> AsyncIterator[AsyncEngine]:
    """The worker login (member of email_writer only) on a fresh database at head."""
    engine = make_engine(cluster.url(database, WORKER_LOGIN), pool_size=8, max_overflow=0)
    yield engine
    await engine.dispose()


@pytest.fixture
async def worker_tracker(worker_engine: AsyncEngine) -> AsyncIterator[DeliveryTracker]:
    async with DeliveryTracker(worker_engine) as tracker:
        yield tracker


@pytest.fixture
async def operator_tracker(cluster: Cluster, database: str) -> AsyncIterator[DeliveryTracker]:
    """The schema owner: the one login allowed to requeue."""
    engine = make_engine(cluster.url(database, OWNER), pool_size=2, max_overflow=0)
    async with DeliveryTracker(engine) as tracker:
        yield tracker
    await engine.dispose()


Run = tuple[int, str, str]
"""An ``email-delivery`` run in-process: exit code, stdout, stderr."""


@pytest.fixture
def cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], cluster: Cluster
) -> object:
    """``cli(database, *args, user=None)``: the command as a user runs it, with
    ``DATABASE_URL`` pointing at ``database`` (as the owner unless ``user``)."""
    from email_delivery.cli import main

    class Cli:
        def __call__(self, database: str, *args: str, user: str | None = None) -> Run:
            dsn = cluster.dsn(database, user) if user else cluster.dsn(database)
            monkeypatch.setenv("DATABASE_URL", dsn)
            capsys.readouterr()
            code = main(list(args))
            out, err = capsys.readouterr()
            return code, out, err

    return Cli()
