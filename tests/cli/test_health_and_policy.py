"""``email-delivery health`` (exit codes for alerting) and ``email-delivery policy``."""

from __future__ import annotations

import json

import asyncpg
import pytest

from tests.support.cluster import DASHBOARD_LOGIN, Cluster
from tests.support.seed import superuser_dsn

UNHEALTHY = """
INSERT INTO email.deliveries (delivery_id, workflow, recipient, status, attempts,
    last_attempted_at, lease_expires_at, queued_at, created_at, updated_at, last_error_code)
VALUES
    ('q1', 'invite', 'a@b.io', 'queued', 0, NULL, NULL,
     now() - interval '1 hour', now() - interval '1 hour', now() - interval '1 hour', NULL),
    ('c1', 'invite', 'a@b.io', 'in_progress', 1, now() - interval '30 minutes',
     now() - interval '25 minutes', now() - interval '30 minutes', now() - interval '30 minutes',
     now() - interval '30 minutes', NULL)
"""
DEAD_LETTERS = """
INSERT INTO email.deliveries (delivery_id, workflow, recipient, status, attempts,
    last_attempted_at, queued_at, created_at, updated_at, last_error_code)
SELECT 'dl' || g, 'password-reset', 'a@b.io', 'dead_letter', 3, now(), now(), now(), now(),
       'SMTP_421'
FROM generate_series(1, 6) AS g
"""


async def _arrange(cluster: Cluster, database: str, *statements: str) -> None:
    # As the superuser with triggers off: rows exactly as an unhealthy day left them.
    conn = await asyncpg.connect(superuser_dsn(cluster, database))
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            for statement in statements:
                await conn.execute(statement)
    finally:
        await conn.close()


async def test_health_exits_zero_when_healthy_and_one_when_a_threshold_is_crossed(
    cli, cluster: Cluster, database: str
) -> None:
    code, _, _ = cli(database, "maintain")
    assert code == 0
    code, out, _ = cli(database, "health")
    assert code == 0 and out.rstrip().endswith("healthy")

    await _arrange(cluster, database, UNHEALTHY, DEAD_LETTERS)
    code, out, _ = cli(database, "health", "--json")
    report = json.loads(out)
    assert code == 1 and report["ok"] is False
    breached = {(c["check"], c["workflow"]) for c in report["breached"]}
    assert breached == {
        ("oldest_queued_age_s", "invite"),
        ("oldest_expired_claim_age_s", "invite"),
        ("dead_letters_last_hour", "password-reset"),
    }
    assert set(report["checks"][0]) == {
        "check", "workflow", "value", "threshold", "breached", "detail",
    }  # fmt: skip
    queued = next(c for c in report["checks"] if c["check"] == "oldest_queued_age_s")
    assert queued["value"] >= 3600 and queued["threshold"] == 900

    # Flags override the policies' thresholds for every workflow.
    code, out, _ = cli(
        database, "health", "--queued-age", "2h", "--expired-claim-age", "1h",
        "--dead-letters-per-hour", "10",
    )  # fmt: skip
    assert code == 0, out
    # A dashboard login reads the same (the view), and the policy sets the thresholds.
    code, out, _ = cli(database, "health", "--json", user=DASHBOARD_LOGIN)
    assert code == 1 and len(json.loads(out)["breached"]) == 3
    code, _, _ = cli(database, "policy", "set", "invite", "--alert-queued-age", "none",
                     "--alert-expired-claim-age", "2h")  # fmt: skip
    assert code == 0
    code, out, _ = cli(database, "health", "--json")
    assert {c["check"] for c in json.loads(out)["breached"]} == {"dead_letters_last_hour"}


async def test_health_reports_missing_maintenance(cli, database: str) -> None:
    code, out, _ = cli(database, "health", "--json")
    assert code == 1
    assert {c["check"] for c in json.loads(out)["breached"]} == {"rollups_behind_s"}


async def test_policy_show_set_reset_and_history(cli, database: str) -> None:
    code, out, _ = cli(database, "policy", "show", "--json")
    assert code == 0 and [p["workflow"] for p in json.loads(out)["policies"]] == ["*"]
    code, out, _ = cli(
        database, "policy", "set", "invite", "--lease", "10m", "--max-attempts", "8",
        "--backoff-base", "30s", "--backoff-cap", "2h", "--json",
    )  # fmt: skip
    policy = json.loads(out)["policies"][0]
    assert code == 0 and (policy["lease"], policy["max_attempts"]) == (600.0, 8)
    code, out, _ = cli(database, "policy", "show", "invite")
    assert code == 0 and "invite" in out.splitlines()[0]
    code, _, err = cli(database, "policy", "set", "invite", "--backoff-cap", "10s")
    assert code == 2 and "backoff_cap" in err
    code, _, err = cli(database, "policy", "set", "invite", "--lease", "2d")
    assert code == 2 and "lease" in err
    code, out, _ = cli(database, "policy", "reset", "invite", "--json")
    assert code == 0 and json.loads(out)["policies"][0]["workflow"] == "*"
    code, out, _ = cli(database, "policy", "history", "--json")
    assert [c["action"] for c in json.loads(out)["changes"]] == ["delete", "insert"]
    code, _, err = cli(database, "policy", "set", "*", "--lease", "1m", user=DASHBOARD_LOGIN)
    assert code == 2 and "permission denied" in err.lower()


@pytest.mark.parametrize("flag", ["--queued-age=0s", "--failure-rate=2"])
async def test_health_rejects_bad_thresholds(cli, database: str, flag: str) -> None:
    if flag.startswith("--failure-rate"):
        # argparse refuses it: one line, exit status 2.
        with pytest.raises(SystemExit) as caught:
            cli(database, "health", flag)
        assert caught.value.code == 2
        return
    code, _, err = cli(database, "health", flag)
    assert code == 2 and "queued_age" in err
