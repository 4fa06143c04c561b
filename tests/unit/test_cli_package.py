"""The shape of the ``email_delivery.cli`` package: every command group is registered, the
package runs with ``python -m``, and importing it (or its output module) loads no command."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import subprocess
import sys

import email_delivery.cli
from email_delivery.cli import COMMAND_GROUPS, build_parser

NOT_COMMAND_GROUPS = {"__main__", "common", "output"}
COMMANDS = {
    "migrate",
    "verify",
    "export-sql",
    "status",
    "history",
    "find",
    "stuck",
    "requeue",
    "stats",
    "prune",
    "maintain",
    "policy",
    "feed",
    "webhooks",
    "health",
    "providers",
    "suppress",
}


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_every_module_but_the_shared_ones_is_a_registered_command_group() -> None:
    modules = {m.name for m in pkgutil.iter_modules(email_delivery.cli.__path__)}
    assert set(COMMAND_GROUPS) == modules - NOT_COMMAND_GROUPS
    for group in COMMAND_GROUPS:
        assert callable(importlib.import_module(f"email_delivery.cli.{group}").register)


def test_every_command_has_a_function() -> None:
    parser = build_parser()
    (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(commands.choices) == COMMANDS
    for name, subparser in commands.choices.items():
        if callable(subparser.get_default("func")):
            continue
        # A command made of actions (policy show|set|reset|history): each has its function.
        (actions,) = (a for a in subparser._actions if isinstance(a, argparse._SubParsersAction))
        for action, leaf in actions.choices.items():
            assert callable(leaf.get_default("func")), f"{name} {action}"


def test_python_m_runs_the_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "email_delivery.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: email-delivery ")
    assert all(command in done.stdout for command in COMMANDS)


def test_importing_the_output_module_loads_no_command() -> None:
    listing = "sorted(m for m in sys.modules if m.startswith('email_delivery.cli.'))"
    # Importing it runs cli/__init__.py, which loads no command group.
    done = _python(f"import sys, email_delivery.cli.output\nprint({listing})")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['email_delivery.cli.output']"
    # The demo renders with cli.output and nothing else of the CLI.
    done = _python(f"import sys, email_delivery.demo\nprint({listing})")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['email_delivery.cli.output']"
