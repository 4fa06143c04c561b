"""Connection modes chosen from a URL, and the URL forms users paste."""

from __future__ import annotations

import pytest

from email_delivery.engine import pooler_for
from email_delivery.errors import DatabaseUrlError
from email_delivery.urls import async_url


@pytest.mark.parametrize(
    ("url", "pooler"),
    [
        ("postgresql://postgres:pw@db.project.supabase.co:5432/postgres", "direct"),
        (
            "postgres://postgres.project:pw@aws-0-eu.pooler.supabase.com:6543/postgres",
            "transaction",
        ),
        ("postgresql+asyncpg://u@localhost/db", "direct"),
    ],
)
def test_port_6543_means_a_transaction_pooler(url: str, pooler: str) -> None:
    assert pooler_for(url) == pooler


def test_accepted_url_forms_become_asyncpg_urls() -> None:
    for url in ("postgres://u@h/d", "postgresql://u@h/d", "postgresql+psycopg://u@h/d"):
        assert async_url(url).drivername == "postgresql+asyncpg"
    with pytest.raises(DatabaseUrlError):
        async_url("mysql://u@h/d")
