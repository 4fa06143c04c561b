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
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any, NoReturn, TextIO

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import NullPool

from email_delivery import queries, retention
from email_delivery.engine import make_engine, pooler_for
from email_delivery.errors import (
    DeliveryNotFound,
    EmailDeliveryError,
    InvalidInput,
    translate_errors,
)
from email_delivery.urls import database_url_from_env, location

PROG = "email-delivery"
_CONNECT_TIMEOUT_S = 10


# ---------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A value as it appears in ``--json``: ISO 8601 times, seconds for intervals."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, timedelta):
        return _human_duration(value)
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, dict | list):
        return json.dumps(_plain(value), separators=(",", ":"))
    return str(value)


def _human_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{n}{u}" for n, u in ((days, "d"), (hours, "h"), (minutes, "m")) if n]
    return "".join(parts) + (f"{seconds}s" if seconds or not parts else "")


def print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO) -> None:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    out.write("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip() + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for row in cells:
        out.write("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n")


def print_csv(columns: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(
            [
                ""
                if v is None
                else json.dumps(_plain(v))
                if isinstance(v, dict | list)
                else _plain(v)
                for v in row
            ]
        )


def print_json(document: Any, out: TextIO) -> None:
    out.write(json.dumps(_plain(document), indent=2, sort_keys=False) + "\n")


def _records(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(columns, row, strict=True)) for row in rows]


class ProgressBar:
    """A progress bar on stderr, no dependency needed.

    On a terminal one line is redrawn with ``\\r`` at each whole percent; elsewhere (CI logs,
    pipes) a line is written at each tenth, so a log does not fill with redraws.
    """

    def __init__(self, total: int, label: str, out: TextIO, width: int = 30) -> None:
        self.total, self.label, self.out, self.width = total, label, out, width
        self.interactive = out.isatty()
        self._drawn: int | None = None

    def update(self, done: int) -> None:
        fraction = 1.0 if self.total <= 0 else min(done / self.total, 1.0)
        step = int(fraction * (100 if self.interactive else 10))
        if step == self._drawn:
            return
        self._drawn = step
        filled = int(self.width * fraction)
        bar = "#" * filled + "-" * (self.width - filled)
        line = f"{self.label} [{bar}] {fraction:4.0%} {done:,}/{self.total:,}"
        self.out.write(f"\r{line}" if self.interactive else f"{line}\n")
        self.out.flush()

    def close(self) -> None:
        if self.interactive:
            self.out.write("\n")
            self.out.flush()


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


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (hint: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Operate schema email: migrate, verify, look up deliveries, statistics, "
        "stuck work, requeue, retention. Reads DATABASE_URL.",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    migrate = commands.add_parser("migrate", help="upgrade, downgrade or show the revision")
    migrate_actions = migrate.add_subparsers(dest="action", required=True, parser_class=_Parser)
    up = migrate_actions.add_parser("upgrade", help="alembic upgrade (default: head)")
    up.add_argument("revision", nargs="?", default="head")
    up.add_argument("--sql", action="store_true", help="print the SQL script instead")
    down = migrate_actions.add_parser("downgrade", help="alembic downgrade to REVISION")
    down.add_argument("revision")
    down.add_argument("--sql", action="store_true", help="print the SQL script instead")
    current = migrate_actions.add_parser("current", help="the database's revision")
    current.add_argument("--json", action="store_true")

    verify = commands.add_parser("verify", help="confirm the schema is exactly as designed")
    verify.add_argument("--json", action="store_true")

    status = commands.add_parser("status", help="one delivery's current row")
    status.add_argument("delivery_id")
    status.add_argument("--json", action="store_true")

    history = commands.add_parser("history", help="one delivery's audit trail")
    history.add_argument("delivery_id")
    _formats(history)

    find = commands.add_parser("find", help="a recipient's deliveries, newest first")
    find.add_argument("--recipient", required=True)
    find.add_argument("--limit", type=_positive_int, default=50)
    find.add_argument("--cursor", help="next_cursor printed by the previous page")
    _formats(find)

    stats = commands.add_parser("stats", help="per-workflow statistics over a window")
    stats.add_argument("--since", type=parse_duration, default=timedelta(hours=24))
    stats.add_argument("--by", choices=["workflow"], default="workflow")
    stats.add_argument("--bucket", choices=["hour", "day"])
    stats.add_argument("--workflow")
    _formats(stats)

    stuck = commands.add_parser("stuck", help="non-terminal deliveries untouched for a while")
    stuck.add_argument("--older-than", type=parse_duration, default=timedelta(minutes=10))
    stuck.add_argument("--limit", type=_positive_int, default=100)
    stuck.add_argument(
        "--reap",
        action="store_true",
        help="move in_progress claims older than --older-than back to retrying "
        "(dead_letter when out of attempts)",
    )
    stuck.add_argument("--max-attempts", type=_positive_int, default=5)
    _formats(stuck)

    requeue = commands.add_parser("requeue", help="failed/dead_letter back to queued")
    requeue.add_argument("delivery_id")
    requeue.add_argument("--reason", required=True)
    requeue.add_argument("--json", action="store_true")

    prune = commands.add_parser("prune", help="delete finished deliveries past retention")
    prune.add_argument("--older-than", type=parse_duration, default=timedelta(days=90))
    prune.add_argument("--keep-failed", type=parse_duration, default=timedelta(days=365))
    prune.add_argument("--scrub-after", type=parse_duration)
    prune.add_argument("--batch-size", type=_positive_int, default=5000)
    prune.add_argument("--dry-run", action="store_true")
    prune.add_argument("--json", action="store_true")

    export = commands.add_parser(
        "export-sql", help="write the full migration as a Supabase CLI migration file"
    )
    export.add_argument("--directory", type=Path, default=Path("supabase/migrations"))
    export.add_argument("--name", default="email_delivery")
    return parser


def _formats(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--json", action="store_true")
    group.add_argument("--csv", action="store_true")


# ---------------------------------------------------------------------------------------------
# Database access and error translation
# ---------------------------------------------------------------------------------------------


def _engine() -> AsyncEngine:
    url = database_url_from_env()
    return make_engine(
        url,
        pooler=pooler_for(url),
        poolclass=NullPool,
        connect_args={"timeout": _CONNECT_TIMEOUT_S},
    )


async def _with_connection(
    action: Callable[[AsyncConnection], Awaitable[int]], *, engine: AsyncEngine | None = None
) -> int:
    engine = engine or _engine()
    try:
        async with translate_errors(database=location(engine.url)), engine.connect() as conn:
            return await action(conn)
    finally:
        await engine.dispose()


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


def _rows(result: Any) -> tuple[list[str], list[tuple[Any, ...]]]:
    return list(result.keys()), [tuple(row) for row in result.all()]


async def cmd_status(args: argparse.Namespace, out: TextIO) -> int:
    async def action(conn: AsyncConnection) -> int:
        columns, rows = _rows(await conn.execute(queries.delivery(delivery_id=args.delivery_id)))
        if not rows:
            raise DeliveryNotFound(args.delivery_id)
        record = _records(columns, rows)[0]
        if args.json:
            print_json(record, out)
        else:
            print_table(["field", "value"], list(record.items()), out)
        return 0

    return await _with_connection(action)


async def cmd_history(args: argparse.Namespace, out: TextIO) -> int:
    async def action(conn: AsyncConnection) -> int:
        exists = (await conn.execute(queries.delivery(delivery_id=args.delivery_id))).first()
        if exists is None:
            raise DeliveryNotFound(args.delivery_id)
        columns, rows = _rows(
            await conn.execute(queries.delivery_events(delivery_id=args.delivery_id))
        )
        _emit(args, columns, rows, out, key="events")
        return 0

    return await _with_connection(action)


def _emit(
    args: argparse.Namespace,
    columns: list[str],
    rows: list[tuple[Any, ...]],
    out: TextIO,
    *,
    key: str,
    extra: dict[str, Any] | None = None,
) -> None:
    if args.json:
        print_json({key: _records(columns, rows), **(extra or {})}, out)
    elif getattr(args, "csv", False):
        print_csv(columns, rows, out)
    else:
        print_table(columns, rows, out)
        for name, value in (extra or {}).items():
            if value is not None:
                out.write(f"{name}: {_cell(value)}\n")


async def cmd_find(args: argparse.Namespace, out: TextIO) -> int:
    after = queries.Cursor.decode(args.cursor) if args.cursor else None
    statement = queries.recipient_deliveries(
        recipient=args.recipient, limit=args.limit, after=after
    )

    async def action(conn: AsyncConnection) -> int:
        columns, rows = _rows(await conn.execute(statement))
        next_cursor = None
        if len(rows) == args.limit:
            last = dict(zip(columns, rows[-1], strict=True))
            next_cursor = queries.Cursor(
                queued_at=last["queued_at"], delivery_id=last["delivery_id"]
            ).encode()
        shown = ["delivery_id", "workflow", "status", "attempts", "last_error_code", "queued_at"]
        if not (args.json or args.csv):
            index = [columns.index(c) for c in shown]
            rows = [tuple(row[i] for i in index) for row in rows]
            columns = shown
        _emit(args, columns, rows, out, key="deliveries", extra={"next_cursor": next_cursor})
        return 0

    return await _with_connection(action)


async def cmd_stats(args: argparse.Namespace, out: TextIO) -> int:
    until = datetime.now(UTC)
    statement = queries.workflow_stats(
        since=until - args.since, until=until, bucket=args.bucket, workflow=args.workflow
    )

    async def action(conn: AsyncConnection) -> int:
        columns, rows = _rows(await conn.execute(statement))
        if args.json:
            print_json(
                {
                    "since": until - args.since,
                    "until": until,
                    "bucket": args.bucket,
                    "workflows": _records(columns, rows),
                },
                out,
            )
            return 0
        if not args.csv:
            # The table is for people: short headers, no empty bucket column.
            if not args.bucket:
                index = columns.index("bucket")
                columns = columns[:index] + columns[index + 1 :]
                rows = [row[:index] + row[index + 1 :] for row in rows]
            rows = [
                tuple(
                    ", ".join(f"{e['code']}:{e['count']}" for e in v) if isinstance(v, list) else v
                    for v in row
                )
                for row in rows
            ]
            columns = [c.replace("latency_", "").replace("_s", " s") for c in columns]
        _emit(args, columns, rows, out, key="workflows")
        return 0

    return await _with_connection(action)


async def cmd_stuck(args: argparse.Namespace, out: TextIO) -> int:
    async def action(conn: AsyncConnection) -> int:
        columns, rows = _rows(
            await conn.execute(
                queries.pending_deliveries(older_than=args.older_than, limit=args.limit)
            )
        )
        await conn.rollback()
        reaped: list[dict[str, Any]] = []
        if args.reap:
            from email_delivery.tracker import DeliveryTracker

            async with DeliveryTracker(conn.engine) as tracker:
                moved = await tracker.reap_stale(
                    lease=args.older_than, max_attempts=args.max_attempts, limit=args.limit
                )
            reaped = [
                {"delivery_id": d.delivery_id, "status": d.status, "attempts": d.attempts}
                for d in moved
            ]
        shown = ["delivery_id", "workflow", "status", "attempts", "last_error_code", "idle_for"]
        if not (args.json or args.csv):
            index = [columns.index(c) for c in shown]
            rows = [tuple(row[i] for i in index) for row in rows]
            columns = shown
        extra: dict[str, Any] = {"reaped": reaped} if args.reap else {}
        if args.json or args.csv:
            _emit(args, columns, rows, out, key="deliveries", extra=extra if args.json else None)
        else:
            _emit(args, columns, rows, out, key="deliveries")
            if args.reap:
                out.write(f"reaped: {len(reaped)}\n")
                for item in reaped:
                    out.write(f"  {item['delivery_id']} -> {_cell(item['status'])}\n")
        return 0

    return await _with_connection(action)


async def cmd_requeue(args: argparse.Namespace, out: TextIO) -> int:
    from email_delivery.tracker import DeliveryTracker

    engine = _engine()
    try:
        async with DeliveryTracker(engine) as tracker:
            result = await tracker.requeue(args.delivery_id, reason=args.reason)
    finally:
        await engine.dispose()
    document = {
        "delivery_id": result.delivery.delivery_id,
        "status": result.delivery.status,
        "changed": result.changed,
    }
    if args.json:
        print_json(document, out)
    elif result.changed:
        out.write(f"requeued {args.delivery_id}: now {result.delivery.status.value}\n")
    else:
        out.write(
            f"not requeued {args.delivery_id}: it is {result.delivery.status.value} "
            "(only failed and dead_letter deliveries can be requeued)\n"
        )
    return 0


async def cmd_prune(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    engine = _engine()
    bar: ProgressBar | None = None

    def progress(report: retention.PruneReport) -> None:
        nonlocal bar
        if bar is None:
            bar = ProgressBar(report.expected_deliveries or 0, "pruning", err)
        bar.update(report.deleted_deliveries)

    try:
        report = await retention.prune(
            engine,
            older_than=args.older_than,
            keep_failed_for=args.keep_failed,
            batch_size=args.batch_size,
            scrub_after=args.scrub_after,
            dry_run=args.dry_run,
            progress=None if args.dry_run or args.json else progress,
        )
    finally:
        if bar is not None:
            bar.close()
        await engine.dispose()
    if args.json:
        print_json(report.as_dict(), out)
    else:
        verb = "would delete" if report.dry_run else "deleted"
        rows: list[tuple[str, float]] = [
            (f"{verb} deliveries", report.deleted_deliveries),
            (f"{verb} events", report.deleted_events),
            *((status, count) for status, count in report.by_status.items()),
        ]
        if not report.dry_run:
            rows += [
                ("scrubbed deliveries", report.scrubbed_deliveries),
                ("scrubbed events", report.scrubbed_events),
                ("batches", report.batches),
                ("longest statement s", round(report.longest_statement_s, 4)),
            ]
        rows.append(("elapsed s", round(report.elapsed_s, 3)))
        print_table(["prune", "count"], rows, out)
    return 0


async def cmd_verify(args: argparse.Namespace, out: TextIO) -> int:
    from email_delivery import verify

    def check(sync: Connection) -> list[str]:
        return verify.verify(sync)  # NotMigrated when schema email is not there

    async def action(conn: AsyncConnection) -> int:
        await conn.begin()
        try:
            problems = await conn.run_sync(check)
        finally:
            await conn.rollback()
        if args.json:
            print_json({"ok": not problems, "problems": problems}, out)
        elif problems:
            for line in problems:
                out.write(f"{line}\n")
        else:
            out.write("ok: schema email is at head and as designed\n")
        return 1 if problems else 0

    return await _with_connection(action)


async def cmd_migrate(args: argparse.Namespace, out: TextIO) -> int:
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
    engine = _engine()
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

        return await _with_connection(action, engine=engine)
    await engine.dispose()
    url = database_url_from_env()
    async with translate_errors(database=location(url)):
        if args.action == "upgrade":
            await migrate.upgrade(url, args.revision)
        else:
            await migrate.downgrade(url, args.revision)
    out.write(f"{args.action} to {args.revision}: done\n")
    return 0


def cmd_export_sql(args: argparse.Namespace, out: TextIO) -> int:
    from alembic import command

    from email_delivery import migrate

    buffer = io.StringIO()
    config = migrate.alembic_config()
    config.stdout = buffer
    config.output_buffer = buffer
    command.upgrade(config, "head", sql=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    args.directory.mkdir(parents=True, exist_ok=True)
    path = args.directory / f"{stamp}_{args.name}.sql"
    header = (
        f"-- Schema email, generated by `{PROG} export-sql` (alembic upgrade head --sql).\n"
        "-- The Supabase CLI (supabase db push) runs a migration file in one transaction, so\n"
        "-- Alembic's own BEGIN;/COMMIT; lines are left out; with psql use `psql -1 -f FILE`.\n"
        "-- It records the revision in email.alembic_version, so later releases can go on\n"
        f"-- with `{PROG} migrate upgrade` or a new export.\n"
    )
    # An explicit COMMIT; BEGIN; inside a file makes the Supabase CLI skip what follows.
    body = "".join(
        line
        for line in buffer.getvalue().splitlines(keepends=True)
        if line.strip() not in {"BEGIN;", "COMMIT;"}
    )
    path.write_text(header + body, encoding="utf-8")
    out.write(f"{path}\n")
    return 0


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def _dispatch(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    command = args.command
    if command == "export-sql":
        return cmd_export_sql(args, out)
    handlers: dict[str, Callable[[], Awaitable[int]]] = {
        "status": lambda: cmd_status(args, out),
        "history": lambda: cmd_history(args, out),
        "find": lambda: cmd_find(args, out),
        "stats": lambda: cmd_stats(args, out),
        "stuck": lambda: cmd_stuck(args, out),
        "requeue": lambda: cmd_requeue(args, out),
        "prune": lambda: cmd_prune(args, out, err),
        "verify": lambda: cmd_verify(args, out),
        "migrate": lambda: cmd_migrate(args, out),
    }
    return _run(handlers[command]())


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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (the console script exits with it)."""
    out, err = sys.stdout, sys.stderr
    args = build_parser().parse_args(argv)  # a usage error exits 2 with one line
    try:
        return _dispatch(args, out, err)
    except EmailDeliveryError as exc:
        # Errors without advice of their own (bad input) point at the command's help.
        hint = exc.hint or f"{PROG} {args.command} --help"
        err.write(f"{PROG}: error: {exc} (hint: {hint})\n")
        return 2
    except KeyboardInterrupt:
        err.write(f"{PROG}: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
