"""``suppress add|remove|list|check`` (``email_delivery.suppressions``): the suppression list.

``add`` and ``remove`` need the schema owner's ``DATABASE_URL``; ``list`` and ``check`` any
login that reads the list (``email_reader``, ``email_writer``). ``check`` exits 1 when the
address is suppressed (0 when mail goes to it), for scripts.
"""

from __future__ import annotations

import argparse
from typing import TextIO

from email_delivery import suppressions
from email_delivery.cli import common
from email_delivery.cli.common import Commands
from email_delivery.cli.output import print_json, print_table


def register(commands: Commands) -> None:
    suppress = commands.add_parser(
        "suppress", help="the suppression list: addresses no mail goes to"
    )
    actions = suppress.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="suppress an address (owner only)")
    add.add_argument("address")
    add.add_argument("--reason", choices=suppressions.SUPPRESSION_REASONS, default="manual")
    add.add_argument("--expires-in", type=common.parse_duration)
    add.add_argument("--detail")
    add.add_argument("--json", action="store_true")
    add.set_defaults(func=cmd_add)
    remove = actions.add_parser("remove", help="take an address off the list (owner only)")
    remove.add_argument("address")
    remove.add_argument("--json", action="store_true")
    remove.set_defaults(func=cmd_remove)
    list_ = actions.add_parser("list", help="the entries in force, newest first")
    list_.add_argument("--include-expired", action="store_true")
    list_.add_argument("--limit", type=common.positive_int, default=100)
    list_.add_argument("--json", action="store_true")
    list_.set_defaults(func=cmd_list)
    check = actions.add_parser("check", help="is an address suppressed? (exit 1: yes)")
    check.add_argument("address")
    check.add_argument("--json", action="store_true")
    check.set_defaults(func=cmd_check)


def _print(items: list[suppressions.Suppression], as_json: bool, out: TextIO) -> None:
    if as_json:
        print_json({"suppressions": [item.as_dict() for item in items]}, out)
        return
    columns = ["address", "reason", "source_delivery_id", "created_at", "expires_at"]
    print_table(columns, [tuple(getattr(i, c) for c in columns) for i in items], out)


async def cmd_add(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    engine = common.engine()
    try:
        entry = await suppressions.add(
            engine,
            args.address,
            reason=args.reason,
            expires_in=args.expires_in,
            detail=args.detail,
        )
    finally:
        await engine.dispose()
    _print([entry], args.json, out)
    return 0


async def cmd_remove(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    engine = common.engine()
    try:
        entry = await suppressions.remove(engine, args.address)
    finally:
        await engine.dispose()
    if entry is None:
        err.write(f"{args.address} was not suppressed\n")
    _print([] if entry is None else [entry], args.json, out)
    return 0


async def cmd_list(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    engine = common.engine()
    try:
        items = await suppressions.entries(
            engine, include_expired=args.include_expired, limit=args.limit
        )
    finally:
        await engine.dispose()
    _print(items, args.json, out)
    return 0


async def cmd_check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    engine = common.engine()
    try:
        entry = await suppressions.check(engine, args.address)
    finally:
        await engine.dispose()
    if args.json:
        print_json(
            {"suppressed": entry is not None, "entry": None if entry is None else entry.as_dict()},
            out,
        )
    elif entry is None:
        out.write("not suppressed\n")
    else:
        _print([entry], False, out)
    return 0 if entry is None else 1
