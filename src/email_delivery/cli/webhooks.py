"""``webhooks add|list|disable|enable|test|replay|run`` (``email_delivery.webhooks``).

Owner-only: the endpoints, their secrets and the outbox are the schema owner's tables.
``--allow-insecure`` (http://) and ``--allow-private`` (private and loopback addresses) are
development flags for this process, never stored with an endpoint."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from datetime import UTC, datetime, timedelta
from typing import TextIO

from email_delivery.cli import common
from email_delivery.cli.common import Commands
from email_delivery.cli.output import print_json, print_table
from email_delivery.engine import make_engine, pooler_for
from email_delivery.models import DeliveryStatus
from email_delivery.urls import database_url_from_env


def _dev_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-insecure", action="store_true", help="development: accept http:// URLs"
    )
    parser.add_argument(
        "--allow-private",
        action="store_true",
        help="development: accept loopback and private-network hosts (SSRF guard off)",
    )


def _since(value: str) -> datetime:
    """A duration back from now (``2h``, ``3d``) or an ISO 8601 time."""
    try:
        return datetime.now(UTC) - common.parse_duration(value)
    except argparse.ArgumentTypeError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration or an ISO 8601 time: {value!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def register(commands: Commands) -> None:
    parser = commands.add_parser("webhooks", help="signed webhooks to downstream systems")
    sub = parser.add_subparsers(dest="webhooks_command", required=True)

    add = sub.add_parser("add", help="register an endpoint; prints its secret once")
    add.add_argument("url")
    add.add_argument("--workflow", action="append", dest="workflows", metavar="WORKFLOW")
    add.add_argument(
        "--status",
        action="append",
        dest="statuses",
        choices=[status.value for status in DeliveryStatus],
        help="only changes into this status (repeatable; default every change)",
    )
    add.add_argument("--include-recipient", action="store_true")
    add.add_argument("--include-metadata", action="store_true")
    add.add_argument("--description")
    add.add_argument("--json", action="store_true")
    _dev_flags(add)
    add.set_defaults(func=cmd_add)

    listing = sub.add_parser("list", help="endpoints, their state and backlog")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_list)

    for name, helptext in (("disable", "stop sending to an endpoint"), ("enable", "resume")):
        command = sub.add_parser(name, help=helptext)
        command.add_argument("endpoint_id", type=common.positive_int)
        command.add_argument("--json", action="store_true")
        if name == "disable":
            command.add_argument("--reason")
        command.set_defaults(func=cmd_disable if name == "disable" else cmd_enable)

    test = sub.add_parser("test", help="send one signed example message now")
    test.add_argument("endpoint_id", type=common.positive_int)
    test.add_argument("--timeout", type=float, default=15.0)
    test.add_argument("--json", action="store_true")
    _dev_flags(test)
    test.set_defaults(func=cmd_test)

    replay = sub.add_parser("replay", help="send changes again (same webhook-id)")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--since", type=_since, help="a duration back (24h) or an ISO time")
    which.add_argument("--delivery", dest="delivery_id")
    replay.add_argument("--endpoint", dest="endpoint_id", type=common.positive_int)
    replay.add_argument("--json", action="store_true")
    replay.set_defaults(func=cmd_replay)

    run = sub.add_parser("run", help="the sender: build messages from the feed and send them")
    run.add_argument("--once", action="store_true", help="one tick (for a scheduler), then exit")
    run.add_argument("--interval", type=float, default=1.0, help="idle wait in seconds")
    run.add_argument(
        "--linger",
        type=float,
        default=0.05,
        help="wait in seconds after a tick that found work but no backlog (batches a trickle)",
    )
    run.add_argument("--batch", type=common.positive_int, default=100)
    run.add_argument("--concurrency", type=common.positive_int, default=16)
    run.add_argument("--timeout", type=float, default=15.0, help="seconds per attempt")
    run.add_argument(
        "--lease", type=common.parse_duration, default=timedelta(seconds=60),
        help="how long a claimed message is this sender's (default 60s; above --timeout)",
    )  # fmt: skip
    run.add_argument("--json", action="store_true")
    _dev_flags(run)
    run.set_defaults(func=cmd_run)


def _engine(pool_size: int = 2) -> object:
    url = database_url_from_env()
    return make_engine(
        url, pooler=pooler_for(url), pool_size=pool_size, connect_args={"timeout": 10}
    )


def _show(endpoints: list[object], args: argparse.Namespace, out: TextIO) -> None:
    from email_delivery.webhooks.outbox import Endpoint

    rows = [e for e in endpoints if isinstance(e, Endpoint)]
    if args.json:
        print_json({"endpoints": [e.as_dict() for e in rows]}, out)
        return
    print_table(
        ["id", "url", "enabled", "workflows", "statuses", "pending", "failed", "disabled_reason"],
        [
            (
                e.id,
                e.url,
                e.enabled,
                ",".join(e.workflows) if e.workflows else "*",
                ",".join(e.statuses) if e.statuses else "*",
                e.pending,
                e.failed,
                e.disabled_reason,
            )
            for e in rows
        ],
        out,
    )


async def cmd_add(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from email_delivery.webhooks import outbox

    engine = common.engine()
    try:
        endpoint, secret = await outbox.add(
            engine,
            url=args.url,
            workflows=args.workflows,
            statuses=args.statuses,
            include_recipient=args.include_recipient,
            include_metadata=args.include_metadata,
            description=args.description,
            allow_insecure=args.allow_insecure,
            allow_private=args.allow_private,
        )
    finally:
        await engine.dispose()
    if args.json:
        print_json({"endpoint": endpoint.as_dict(), "secret": secret}, out)
    else:
        _show([endpoint], args, out)
        out.write(f"secret: {secret}\n")
        err.write("the secret is shown once: give it to the receiver to verify signatures\n")
    return 0


async def cmd_list(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from email_delivery.webhooks import outbox

    engine = common.engine()
    try:
        endpoints = await outbox.list_endpoints(engine)
    finally:
        await engine.dispose()
    _show(list(endpoints), args, out)
    return 0


async def cmd_disable(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from email_delivery.webhooks import outbox

    engine = common.engine()
    try:
        endpoint = await outbox.disable(engine, args.endpoint_id, reason=args.reason)
    finally:
        await engine.dispose()
    _show([endpoint], args, out)
    return 0


async def cmd_enable(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from email_delivery.webhooks import outbox

    engine = common.engine()
    try:
        endpoint = await outbox.enable(engine, args.endpoint_id)
    finally:
        await engine.dispose()
    _show([endpoint], args, out)
    return 0


async def cmd_test(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from email_delivery.webhooks import sender

    engine = common.engine()
    try:
        result = await sender.send_test(
            engine,
            args.endpoint_id,
            timeout=args.timeout,
            allow_insecure=args.allow_insecure,
            allow_private=args.allow_private,
        )
    finally:
        await engine.dispose()
    document = {
        "ok": result.ok,
        "status": result.status,
        "latency_ms": round(result.latency_ms, 1),
        "error": result.error,
        "response_excerpt": result.response_excerpt,
    }
    if args.json:
        print_json(document, out)
    else:
        print_table(["test", "value"], list(document.items()), out)
    return 0 if result.ok else 1


async def cmd_replay(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from email_delivery.webhooks import outbox

    engine = common.engine()
    try:
        report = await outbox.replay(
            engine, since=args.since, delivery_id=args.delivery_id, endpoint_id=args.endpoint_id
        )
    finally:
        await engine.dispose()
    if args.json:
        print_json(report.as_dict(), out)
    else:
        print_table(["replay", "messages"], list(report.as_dict().items()), out)
    return 0


async def cmd_run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from email_delivery.webhooks.sender import Sender, TickReport

    url = database_url_from_env()
    engine = make_engine(
        url,
        pooler=pooler_for(url),
        pool_size=min(args.concurrency, 8) + 2,
        max_overflow=0,
        connect_args={"timeout": 10},
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)

    def progress(report: TickReport) -> None:
        err.write(
            "webhooks: "
            + ", ".join(f"{key} {value}" for key, value in report.as_dict().items() if value)
            + "\n"
        )
        err.flush()

    try:
        async with Sender(
            engine,
            timeout=args.timeout,
            lease=args.lease,
            batch=args.batch,
            concurrency=args.concurrency,
            allow_insecure=args.allow_insecure,
            allow_private=args.allow_private,
        ) as sender:
            if args.once:
                total = await sender.tick()
            else:
                total = await sender.run(
                    interval=args.interval, linger=args.linger, stop=stop, on_tick=progress
                )
    finally:
        await engine.dispose()
    if args.json:
        print_json(total.as_dict(), out)
    else:
        print_table(["webhooks run", "count"], list(total.as_dict().items()), out)
    return 0
