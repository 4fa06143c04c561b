"""A Supabase-shaped PostgreSQL cluster for the tests, and the template database.

Supabase's ``postgres`` is NOSUPERUSER CREATEROLE CREATEDB and the Data API roles ``anon``,
``authenticated`` and ``service_role`` (BYPASSRLS) exist: this module gives any server the
same shape, migrates a template database as the non-superuser owner, and clones it per test
(``CREATE DATABASE … TEMPLATE``), which keeps a real-database suite fast.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from email_delivery.urls import sync_url
from tests.support.provisioning import Server

OWNER = "email_test_owner"
"""The migration owner: NOSUPERUSER CREATEROLE CREATEDB, like Supabase's ``postgres``."""
WORKER_LOGIN = "email_test_worker"
"""A login in group ``email_writer``, as the README tells users to create one."""
DASHBOARD_LOGIN = "email_test_dashboard"
"""A login in group ``email_reader``."""
NOBODY_LOGIN = "email_test_nobody"
"""A login with no grants at all."""

_CLUSTER_ROLES = f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'anon') THEN
        CREATE ROLE anon NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticated') THEN
        CREATE ROLE authenticated NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'service_role') THEN
        CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{OWNER}') THEN
        CREATE ROLE {OWNER} LOGIN NOSUPERUSER CREATEROLE CREATEDB PASSWORD '{OWNER}';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{WORKER_LOGIN}') THEN
        CREATE ROLE {WORKER_LOGIN} LOGIN PASSWORD '{WORKER_LOGIN}';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{DASHBOARD_LOGIN}') THEN
        CREATE ROLE {DASHBOARD_LOGIN} LOGIN PASSWORD '{DASHBOARD_LOGIN}';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{NOBODY_LOGIN}') THEN
        CREATE ROLE {NOBODY_LOGIN} LOGIN PASSWORD '{NOBODY_LOGIN}';
    END IF;
END
$$;
-- Supabase's postgres may act as the Data API roles; tests SET ROLE through the owner too.
GRANT anon, authenticated, service_role TO {OWNER};
"""


def alembic_config(connection: Any = None) -> Config:
    """The project's alembic.ini, optionally bound to an open (sync) connection."""
    config = Config("alembic.ini")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@dataclass(frozen=True)
class Cluster:
    server: Server
    run_id: str

    def url(self, database: str, user: str = OWNER) -> URL:
        """An asyncpg URL to ``database`` as ``user`` (password = user name, for Docker)."""
        admin = make_url(self.server.admin_url)
        if user == admin.username:
            return admin.set(database=database)
        return admin.set(database=database, username=user, password=user)

    def dsn(self, database: str, user: str = OWNER) -> str:
        """The same URL for asyncpg or psycopg used directly."""
        url = self.url(database, user).set(drivername="postgresql")
        return url.render_as_string(hide_password=False)

    async def admin(self) -> asyncpg.Connection:
        return await asyncpg.connect(
            self.dsn("postgres", make_url(self.server.admin_url).username or "postgres")
        )

    def new_database_name(self, purpose: str) -> str:
        return f"ed_{self.run_id}_{purpose}_{secrets.token_hex(3)}"

    async def create_database(self, name: str, *, template: str | None = None) -> None:
        conn = await self.admin()
        try:
            clause = f" TEMPLATE {template}" if template else ""
            await conn.execute(f'CREATE DATABASE "{name}" OWNER {OWNER}{clause}')
        finally:
            await conn.close()

    @contextlib.asynccontextmanager
    async def clone(self, template: str, purpose: str) -> AsyncIterator[str]:
        """A fresh copy of ``template`` (``CREATE DATABASE … TEMPLATE``), dropped afterwards."""
        name = self.new_database_name(purpose)
        await self.create_database(name, template=template)
        try:
            yield name
        finally:
            await self.drop_database(name)

    async def drop_database(self, name: str) -> None:
        conn = await self.admin()
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    def migrate(self, database: str, revision: str = "head", *, downgrade: bool = False) -> None:
        """Run ``alembic upgrade``/``downgrade`` as the owner, as a user would."""
        engine = create_engine(sync_url(self.url(database)), poolclass=NullPool)
        try:
            with engine.connect() as connection:
                config = alembic_config(connection)
                if downgrade:
                    command.downgrade(config, revision)
                else:
                    command.upgrade(config, revision)
        finally:
            engine.dispose()


async def prepare_cluster(server: Server) -> Cluster:
    cluster = Cluster(server=server, run_id=secrets.token_hex(3))
    conn = await cluster.admin()
    try:
        await conn.execute(_CLUSTER_ROLES)
    finally:
        await conn.close()
    return cluster


async def build_template(cluster: Cluster) -> str:
    """Create and migrate the template database; grant the test logins their groups."""
    name = cluster.new_database_name("template")
    await cluster.create_database(name)
    cluster.migrate(name)
    conn = await cluster.admin()
    try:
        await conn.execute(f"GRANT email_writer TO {WORKER_LOGIN}")
        await conn.execute(f"GRANT email_reader TO {DASHBOARD_LOGIN}")
    finally:
        await conn.close()
    return name
