"""``maintain``: partitions ahead and rollups (``email_delivery.maintenance``)."""

from __future__ import annotations

import argparse
from typing import TextIO

from email_delivery import maintenance
from email_delivery.cli import common
from email_delivery.cli.common import Commands
from email_delivery.cli.output import print_json, print_table


def register(commands: Commands) -> None:
    parser = commands.add_parser(
        "maintain",
        help="create the audit log's partitions ahead and refresh the dashboards' rollups",
    )
    parser.add_argument(
        "--ahead",
        default=maintenance.DEFAULT_AHEAD,
        help=f"how far ahead partitions exist (default {maintenance.DEFAULT_AHEAD!r})",
    )
    parser.add_argument(
        "--partition-interval",
        default=maintenance.DEFAULT_PARTITION_INTERVAL,
        help="what one new partition spans (default "
        f"{maintenance.DEFAULT_PARTITION_INTERVAL!r}; days, weeks or months)",
    )
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=cmd_maintain)


async def cmd_maintain(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    engine = common.engine()
    try:
        report = await maintenance.maintain(
            engine, ahead=args.ahead, partition_interval=args.partition_interval
        )
    finally:
        await engine.dispose()
    if args.json:
        print_json(report.as_dict(), out)
    else:
        print_table(
            ["maintain", "value"],
            [
                ("partitions created", ", ".join(report.partitions_created) or "-"),
                ("partitions cover until", report.covered_until),
                ("events in the default partition", report.default_partition_rows),
                ("rollup hours recomputed", report.rollup_hours_recomputed),
                ("rollup hours added", report.rollup_hours_added),
                ("rolled until", report.rolled_until),
            ],
            out,
        )
    return 0
