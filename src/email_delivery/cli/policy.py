"""``policy show|set|reset|history`` (``email_delivery.policies``) and ``health``
(``email_delivery.health``)."""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from email_delivery import health as health_module
from email_delivery import policies
from email_delivery.cli import common
from email_delivery.cli.common import Commands
from email_delivery.cli.output import print_json, print_table


def _rate(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 0 <= number <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {number}")
    return number


def _count(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, not {number}")
    return number


def _yes_no(value: str) -> bool:
    answer = value.strip().lower()
    if answer not in ("yes", "no", "true", "false", "on", "off"):
        raise argparse.ArgumentTypeError(f"yes or no, not {value!r}")
    return answer in ("yes", "true", "on")


def _reasons(value: str) -> list[str]:
    reasons = [r.strip() for r in value.split(",") if r.strip()]
    unknown = [r for r in reasons if r not in ("hard_bounce", "complaint", "manual")]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown reason {unknown[0]!r}")
    return reasons


# Flag -> (policy field, type); "none" clears an optional field.
_FIELDS: dict[str, tuple[str, Any]] = {
    "--max-attempts": ("max_attempts", common.positive_int),
    "--lease": ("lease", common.parse_duration),
    "--backoff-base": ("backoff_base", common.parse_duration),
    "--backoff-cap": ("backoff_cap", common.parse_duration),
    "--backoff-jitter": ("backoff_jitter", _rate),
    "--keep-sent": ("keep_sent_for", common.parse_duration),
    "--keep-failed": ("keep_failed_for", common.parse_duration),
    "--alert-queued-age": ("alert_queued_age", common.parse_duration),
    "--alert-retrying-age": ("alert_retrying_age", common.parse_duration),
    "--alert-expired-claim-age": ("alert_expired_claim_age", common.parse_duration),
    "--alert-dead-letters-per-hour": ("alert_dead_letters_per_hour", _count),
    "--alert-failure-rate": ("alert_failure_rate", _rate),
    "--track-engagement": ("track_engagement", _yes_no),
    "--send-despite-suppression": ("send_despite_suppression", _reasons),
    "--suppress-for": ("suppress_for", common.parse_duration),
}


def _or_none(parse: Any) -> Any:
    def parser(value: str) -> Any:
        return None if value.strip().lower() == "none" else parse(value)

    parser.__name__ = getattr(parse, "__name__", "value")
    return parser


def register(commands: Commands) -> None:
    policy = commands.add_parser("policy", help="worker policy per workflow: leases, retries")
    actions = policy.add_subparsers(dest="action", required=True)
    show = actions.add_parser("show", help="every policy, or the one a workflow runs under")
    show.add_argument("workflow", nargs="?")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show)
    set_ = actions.add_parser("set", help="change a workflow's policy ('*': the default)")
    set_.add_argument("workflow")
    for flag, (field, parse) in _FIELDS.items():
        set_.add_argument(flag, dest=field, type=_or_none(parse), default=argparse.SUPPRESS)
    set_.add_argument("--json", action="store_true")
    set_.set_defaults(func=cmd_set)
    reset = actions.add_parser("reset", help="back to the default ('*': to the documented one)")
    reset.add_argument("workflow")
    reset.add_argument("--json", action="store_true")
    reset.set_defaults(func=cmd_reset)
    history = actions.add_parser("history", help="who changed which policy, newest first")
    history.add_argument("workflow", nargs="?")
    history.add_argument("--limit", type=common.positive_int, default=50)
    history.add_argument("--json", action="store_true")
    history.set_defaults(func=cmd_history)

    check = commands.add_parser(
        "health", help="delivery health; exits 1 when a threshold is crossed (for alerting)"
    )
    check.add_argument("--queued-age", type=common.parse_duration)
    check.add_argument("--retrying-age", type=common.parse_duration)
    check.add_argument("--expired-claim-age", type=common.parse_duration)
    check.add_argument("--dead-letters-per-hour", type=_count)
    check.add_argument("--failure-rate", type=_rate)
    check.add_argument("--json", action="store_true")
    check.set_defaults(func=cmd_health)


def _print_policies(items: list[policies.Policy], args: argparse.Namespace, out: TextIO) -> None:
    if args.json:
        print_json({"policies": [p.as_dict() for p in items]}, out)
        return
    names = [f.name for f in policies.Policy.__dataclass_fields__.values()]
    print_table(["field", *(p.workflow for p in items)], [
        (name, *(getattr(p, name) for p in items)) for name in names if name != "workflow"
    ], out)  # fmt: skip


async def cmd_show(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    engine = common.engine()
    try:
        items = await policies.policies(engine, workflow=args.workflow)
    finally:
        await engine.dispose()
    _print_policies(items, args, out)
    return 0


async def cmd_set(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    changes = {field: getattr(args, field) for field, _ in _FIELDS.values() if hasattr(args, field)}
    engine = common.engine()
    try:
        policy = await policies.set_policy(engine, args.workflow, **changes)
    finally:
        await engine.dispose()
    _print_policies([policy], args, out)
    return 0


async def cmd_reset(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    engine = common.engine()
    try:
        policy = await policies.reset_policy(engine, args.workflow)
    finally:
        await engine.dispose()
    _print_policies([policy], args, out)
    return 0


async def cmd_history(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    engine = common.engine()
    try:
        changes = await policies.policy_changes(engine, workflow=args.workflow, limit=args.limit)
    finally:
        await engine.dispose()
    if args.json:
        print_json({"changes": [c.__dict__ for c in changes]}, out)
    else:
        print_table(
            ["changed_at", "workflow", "action", "changed_by"],
            [(c.changed_at, c.workflow, c.action, c.changed_by) for c in changes],
            out,
        )
    return 0


async def cmd_health(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    engine = common.engine()
    try:
        report = await health_module.health(
            engine,
            queued_age=args.queued_age,
            retrying_age=args.retrying_age,
            expired_claim_age=args.expired_claim_age,
            dead_letters_per_hour=args.dead_letters_per_hour,
            failure_rate=args.failure_rate,
        )
    finally:
        await engine.dispose()
    if args.json:
        print_json(report.as_dict(), out)
    else:
        print_table(
            ["check", "workflow", "value", "threshold", "state", "detail"],
            [
                (
                    c.check,
                    c.workflow or "-",
                    "-" if c.value is None else round(c.value, 3),
                    "-" if c.threshold is None else round(c.threshold, 3),
                    "BREACHED" if c.breached else "ok",
                    c.detail or "",
                )
                for c in report.checks
            ],
            out,
        )
        out.write("healthy\n" if report.ok else f"{len(report.breached)} check(s) breached\n")
    # Non-zero when a threshold is crossed: Cloud Scheduler, cron or CI can page on it.
    return 0 if report.ok else 1
