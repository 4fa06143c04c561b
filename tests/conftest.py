"""Fixtures: one provisioned server per session, a migrated template, a clone per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.cluster import Cluster, build_template, prepare_cluster
from tests.provisioning import Server, provision_server

# The lifecycle tests' fixtures (trackers as the worker login, owner connection).
pytest_plugins = ["tests.lifecycle_support"]


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
