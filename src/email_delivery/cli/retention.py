"""``prune``: retention (``email_delivery.retention``), with a progress bar."""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import TextIO

from email_delivery.cli import common
from email_delivery.cli.common import Commands
from email_delivery.cli.output import ProgressBar, print_json, print_table
from email_delivery.retention import PruneReport, prune


def register(commands: Commands) -> None:
    parser = commands.add_parser("prune", help="delete finished deliveries past retention")
    parser.add_argument("--older-than", type=common.parse_duration, default=timedelta(days=90))
    parser.add_argument("--keep-failed", type=common.parse_duration, default=timedelta(days=365))
    parser.add_argument("--scrub-after", type=common.parse_duration)
    parser.add_argument("--batch-size", type=common.positive_int, default=5000)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=cmd_prune)


async def cmd_prune(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    engine = common.engine()
    bar: ProgressBar | None = None

    def progress(report: PruneReport) -> None:
        nonlocal bar
        if bar is None:
            bar = ProgressBar(report.expected_deliveries or 0, "pruning", err)
        bar.update(report.deleted_deliveries)

    try:
        report = await prune(
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
