"""Alembic environment for schema ``email``.

Online: ``$DATABASE_URL`` through asyncpg, or a connection passed in
``config.attributes["connection"]`` (tests, ``email-delivery migrate``). Offline (``--sql``):
a complete script, schema creation included. Autogenerate sees schema ``email`` and nothing
else, for every object type, and the version table lives in ``email``, never in ``public``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy import Connection, Engine, pool, text
from sqlalchemy.ext.asyncio import create_async_engine

import email_delivery.migration_ops  # noqa: F401 - registers op.create_group_role and friends
from email_delivery import autogen
from email_delivery.base import SCHEMA
from email_delivery.urls import async_url, database_url_from_env

autogen.register()

# alembic_utils compares functions, triggers and policies by creating them, which fails while
# their table does not exist yet: `alembic -x entities=off revision --autogenerate` then
# autogenerates tables alone, and the entities are added by hand (see README).
ENTITIES_OFF = context.get_x_argument(as_dictionary=True).get("entities") == "off"

CREATE_SCHEMA = f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"


def include_object(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    return not (ENTITIES_OFF and type_ in {t.type_ for t in autogen.ENTITY_TYPES})


def _configure(**kwargs: Any) -> None:
    context.configure(
        **autogen.COMPARE_OPTIONS,
        include_object=include_object,
        transaction_per_migration=True,
        **kwargs,
    )


def run_migrations_offline() -> None:
    url = context.config.get_main_option("sqlalchemy.url") or "postgresql+asyncpg://"
    _configure(url=async_url(url), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.execute(CREATE_SCHEMA)
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    # The version table is created in schema email before the first revision runs.
    started_here = not connection.in_transaction()
    connection.execute(text(CREATE_SCHEMA))
    if started_here:
        connection.commit()
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    engine = create_async_engine(database_url_from_env(), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if isinstance(connection, Engine):
        # pytest-alembic passes its Engine, not a Connection.
        with connection.connect() as bound:
            do_run_migrations(bound)
            bound.commit()
    elif connection is not None:
        do_run_migrations(connection)
    else:
        asyncio.run(run_async_migrations())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
