"""The CLI's error policy: an ``EmailDeliveryError`` is one line with a hint and exit 2,
Ctrl-C is 130, and anything else is a bug that keeps its traceback."""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
from typing import TextIO

import pytest

from email_delivery.cli import deliveries, main
from tests.support.cluster import Cluster


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def database_url(monkeypatch: pytest.MonkeyPatch, cluster: Cluster, database: str) -> str:
    dsn = cluster.dsn(database)
    monkeypatch.setenv("DATABASE_URL", dsn)
    return dsn


def _fails_with(error: BaseException) -> object:
    async def command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
        raise error

    return command


def test_an_unexpected_exception_propagates_to_show_its_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(deliveries, "cmd_status", _fails_with(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):
        main(["status", "d1"])
    # Typed input errors are InvalidInput: a bare ValueError is a bug like any other.
    monkeypatch.setattr(deliveries, "cmd_status", _fails_with(ValueError("also a bug")))
    with pytest.raises(ValueError, match="also a bug"):
        main(["status", "d1"])
    assert "email-delivery: error" not in capsys.readouterr().err


def test_the_console_script_prints_a_bugs_traceback() -> None:
    program = textwrap.dedent(
        """
        import sys
        from email_delivery.cli import deliveries, main

        async def broken(args, out, err):
            raise RuntimeError("a bug in status")

        deliveries.cmd_status = broken
        sys.exit(main(["status", "d1"]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=60,
        env={"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/nothing", "PATH": ""},
    )
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert "RuntimeError: a bug in status" in done.stderr
    assert "email-delivery: error" not in done.stderr


def test_ctrl_c_exits_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(deliveries, "cmd_status", _fails_with(KeyboardInterrupt()))
    assert main(["status", "d1"]) == 130
    assert capsys.readouterr().err == "email-delivery: interrupted\n"


async def test_bad_input_is_one_line_pointing_at_the_commands_help(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["find", "--recipient", "a@b.io", "--cursor", "garbage"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("email-delivery: error: cursor: not a cursor token")
    assert line.endswith("(hint: email-delivery find --help)")


def test_an_unknown_revision_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate", "upgrade", "no-such-revision", "--sql"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "error: revision: " in line and "no-such-revision" in line


def test_a_usage_error_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["status"])
    assert info.value.code == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.endswith("(hint: email-delivery status --help)")
