"""Commands about deliveries: ``status``, ``history``, ``find``, ``stuck``, ``requeue``."""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import Any, TextIO

from sqlalchemy.ext.asyncio import AsyncConnection

from email_delivery import queries
from email_delivery.cli import common
from email_delivery.cli.common import Commands, columns_and_rows, emit, records
from email_delivery.cli.output import cell, print_json, print_table
from email_delivery.errors import DeliveryNotFound


def register(commands: Commands) -> None:
    status = commands.add_parser("status", help="one delivery's current row")
    status.add_argument("delivery_id")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    history = commands.add_parser("history", help="one delivery's audit trail")
    history.add_argument("delivery_id")
    common.add_format_flags(history)
    history.set_defaults(func=cmd_history)

    find = commands.add_parser("find", help="a recipient's deliveries, newest first")
    find.add_argument("--recipient", required=True)
    find.add_argument("--limit", type=common.positive_int, default=50)
    find.add_argument("--cursor", help="next_cursor printed by the previous page")
    common.add_format_flags(find)
    find.set_defaults(func=cmd_find)

    stuck = commands.add_parser("stuck", help="non-terminal deliveries untouched for a while")
    stuck.add_argument("--older-than", type=common.parse_duration, default=timedelta(minutes=10))
    stuck.add_argument("--limit", type=common.positive_int, default=100)
    stuck.add_argument(
        "--reap",
        action="store_true",
        help="move claims past their stored expiry back to retrying "
        "(dead_letter when out of attempts)",
    )
    stuck.add_argument(
        "--max-attempts",
        type=common.positive_int,
        help="the retry budget when reaping (default: each workflow's policy)",
    )
    common.add_format_flags(stuck)
    stuck.set_defaults(func=cmd_stuck)

    requeue = commands.add_parser("requeue", help="failed/dead_letter back to queued")
    requeue.add_argument("delivery_id")
    requeue.add_argument("--reason", required=True)
    requeue.add_argument("--json", action="store_true")
    requeue.set_defaults(func=cmd_requeue)


async def cmd_status(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    async def action(conn: AsyncConnection) -> int:
        columns, rows = columns_and_rows(
            await conn.execute(queries.delivery(delivery_id=args.delivery_id))
        )
        if not rows:
            raise DeliveryNotFound(args.delivery_id)
        record = records(columns, rows)[0]
        # What the provider said (revision 0010): outcome, provider, message id.
        facts_columns, facts = columns_and_rows(
            await conn.execute(queries.delivery_outcome(delivery_id=args.delivery_id))
        )
        empty: dict[str, Any] = dict.fromkeys(facts_columns)
        record |= records(facts_columns, facts)[0] if facts else empty
        if args.json:
            print_json(record, out)
        else:
            print_table(["field", "value"], list(record.items()), out)
        return 0

    return await common.with_connection(action)


async def cmd_history(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    async def action(conn: AsyncConnection) -> int:
        exists = (await conn.execute(queries.delivery(delivery_id=args.delivery_id))).first()
        if exists is None:
            raise DeliveryNotFound(args.delivery_id)
        columns, rows = columns_and_rows(
            await conn.execute(queries.delivery_events(delivery_id=args.delivery_id))
        )
        # The outcome's own trail (revision 0010): the provider's events, kept apart from
        # the pipeline's audit events.
        outcome_columns, outcome_rows = columns_and_rows(
            await conn.execute(queries.outcome_events(delivery_id=args.delivery_id))
        )
        if args.json:
            print_json(
                {
                    "events": records(columns, rows),
                    "outcome_events": records(outcome_columns, outcome_rows),
                },
                out,
            )
            return 0
        emit(args, columns, rows, out, key="events")
        if outcome_rows and not args.csv:
            out.write("\nprovider events:\n")
            print_table(outcome_columns, outcome_rows, out)
        return 0

    return await common.with_connection(action)


async def cmd_find(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    after = queries.Cursor.decode(args.cursor) if args.cursor else None
    statement = queries.recipient_deliveries(
        recipient=args.recipient, limit=args.limit, after=after
    )

    async def action(conn: AsyncConnection) -> int:
        columns, rows = columns_and_rows(await conn.execute(statement))
        next_cursor = None
        if len(rows) == args.limit:
            last = dict(zip(columns, rows[-1], strict=True))
            next_cursor = queries.Cursor(
                queued_at=last["queued_at"], delivery_id=last["delivery_id"]
            ).encode()
        shown = [
            "delivery_id",
            "workflow",
            "status",
            "outcome",
            "attempts",
            "last_error_code",
            "queued_at",
        ]
        if not (args.json or args.csv):
            index = [columns.index(c) for c in shown]
            rows = [tuple(row[i] for i in index) for row in rows]
            columns = shown
        emit(args, columns, rows, out, key="deliveries", extra={"next_cursor": next_cursor})
        return 0

    return await common.with_connection(action)


async def cmd_stuck(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    async def action(conn: AsyncConnection) -> int:
        columns, rows = columns_and_rows(
            await conn.execute(
                queries.pending_deliveries(older_than=args.older_than, limit=args.limit)
            )
        )
        await conn.rollback()
        reaped: list[dict[str, Any]] = []
        if args.reap:
            from email_delivery.tracker import DeliveryTracker

            async with DeliveryTracker(conn.engine) as tracker:
                moved = await tracker.reap_stale(max_attempts=args.max_attempts, limit=args.limit)
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
            emit(args, columns, rows, out, key="deliveries", extra=extra if args.json else None)
        else:
            emit(args, columns, rows, out, key="deliveries")
            if args.reap:
                out.write(f"reaped: {len(reaped)}\n")
                for item in reaped:
                    out.write(f"  {item['delivery_id']} -> {cell(item['status'])}\n")
        return 0

    return await common.with_connection(action)


async def cmd_requeue(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from email_delivery.tracker import DeliveryTracker

    engine = common.engine()
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
