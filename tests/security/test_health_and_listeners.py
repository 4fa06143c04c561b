"""What the shared entry points of revision 0009 let a reader or worker login do: health
names a disabled webhook endpoint by id only (its URL may carry credentials and the
receiver's answer is the owner's), and a feed listener registers for at most 2 minutes
(while one is registered every commit that writes events NOTIFYs)."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import pytest

from tests.support.cluster import DASHBOARD_LOGIN, WORKER_LOGIN, Cluster
from tests.support.db import connect

SECRET_URL = "https://ops:hunter2@hooks.example.com/services/T0/B0/sekretTokenXYZ?token=abc"


async def test_health_names_a_disabled_endpoint_by_id_only_to_a_reader(
    cluster: Cluster, database: str, owner_conn: asyncpg.Connection
) -> None:
    endpoint_id = await owner_conn.fetchval(
        "INSERT INTO email.webhook_endpoints (url, enabled, disabled_at, disabled_reason, "
        "disabled_automatically) VALUES ($1, false, now(), "
        '\'410 Gone: {"error": "token sekretTokenXYZ revoked"}\', true) RETURNING id',
        SECRET_URL,
    )
    async with connect(cluster, database, DASHBOARD_LOGIN) as reader:
        row = await reader.fetchrow(
            "SELECT value, breached, detail FROM email.delivery_health() "
            "WHERE check_name = 'webhook_endpoints_disabled'"
        )
    assert row is not None and row["breached"] and row["value"] == 1
    assert f"#{endpoint_id}" in row["detail"]
    for leak in ("hunter2", "hooks.example.com", "sekretTokenXYZ", "410 Gone"):
        assert leak not in row["detail"]


@pytest.mark.parametrize("login", [WORKER_LOGIN, DASHBOARD_LOGIN])
async def test_a_listener_registers_for_at_most_two_minutes(
    cluster: Cluster, database: str, login: str
) -> None:
    async with connect(cluster, database, login) as conn:
        with pytest.raises(asyncpg.InvalidParameterValueError, match="2 minutes"):
            await conn.fetchval("SELECT email.feed_listener_heartbeat($1)", timedelta(hours=1))
        expires = await conn.fetchval(
            "SELECT email.feed_listener_heartbeat($1) - now()", timedelta(minutes=2)
        )
    assert expires == timedelta(minutes=2)
