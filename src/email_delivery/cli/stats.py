"""``stats``: per-workflow statistics over a window (``queries.workflow_stats``);
``providers``: per-provider metrics over a window (``email.provider_metrics``)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from typing import TextIO

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from email_delivery import queries
from email_delivery.cli import common
from email_delivery.cli.common import Commands, columns_and_rows, emit, records
from email_delivery.cli.output import print_json


def register(commands: Commands) -> None:
    parser = commands.add_parser("stats", help="per-workflow statistics over a window")
    parser.add_argument("--since", type=common.parse_duration, default=timedelta(hours=24))
    parser.add_argument("--by", choices=["workflow"], default="workflow")
    parser.add_argument("--bucket", choices=["hour", "day"])
    parser.add_argument("--workflow")
    common.add_format_flags(parser)
    parser.set_defaults(func=cmd_stats)

    providers = commands.add_parser(
        "providers",
        help="per provider and workflow: attempts, accepted, delivered, bounce/complaint/"
        "deferral rates, send duration and time to delivered",
    )
    providers.add_argument("--since", type=common.parse_duration, default=timedelta(hours=24))
    common.add_format_flags(providers)
    providers.set_defaults(func=cmd_providers)


_PROVIDER_METRICS = text(
    "SELECT * FROM email.provider_metrics(CAST(:since AS timestamptz), CAST(:until AS timestamptz))"
)


async def cmd_providers(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    until = datetime.now(UTC)
    since = until - args.since

    async def action(conn: AsyncConnection) -> int:
        result = await conn.execute(_PROVIDER_METRICS, {"since": since, "until": until})
        columns, rows = columns_and_rows(result)
        if args.json:
            print_json({"since": since, "until": until, "providers": records(columns, rows)}, out)
            return 0
        emit(args, columns, rows, out, key="providers")
        return 0

    return await common.with_connection(action)


async def cmd_stats(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    until = datetime.now(UTC)
    statement = queries.workflow_stats(
        since=until - args.since, until=until, bucket=args.bucket, workflow=args.workflow
    )

    async def action(conn: AsyncConnection) -> int:
        columns, rows = columns_and_rows(await conn.execute(statement))
        if args.json:
            print_json(
                {
                    "since": until - args.since,
                    "until": until,
                    "bucket": args.bucket,
                    "workflows": records(columns, rows),
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
        emit(args, columns, rows, out, key="workflows")
        return 0

    return await common.with_connection(action)
