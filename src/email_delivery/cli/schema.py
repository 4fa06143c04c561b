"""Commands about the schema itself: ``migrate``, ``verify``, ``export-sql``.

Alembic and the comparison machinery are imported inside the commands: the other commands
do not pay for them.
"""

from __future__ import annotations

import argparse
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from email_delivery.cli import PROG, common
from email_delivery.cli.common import Commands
from email_delivery.cli.output import print_json
from email_delivery.errors import InvalidInput, translate_errors
from email_delivery.urls import database_url_from_env, location


def register(commands: Commands) -> None:
    migrate = commands.add_parser("migrate", help="upgrade, downgrade or show the revision")
    actions = migrate.add_subparsers(dest="action", required=True)
    up = actions.add_parser("upgrade", help="alembic upgrade (default: head)")
    up.add_argument("revision", nargs="?", default="head")
    up.add_argument("--sql", action="store_true", help="print the SQL script instead")
    down = actions.add_parser("downgrade", help="alembic downgrade to REVISION")
    down.add_argument("revision")
    down.add_argument("--sql", action="store_true", help="print the SQL script instead")
    current = actions.add_parser("current", help="the database's revision")
    current.add_argument("--json", action="store_true")
    migrate.set_defaults(func=cmd_migrate)

    verify = commands.add_parser("verify", help="confirm the schema is exactly as designed")
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(func=cmd_verify)

    export = commands.add_parser(
        "export-sql", help="write the full migration as a Supabase CLI migration file"
    )
    export.add_argument("--directory", type=Path, default=Path("supabase/migrations"))
    export.add_argument("--name", default="email_delivery")
    export.set_defaults(func=cmd_export_sql)


async def cmd_verify(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from email_delivery import verify

    def check(sync: Connection) -> tuple[list[str], list[str]]:
        # NotMigrated when schema email is not there.
        return verify.verify(sync), verify.maintenance_warnings(sync)

    async def action(conn: AsyncConnection) -> int:
        await conn.begin()
        try:
            problems, warnings = await conn.run_sync(check)
        finally:
            await conn.rollback()
        if args.json:
            print_json({"ok": not problems, "problems": problems, "warnings": warnings}, out)
        else:
            for line in problems:
                out.write(f"{line}\n")
            if not problems:
                out.write("ok: schema email is at head and as designed\n")
            for line in warnings:
                err.write(f"{line}\n")
        # Warnings do not fail verify: the schema is as designed and nothing is lost.
        return 1 if problems else 0

    return await common.with_connection(action)


async def cmd_migrate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from alembic.util import CommandError

    try:
        return await _migrate(args, out)
    except CommandError as exc:  # Alembic's word for a user's mistake: an unknown revision …
        raise InvalidInput("revision", str(exc)) from exc


async def _migrate(args: argparse.Namespace, out: TextIO) -> int:
    from alembic import command

    from email_delivery import migrate, verify

    if args.action in {"upgrade", "downgrade"} and args.sql:
        config = migrate.alembic_config()
        config.stdout = out
        config.output_buffer = out
        if args.action == "upgrade":
            command.upgrade(config, args.revision, sql=True)
        else:
            command.downgrade(config, f"{verify.head_revision()}:{args.revision}", sql=True)
        return 0
    if args.action == "current":

        async def action(conn: AsyncConnection) -> int:
            current = await conn.run_sync(verify.current_revision)
            head = verify.head_revision()
            if args.json:
                print_json({"current": current, "head": head, "at_head": current == head}, out)
            else:
                at = " (head)" if current == head else f" (head is {head})"
                out.write(f"{current or 'not migrated'}{at}\n")
            return 0

        return await common.with_connection(action)
    url = database_url_from_env()
    async with translate_errors(database=location(url)):
        if args.action == "upgrade":
            await migrate.upgrade(url, args.revision)
        else:
            await migrate.downgrade(url, args.revision)
    out.write(f"{args.action} to {args.revision}: done\n")
    return 0


def split_for_supabase(script: str) -> list[str]:
    """The offline migration script as the files the Supabase CLI can apply in order.

    The CLI runs each migration file in one transaction, and a statement that may not run in
    a transaction (CREATE INDEX CONCURRENTLY) only alone in a file. So: one file per
    transaction Alembic opens (its BEGIN;/COMMIT; left out), and one file per statement
    Alembic runs outside a transaction (an autocommit block, the schema's creation).
    """
    files: list[str] = []
    current: list[str] = []
    in_transaction = False

    def flush() -> None:
        text = "".join(current).strip()
        sql = [line for line in text.splitlines() if line.strip() and not line.startswith("--")]
        if sql:  # a comment alone (Alembic's "-- Running upgrade …") is no migration
            files.append(text + "\n")
        current.clear()

    for line in script.splitlines(keepends=True):
        stripped = line.strip()
        if stripped == "BEGIN;":
            flush()
            in_transaction = True
            continue
        if stripped == "COMMIT;":
            flush()
            in_transaction = False
            continue
        # Outside a transaction every statement is its own file. Alembic ends a statement with
        # ";" and a blank line (a DO block's body has ";" of its own, and no blank line).
        ended = bool(current) and current[-1].rstrip().endswith(";")
        if not in_transaction and not stripped and ended:
            flush()
            continue
        current.append(line)
    flush()
    return files


def cmd_export_sql(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from alembic import command

    from email_delivery import migrate

    buffer = io.StringIO()
    config = migrate.alembic_config()
    config.stdout = buffer
    config.output_buffer = buffer
    command.upgrade(config, "head", sql=True)
    start = datetime.now(UTC).replace(microsecond=0)
    args.directory.mkdir(parents=True, exist_ok=True)
    files = split_for_supabase(buffer.getvalue())
    for index, body in enumerate(files, start=1):
        # Supabase orders migrations by their numeric prefix: one second apart keeps order.
        stamp = (start + timedelta(seconds=index - 1)).strftime("%Y%m%d%H%M%S")
        path = args.directory / f"{stamp}_{args.name}_{index:02d}.sql"
        header = (
            f"-- Schema email, part {index} of {len(files)}: generated by `{PROG} export-sql`\n"
            "-- (alembic upgrade head --sql). The Supabase CLI applies each file in its own\n"
            "-- transaction, in order; a file holding one statement that may not run in a\n"
            "-- transaction (CREATE INDEX CONCURRENTLY) runs alone. With psql: `psql -f` each.\n"
            "-- The last part records the revision in email.alembic_version, so later releases\n"
            f"-- can go on with `{PROG} migrate upgrade` or a new export.\n"
        )
        path.write_text(header + body, encoding="utf-8")
        out.write(f"{path}\n")
    return 0
