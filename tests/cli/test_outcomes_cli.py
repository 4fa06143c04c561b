"""``email-delivery suppress add|remove|list|check`` and ``providers`` as a user runs them."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest

from email_delivery import rules
from tests.support.cluster import DASHBOARD_LOGIN, WORKER_LOGIN, Cluster


async def test_suppress_add_check_list_remove(cli: Any, database: str) -> None:
    code, out, _ = cli(database, "suppress", "check", "ada@example.com")
    assert (code, out) == (0, "not suppressed\n")
    code, out, _ = cli(
        database, "suppress", "add", " Ada@Example.com", "--expires-in", "30d", "--json"
    )
    assert code == 0
    (entry,) = json.loads(out)["suppressions"]
    assert (entry["address"], entry["reason"]) == ("ada@example.com", "manual")
    code, out, _ = cli(database, "suppress", "check", "ada@example.com", "--json")
    assert code == 1 and json.loads(out)["suppressed"] is True
    code, out, _ = cli(database, "suppress", "list", user=DASHBOARD_LOGIN)
    assert code == 0 and "ada@example.com" in out
    code, _, err = cli(database, "suppress", "remove", "ada@example.com", user=WORKER_LOGIN)
    assert code == 2 and "permission denied" in err
    code, out, _ = cli(database, "suppress", "remove", "ada@example.com", "--json")
    assert code == 0 and len(json.loads(out)["suppressions"]) == 1
    code, _, err = cli(database, "suppress", "add", "not-an-address")
    assert code == 2 and "address" in err


async def test_providers_and_the_policy_flags(cli: Any, cluster: Cluster, database: str) -> None:
    worker = await asyncpg.connect(cluster.dsn(database, WORKER_LOGIN))
    try:
        for n in range(3):
            await worker.execute(
                "SELECT FROM email.enqueue_delivery($1, 'welcome', 'p@example.com', '{}', NULL)",
                f"d{n}",
            )
            await worker.execute("SELECT FROM email.claim_delivery($1)", f"d{n}")
            await worker.execute(
                "SELECT FROM email.mark_delivery_sent($1, 1, NULL, 'ses', $2, 250, 100)",
                f"d{n}",
                f"m{n}",
            )
    finally:
        await worker.close()
    code, out, _ = cli(database, "providers", "--since", "1h", "--json", user=DASHBOARD_LOGIN)
    assert code == 0
    (row,) = json.loads(out)["providers"]
    assert (row["provider"], row["workflow"], row["attempts"]) == ("ses", "welcome", 3)
    assert row["p50_send_ms"] == pytest.approx(100.0, rel=rules.LATENCY_RELATIVE_ERROR)
    code, out, _ = cli(database, "providers")
    assert code == 0 and "ses" in out
    code, out, _ = cli(
        database,
        "policy",
        "set",
        "password-reset",
        "--send-despite-suppression",
        "hard_bounce",
        "--suppress-for",
        "30d",
        "--track-engagement",
        "yes",
        "--json",
    )
    assert code == 0, out
    (policy,) = json.loads(out)["policies"]
    assert policy["send_despite_suppression"] == ["hard_bounce"]
    assert policy["track_engagement"] is True
