"""Fixtures of the red-team tests: a fresh clone per test and a raw connection per role.

Every attack is typed as raw SQL by a real login of the role that would hold the leaked
credential (``WORKER_LOGIN`` in ``email_writer``, ``DASHBOARD_LOGIN`` in ``email_reader``,
``NOBODY_LOGIN``), or by the owner after ``SET ROLE anon`` / ``authenticated`` /
``service_role``, as Supabase's ``postgres`` can. The owner's connection arranges and
observes; it never takes part in an attack.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from tests.support.cluster import DASHBOARD_LOGIN, NOBODY_LOGIN, OWNER, WORKER_LOGIN, Cluster
from tests.support.pgbouncer import PgBouncer, start_pgbouncer
from tests.support.provisioning import Server


@pytest.fixture
async def owner(cluster: Cluster, database: str) -> AsyncIterator[asyncpg.Connection]:
    """The table owner (Supabase's ``postgres``) on a fresh clone: arranges and observes."""
    conn = await asyncpg.connect(cluster.dsn(database, OWNER))
    yield conn
    await conn.close()


@pytest.fixture
async def superuser(
    cluster: Cluster, database: str, server: Server
) -> AsyncIterator[asyncpg.Connection]:
    """The cluster's superuser, only to move time: ``time_travel`` runs an UPDATE with
    every trigger off (``session_replication_role = replica``), so no rule can object."""
    conn = await asyncpg.connect(cluster.dsn(database, make_url(server.admin_url).username))
    yield conn
    await conn.close()


@pytest.fixture
async def worker(cluster: Cluster, database: str) -> AsyncIterator[asyncpg.Connection]:
    """The leaked credential: a login in ``email_writer``, typing raw SQL."""
    conn = await asyncpg.connect(cluster.dsn(database, WORKER_LOGIN))
    yield conn
    await conn.close()


@pytest.fixture
async def reader(cluster: Cluster, database: str) -> AsyncIterator[asyncpg.Connection]:
    """A dashboard login in ``email_reader``."""
    conn = await asyncpg.connect(cluster.dsn(database, DASHBOARD_LOGIN))
    yield conn
    await conn.close()


@pytest.fixture
async def nobody(cluster: Cluster, database: str) -> AsyncIterator[asyncpg.Connection]:
    """A login with no grants at all."""
    conn = await asyncpg.connect(cluster.dsn(database, NOBODY_LOGIN))
    yield conn
    await conn.close()


@pytest.fixture(scope="session")
def pgbouncer_one(server: Server) -> Iterator[PgBouncer]:
    """PgBouncer in transaction mode with ONE server connection per (database, user): every
    client of the same login shares that one server session, as Supavisor's 6543 may."""
    with start_pgbouncer(server, pool_size=1) as bouncer:
        yield bouncer


async def connect_via(bouncer: PgBouncer, database: str, user: str) -> asyncpg.Connection:
    """A raw asyncpg client through the transaction pooler (no statement cache)."""
    url = bouncer.url(database, user)
    return await asyncpg.connect(
        host=url.host,
        port=url.port,
        user=url.username,
        password=url.password,
        database=url.database,
        statement_cache_size=0,
    )
