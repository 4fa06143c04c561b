"""``make demo`` end to end on a test database: every delivery finished, none sent twice;
two providers, one degrading, the worker switching its order from ``provider_health``;
provider outcomes recorded, a hard bounce suppressing its address for a later delivery."""

from __future__ import annotations

import re

import asyncpg
import pytest

from email_delivery import demo, demo_providers
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

    # The degradation, and the worker's switch away from it, read from provider_health.
    first, second = demo_providers.PROVIDERS
    degrades = out.index(f"] {first} degrades")
    switch = out.index(f"] the worker switches its provider order to {second} → {first}")
    assert degrades < switch
    # Outcomes: every accepted message got one; one hard bounce.
    recorded = re.search(r"provider outcomes: ([\d,]+) webhook events recorded", out)
    accepted = re.search(r"SMTP accepted ([\d,]+) messages", out)
    assert recorded and accepted and recorded[1] == accepted[1]
    assert "bounced (hard) 1, delivered " in out
    address = demo_providers.BOUNCING.lower()
    assert f"suppression list: {address} (hard_bounce, from " in out
    assert re.search(
        r"a later delivery to the same address: \S+ → suppressed \(SUPPRESSED_HARD_BOUNCE: "
        r"the recipient is on the suppression list \(hard_bounce\)",
        out,
    )

    conn = await asyncpg.connect(cluster.dsn(database))
    try:
        suppressed = await conn.fetch(
            "SELECT recipient, last_error_code FROM email.deliveries WHERE status = 'suppressed'"
        )
        assert [tuple(r) for r in suppressed] == [(address, "SUPPRESSED_HARD_BOUNCE")]
        providers = await conn.fetch(
            "SELECT DISTINCT provider FROM email.delivery_attempts WHERE provider IS NOT NULL"
        )
        assert {r["provider"] for r in providers} == set(demo_providers.PROVIDERS)
        kinds = dict(
            await conn.fetch("SELECT outcome, count(*) FROM email.delivery_outcomes GROUP BY 1")
        )
        assert kinds["bounced"] == 1
        assert kinds["delivered"] > 1000
    finally:
        await conn.close()
