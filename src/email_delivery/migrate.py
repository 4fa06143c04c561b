"""Run the package's Alembic migrations from Python (CLI, demo, tests)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from email_delivery.urls import async_url

_PACKAGE = Path(__file__).resolve().parent


def script_location() -> Path:
    """``alembic/`` beside the package in a wheel, else the checkout's top-level ``alembic/``."""
    packaged = _PACKAGE / "alembic"
    return packaged if packaged.is_dir() else _PACKAGE.parents[1] / "alembic"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config for this package; bound to ``connection`` when given."""
    ini = script_location().parent / "alembic.ini"
    config = Config(str(ini)) if ini.is_file() else Config()
    config.set_main_option("script_location", str(script_location()))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


async def upgrade(url: str | URL, revision: str = "head") -> None:
    """``alembic upgrade`` on ``url`` (any accepted PostgreSQL URL), through asyncpg."""
    await _run(url, lambda config: command.upgrade(config, revision))


async def downgrade(url: str | URL, revision: str) -> None:
    """``alembic downgrade`` on ``url``."""
    await _run(url, lambda config: command.downgrade(config, revision))


async def _run(url: str | URL, action: Callable[[Config], None]) -> None:
    engine = create_async_engine(async_url(url), poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(lambda sync: action(alembic_config(sync)))
    finally:
        await engine.dispose()
