"""The provider rollups (revision 0014): ``email.provider_metrics`` reads
``email.provider_rollups`` for closed hours and the attempts for the rest, and says exactly
what the rows say.

The reference is the metrics function as revision 0010 froze it (every attempt, exact
``percentile_cont``), installed beside the head one: counts and rates must be identical,
percentiles within ``rules.LATENCY_RELATIVE_ERROR``, before the first refresh, after it
(hours and whole days from the rollups), after outcomes and attempts the refresh has not
seen yet (in closed days too), after deletions, and after the next refresh.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from email_delivery import rules
from email_delivery.migrate import script_location
from tests.support.cluster import DASHBOARD_LOGIN, WORKER_LOGIN, Cluster
from tests.support.db import wait_for_horizon
from tests.support.seed import superuser_dsn

FROZEN_METRICS = Path(script_location()) / "versions/0010/functions/provider_metrics.sql"
WINDOWS = (
    ("now() - interval '24 hours'", "now()"),
    (
        "date_bin('1 day', now() - interval '3 days', TIMESTAMPTZ '2000-01-01 00:00:00+00')",
        "date_bin('1 day', now(), TIMESTAMPTZ '2000-01-01 00:00:00+00')",
    ),
    ("now() - interval '80 hours'", "now()"),
    ("now() - interval '50 hours 17 minutes'", "now() - interval '5 hours 3 minutes'"),
    ("now() - interval '15 minutes'", "now()"),
    # In the past, within one day: a window without a whole hour, and one of whole hours.
    ("now() - interval '50 hours 10 minutes'", "now() - interval '49 hours 50 minutes'"),
    (
        "date_bin('1 day', now() - interval '2 days', TIMESTAMPTZ '2000-01-01 00:00:00+00')"
        " + interval '2 hours 30 minutes'",
        "date_bin('1 day', now() - interval '2 days', TIMESTAMPTZ '2000-01-01 00:00:00+00')"
        " + interval '9 hours'",
    ),
    (
        "date_bin('1 hour', now() - interval '30 hours', TIMESTAMPTZ '2000-01-01 00:00:00+00')",
        "date_bin('1 hour', now() - interval '2 hours', TIMESTAMPTZ '2000-01-01 00:00:00+00')",
    ),
)
PERCENTILES = ("p50_send_ms", "p95_send_ms", "p50_sent_to_delivered_s", "p95_sent_to_delivered_s")

# Deliveries over the last 72 hours, each with one attempt reported by one of three
# providers (three in four accepted), and an outcome for most accepted ones.
SEED = """
WITH g AS (
    SELECT g, now() - (g::double precision / $1) * interval '72 hours' AS q,
           (ARRAY['verification-code', 'team-invite', 'password-reset'])[1 + g % 3] AS workflow,
           (ARRAY['ses', 'postmark', 'resend'])[1 + (g / 3) % 3] AS provider,
           g % 4 <> 0 AS accepted
    FROM generate_series(1, $1) AS g
), d AS (
    INSERT INTO email.deliveries (delivery_id, workflow, recipient, status, attempts,
        last_error_code, last_attempted_at, queued_at, sent_at, created_at, updated_at)
    SELECT 'd' || g, workflow, 'r' || (g % 50) || '@example.com',
           CASE WHEN accepted THEN 'sent' ELSE 'failed' END::email.delivery_status, 1,
           CASE WHEN NOT accepted THEN 'SMTP_550' END, q, q,
           CASE WHEN accepted THEN q + interval '2 seconds' END, q, q + interval '2 seconds'
    FROM g
), a AS (
    INSERT INTO email.delivery_attempts (delivery_id, attempt, result, workflow, provider,
        provider_message_id, reply_code, duration_ms, reported_at)
    SELECT 'd' || g, 1, CASE WHEN accepted THEN 'sent' ELSE 'failed' END, workflow, provider,
           CASE WHEN accepted THEN 'm' || g END, CASE WHEN accepted THEN 250 ELSE 550 END,
           1 + (g * 7919) % 3000, q + interval '2 seconds'
    FROM g
)
INSERT INTO email.delivery_outcomes (delivery_id, workflow, outcome, permanent, provider,
    outcome_at, delivered_at)
SELECT 'd' || g, workflow, o.outcome, CASE WHEN o.outcome = 'bounced' THEN g % 2 = 0 END,
       provider, q + interval '1 minute',
       CASE WHEN o.outcome = 'delivered' THEN q + (2 + (g * 104729) % 900) * interval '1 second' END
FROM g,
     LATERAL (SELECT CASE WHEN g % 23 = 0 THEN 'bounced' WHEN g % 29 = 0 THEN 'complained'
                          WHEN g % 31 = 0 THEN 'deferred' ELSE 'delivered' END AS outcome) AS o
WHERE accepted AND g % 7 <> 0
"""


async def _seed(cluster: Cluster, database: str, rows: int) -> None:
    conn = await asyncpg.connect(superuser_dsn(cluster, database))
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute(SEED, rows)
        await conn.execute("ANALYZE email.deliveries, email.delivery_attempts")
    finally:
        await conn.close()


async def _install_reference(owner: asyncpg.Connection) -> None:
    text = FROZEN_METRICS.read_text().replace(
        "FUNCTION email.provider_metrics(", "FUNCTION email.provider_metrics_reference(", 1
    )
    await owner.execute(text)


async def _compare(conn: asyncpg.Connection) -> int:
    """Every window through both functions; returns how many rows were compared."""
    compared = 0
    for since, until in WINDOWS:
        args = f"{since}, {until}"
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            # One snapshot (and one now()) for both.
            reference = await conn.fetch(f"SELECT * FROM email.provider_metrics_reference({args})")
            head = await conn.fetch(f"SELECT * FROM email.provider_metrics({args})")
        assert [(r["provider"], r["workflow"]) for r in head] == [
            (r["provider"], r["workflow"]) for r in reference
        ], args
        for want, got in zip(reference, head, strict=True):
            for column, value in want.items():
                key = (args, want["provider"], want["workflow"], column)
                if column in PERCENTILES and value is not None:
                    assert got[column] == pytest.approx(
                        value, rel=rules.LATENCY_RELATIVE_ERROR, abs=1e-9
                    ), key
                elif isinstance(value, float):
                    assert got[column] == pytest.approx(value, rel=1e-12), key
                else:
                    assert got[column] == value, key
            compared += 1
    return compared


async def test_provider_metrics_equal_the_rows_through_every_refresh_state(
    cluster: Cluster, database: str, owner_conn: asyncpg.Connection
) -> None:
    await _seed(cluster, database, 3000)
    await _install_reference(owner_conn)
    # Never refreshed: every attempt is read.
    assert await _compare(owner_conn) > 30
    assert await owner_conn.fetchval("SELECT count(*) FROM email.provider_rollups") == 0

    await owner_conn.fetchrow("SELECT * FROM email.maintain()")
    rolled = await owner_conn.fetchval("SELECT count(*) FROM email.provider_rollups")
    assert rolled >= 72 * 3
    # The closed days (two or three of the 72 hours), summed from their hours.
    days = await owner_conn.fetch(
        "SELECT y.*, (SELECT sum(r.attempts) FROM email.provider_rollups AS r"
        " WHERE r.hour >= y.day AND r.hour < y.day + interval '1 day'"
        " AND r.provider = y.provider AND r.workflow = y.workflow) AS hourly"
        " FROM email.provider_rollups_daily AS y"
    )
    assert len({d["day"] for d in days}) >= 2
    assert all(d["attempts"] == d["hourly"] for d in days)
    await _compare(owner_conn)

    # Outcomes the refresh has not seen, for attempts of rolled hours: a late bounce
    # outranks delivered, a first outcome arrives for an attempt that had none.
    worker = await asyncpg.connect(cluster.dsn(database, WORKER_LOGIN))
    try:
        for n, message in enumerate(["m5", "m14", "m21", "m1001", "m2002"]):
            row = await worker.fetchrow(
                "SELECT * FROM email.record_delivery_outcome("
                "$1, $2, $3, now(), p_provider_message_id => $4, p_permanent => $5)",
                await owner_conn.fetchval(
                    "SELECT provider FROM email.delivery_attempts WHERE provider_message_id = $1",
                    message,
                ),
                f"late-{n}",
                "bounced" if n % 2 == 0 else "complained",
                message,
                True if n % 2 == 0 else None,
            )
            assert row["matched"], message
    finally:
        await worker.close()
    await _compare(owner_conn)

    # An attempt written into a rolled hour by a transaction the refresh did not see
    # (what a report committing late looks like, hours compressed into one statement).
    await owner_conn.execute(
        "INSERT INTO email.delivery_attempts (delivery_id, attempt, result, workflow, provider,"
        " duration_ms, reported_at) SELECT delivery_id, 2, 'failed', workflow, 'ses', 4321,"
        " queued_at + interval '3 seconds' FROM email.deliveries WHERE delivery_id = 'd1500'"
    )
    await _compare(owner_conn)

    # Deletions (retention) write no xact_id: the statement trigger records their hours.
    deleted = await owner_conn.execute("DELETE FROM email.deliveries WHERE delivery_id LIKE '%3'")
    assert int(deleted.split()[-1]) == 300
    assert await owner_conn.fetchval("SELECT count(*) FROM email.provider_rollup_deletions") > 0
    await _compare(owner_conn)

    await wait_for_horizon(owner_conn)
    second = await owner_conn.fetchrow("SELECT * FROM email.refresh_provider_rollups()")
    assert second["hours_recomputed"] > 0
    assert await owner_conn.fetchval("SELECT count(*) FROM email.provider_rollup_deletions") == 0
    await _compare(owner_conn)
    # Nothing changed since: the next refresh recomputes nothing, the answers stay.
    third = await owner_conn.fetchrow("SELECT * FROM email.refresh_provider_rollups()")
    assert third["hours_recomputed"] == 0
    await _compare(owner_conn)


async def test_the_worker_reads_provider_metrics_and_nobody_but_the_owner_refreshes(
    cluster: Cluster, database: str, owner_conn: asyncpg.Connection
) -> None:
    await _seed(cluster, database, 300)
    await owner_conn.execute("SELECT * FROM email.maintain()")
    assert await owner_conn.fetchval("SELECT count(*) FROM email.provider_rollups") > 0
    for login in (DASHBOARD_LOGIN, WORKER_LOGIN):
        conn = await asyncpg.connect(cluster.dsn(database, login))
        try:
            rows = await conn.fetch(
                "SELECT * FROM email.provider_metrics(now() - interval '80 hours')"
            )
            assert sum(r["attempts"] for r in rows) == 300
            assert all(r["p50_send_ms"] is not None for r in rows)
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch("SELECT * FROM email.refresh_provider_rollups()")
            for statement in (
                "DELETE FROM email.provider_rollups",
                "UPDATE email.provider_rollup_state SET rolled_until = 'infinity'",
                "INSERT INTO email.provider_rollup_deletions (hour, provider, workflow) "
                "VALUES (now(), 'ses', 'x')",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(statement)
        finally:
            await conn.close()


async def test_provider_metrics_never_pay_for_jit(owner_conn: asyncpg.Connection) -> None:
    # As delivery_stats (test_rollups): the raw edges' plans pass jit_above_cost at 10 M.
    config = await owner_conn.fetchval(
        "SELECT proconfig FROM pg_proc WHERE oid = 'email.provider_metrics'::regproc"
    )
    assert "jit=off" in config
