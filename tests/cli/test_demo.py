"""``make demo`` end to end on a test database: every delivery finished, none sent twice."""

from __future__ import annotations

import pytest

from email_delivery import demo
from tests.support.cluster import Cluster


async def test_demo_finishes_every_delivery_and_sends_none_twice(
    cluster: Cluster,
    database: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", cluster.dsn(database))
    assert await demo.run() == 0
    out = capsys.readouterr().out
    assert "reaper: 1 expired claim(s) handed back" in out
    assert "no email sent twice: yes" in out
    assert "unfinished: 0" in out
    assert "every status change received, signed and verified, the outage included: yes" in out
    for workflow in demo.WORKFLOWS:
        assert f"\n{workflow} " in out
