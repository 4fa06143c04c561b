"""``email-delivery``: the operator's command line for schema ``email``.

Reads ``DATABASE_URL`` (``postgres://``, ``postgresql://`` or ``postgresql+asyncpg://``).
Human output is aligned tables on stdout; ``--json`` prints one JSON document whose shape
is documented in the README and kept stable (keys are only ever added). Progress and
notices go to stderr. Exit codes: 0 success; 1 ``verify`` found problems; 2 a failure a
user can fix (bad arguments, database unreachable, schema not migrated, permission denied,
unknown id), printed as one line with a hint; 130 interrupted.

The error policy: an ``EmailDeliveryError`` (which every database error users meet becomes,
through ``errors.translate_errors`` around each database access) is that one line. Any
other exception is a bug and keeps its traceback.

The commands live in one module per group (``COMMAND_GROUPS``), each with a
``register(commands)`` that adds its parsers with ``set_defaults(func=command)``; a command
is ``(args, out, err) -> exit code``, a coroutine function or a plain one. They are
imported when the parser is built, so importing this package (or ``cli.output``, as the
demo does) loads none of them.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import sys
from collections.abc import Awaitable, Sequence
from typing import NoReturn

from email_delivery.errors import EmailDeliveryError

__all__ = ["COMMAND_GROUPS", "PROG", "build_parser", "main"]

PROG = "email-delivery"

COMMAND_GROUPS = (
    "schema",
    "deliveries",
    "stats",
    "retention",
    "maintenance",
    "policy",
    "feed",
    "webhooks",
    "suppress",
)
"""The modules of this package that add commands, in the order ``--help`` lists them."""


class _Parser(argparse.ArgumentParser):
    """A usage error is one line with a hint, like every other error the CLI reports."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (hint: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Operate schema email: migrate, verify, look up deliveries, statistics, "
        "stuck work, requeue, retention, maintenance, policy, health, the change feed, "
        "webhooks. Reads DATABASE_URL.",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for group in COMMAND_GROUPS:
        importlib.import_module(f"{__name__}.{group}").register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (the console script exits with it)."""
    out, err = sys.stdout, sys.stderr
    args = build_parser().parse_args(argv)  # a usage error exits 2 with one line
    try:
        result = args.func(args, out, err)
        return _run(result) if inspect.isawaitable(result) else int(result)
    except EmailDeliveryError as exc:
        # Errors without advice of their own (bad input) point at the command's help.
        hint = exc.hint or f"{PROG} {args.command} --help"
        err.write(f"{PROG}: error: {exc} (hint: {hint})\n")
        return 2
    except KeyboardInterrupt:
        err.write(f"{PROG}: interrupted\n")
        return 130


def _run(coroutine: Awaitable[int]) -> int:
    async def wrapper() -> int:
        return await coroutine

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(wrapper())
    # Called from a running loop (a notebook, an async test): run on a fresh loop elsewhere.
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, wrapper()).result()
