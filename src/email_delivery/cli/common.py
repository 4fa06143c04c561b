"""What the command groups share: argument types, ``--json``/``--csv``, the database
connection (from ``DATABASE_URL``, inside ``errors.translate_errors``) and result output."""

from __future__ import annotations

import argparse
import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any, TextIO, TypeAlias

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import NullPool

from email_delivery.cli.output import cell, print_csv, print_json, print_table
from email_delivery.engine import make_engine, pooler_for
from email_delivery.errors import translate_errors
from email_delivery.urls import database_url_from_env, location

Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
"""What a command group's ``register`` adds its parsers to."""

_CONNECT_TIMEOUT_S = 10

# ---------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+)\s*([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: str) -> timedelta:
    """``90s``, ``10m``, ``24h``, ``90d``, ``2w``, or a sum like ``1h30m``."""
    text = value.strip().lower()
    if not text or _DURATION.sub("", text).strip():
        raise argparse.ArgumentTypeError(
            f"not a duration: {value!r} (use e.g. 10m, 24h, 90d, 1h30m)"
        )
    return timedelta(seconds=sum(int(n) * _UNIT_SECONDS[u] for n, u in _DURATION.findall(text)))


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number


def add_format_flags(parser: argparse.ArgumentParser) -> None:
    """``--json`` or ``--csv`` (a table when neither)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--json", action="store_true")
    group.add_argument("--csv", action="store_true")


# ---------------------------------------------------------------------------------------------
# The database
# ---------------------------------------------------------------------------------------------


def engine() -> AsyncEngine:
    """An engine on ``DATABASE_URL`` for one command: no pool, no prepared statements behind
    a transaction pooler (port 6543), a connect timeout."""
    url = database_url_from_env()
    return make_engine(
        url,
        pooler=pooler_for(url),
        poolclass=NullPool,
        connect_args={"timeout": _CONNECT_TIMEOUT_S},
    )


async def with_connection(
    action: Callable[[AsyncConnection], Awaitable[int]], *, bind: AsyncEngine | None = None
) -> int:
    """Run ``action`` on one connection, its database errors translated; then dispose."""
    bind = bind or engine()
    try:
        async with translate_errors(database=location(bind.url)), bind.connect() as conn:
            return await action(conn)
    finally:
        await bind.dispose()


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


def columns_and_rows(result: Any) -> tuple[list[str], list[tuple[Any, ...]]]:
    """A SQLAlchemy result as column names and row tuples."""
    return list(result.keys()), [tuple(row) for row in result.all()]


def records(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(columns, row, strict=True)) for row in rows]


def emit(
    args: argparse.Namespace,
    columns: list[str],
    rows: list[tuple[Any, ...]],
    out: TextIO,
    *,
    key: str,
    extra: dict[str, Any] | None = None,
) -> None:
    """Rows as ``{key: [...], **extra}`` with ``--json``, CSV with ``--csv``, else a table
    followed by ``name: value`` lines for ``extra``."""
    if args.json:
        print_json({key: records(columns, rows), **(extra or {})}, out)
    elif getattr(args, "csv", False):
        print_csv(columns, rows, out)
    else:
        print_table(columns, rows, out)
        for name, value in (extra or {}).items():
            if value is not None:
                out.write(f"{name}: {cell(value)}\n")
