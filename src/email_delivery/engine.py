"""``make_engine``: an asyncpg ``AsyncEngine`` set up for the way it reaches PostgreSQL.

- ``direct``: port 5432 of the database itself. Prepared statements are cached per
  connection (asyncpg's and SQLAlchemy's caches), which is what makes repeated calls cheap.
- ``session``: a pooler in session mode (Supavisor on 5432): one server connection per client
  connection for its lifetime, so prepared statements are as safe as direct.
- ``transaction``: a pooler in transaction mode (Supavisor or PgBouncer on 6543): consecutive
  statements may run on different server connections, so nothing may outlive a statement.
  Both statement caches are off (asyncpg then parses each statement anew within its own
  message sequence) and SQLAlchemy's prepared statements get unique names, as the SQLAlchemy
  asyncpg dialect documents for PgBouncer. Session state (``SET``, advisory locks, ``LISTEN``)
  does not survive a statement either; the lifecycle API uses none.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from email_delivery.errors import InvalidInput
from email_delivery.urls import async_url

__all__ = ["TRANSACTION_POOLER_PORT", "Pooler", "make_engine", "pooler_for"]

Pooler = Literal["direct", "session", "transaction"]

TRANSACTION_POOLER_PORT = 6543
"""Where Supavisor (and PgBouncer, by Supabase's convention) listen in transaction mode."""


def pooler_for(url: str | URL) -> Pooler:
    """The mode a bare URL implies: ``transaction`` on port 6543, else ``direct``."""
    return "transaction" if async_url(url).port == TRANSACTION_POOLER_PORT else "direct"


_POOLERS: tuple[str, ...] = ("direct", "session", "transaction")


def _unique_statement_name() -> str:
    return f"__asyncpg_{uuid.uuid4()}__"


def make_engine(url: str | URL, *, pooler: Pooler = "direct", **kwargs: Any) -> AsyncEngine:
    """An ``AsyncEngine`` on ``url`` (any PostgreSQL URL form) for ``pooler``.

    Extra keyword arguments go to ``create_async_engine``; ``connect_args`` given there are
    merged over this function's, so a caller can still override a setting on purpose.
    """
    if pooler not in _POOLERS:
        raise InvalidInput("pooler", f"must be one of {', '.join(_POOLERS)}, not {pooler!r}")
    connect_args: dict[str, Any] = {}
    if pooler == "transaction":
        connect_args = {
            "statement_cache_size": 0,
            "prepared_statement_cache_size": 0,
            "prepared_statement_name_func": _unique_statement_name,
        }
    connect_args.update(kwargs.pop("connect_args", {}))
    return create_async_engine(async_url(url), connect_args=connect_args, **kwargs)
