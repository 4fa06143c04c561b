"""Database URLs as users write them, turned into what the drivers accept."""

from __future__ import annotations

import os

from sqlalchemy.engine import URL, make_url

from email_delivery.errors import DatabaseUrlError

_ASYNC_DRIVER = "postgresql+asyncpg"
_SYNC_DRIVER = "postgresql+psycopg"


def async_url(url: str | URL) -> URL:
    """``postgres://``, ``postgresql://`` or ``postgresql+<driver>://`` as an asyncpg URL."""
    return _with_driver(url, _ASYNC_DRIVER)


def sync_url(url: str | URL) -> URL:
    """The same URL for psycopg 3 (the ``sync`` extra)."""
    return _with_driver(url, _SYNC_DRIVER)


def database_url_from_env(variable: str = "DATABASE_URL") -> URL:
    """The asyncpg URL in ``$DATABASE_URL``, or a clear error when it is not set."""
    raw = os.environ.get(variable, "").strip()
    if not raw:
        raise DatabaseUrlError(
            f"{variable} is not set; e.g. postgresql://postgres:PASSWORD@HOST:5432/postgres"
        )
    return async_url(raw)


def location(url: URL) -> str:
    """``host:port/database`` for messages: never the user or password."""
    return f"{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"


def _with_driver(url: str | URL, driver: str) -> URL:
    if isinstance(url, str) and url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise DatabaseUrlError(f"not a database URL: {exc}") from None
    if parsed.get_backend_name() != "postgresql":
        raise DatabaseUrlError(f"not a PostgreSQL URL: {parsed.drivername}://…")
    return parsed.set(drivername=driver)
