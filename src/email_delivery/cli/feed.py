"""``feed``: the gap-free change feed (``email_delivery.feed``)."""

from __future__ import annotations

import argparse
import json
from typing import TextIO

from email_delivery import feed
from email_delivery.cli import common
from email_delivery.cli.common import Commands
from email_delivery.cli.output import cell
from email_delivery.engine import make_engine, pooler_for
from email_delivery.urls import database_url_from_env

_SHOWN = ("cursor", "id", "delivery_id", "status", "attempt", "error_code", "created_at")


def register(commands: Commands) -> None:
    parser = commands.add_parser(
        "feed",
        help="every delivery change exactly once, in commit order, after a cursor",
        description="Print the audit events after --since (default: the beginning; 'now': "
        "only changes from now on), each with its cursor; the next cursor goes to stderr. "
        "--follow keeps reading (LISTEN/NOTIFY, with polling; behind a transaction pooler, "
        "port 6543, it polls only). --json prints one JSON object per line.",
    )
    parser.add_argument("--since", metavar="CURSOR", help="a cursor printed earlier, or 'now'")
    parser.add_argument("--follow", action="store_true", help="keep reading new changes")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument(
        "--limit", type=common.positive_int, default=feed.DEFAULT_LIMIT, help="events per page"
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=1.0,
        help="seconds between reads while following (default 1)",
    )
    parser.set_defaults(func=cmd_feed)


def _line(event: feed.FeedEvent, as_json: bool) -> str:
    record = event.as_dict()
    if as_json:
        return json.dumps(record, sort_keys=True, separators=(",", ":"))
    return "  ".join(cell(record[name]) for name in _SHOWN)


async def cmd_feed(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    url = database_url_from_env()
    pooler = pooler_for(url)
    engine = make_engine(url, pooler=pooler, pool_size=2, connect_args={"timeout": 10})
    try:
        after = (
            await feed.head(engine)
            if args.since == "now"
            else feed.Cursor.parse(args.since, "--since")
        )
        if args.follow:
            if pooler == "transaction":
                err.write("feed: transaction pooler: LISTEN unavailable, polling\n")
            async for event in feed.follow(
                engine, after=after, limit=args.limit, poll_interval=args.poll_interval
            ):
                out.write(_line(event, args.json) + "\n")
                out.flush()
            return 0  # pragma: no cover - follow only ends by interruption
        page = await feed.page(engine, after=after, limit=args.limit)
        for event in page.events:
            out.write(_line(event, args.json) + "\n")
        err.write(f"next cursor: {page.cursor}{' (more)' if page.full else ''}\n")
        return 0
    finally:
        await engine.dispose()
