"""``make demo``: migrate, move one delivery through its lifecycle in plain SQL, print it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from email_delivery import migrate
from email_delivery.embedded import embedded_server
from email_delivery.urls import async_url

STEPS = (
    (
        "enqueue",
        "INSERT INTO email.deliveries (delivery_id, workflow, recipient, metadata) "
        "VALUES (:id, 'verification-code', 'ada@example.com', "
        '\'{"code_sha256": "9f86d081884c7d65"}\')',
    ),
    (
        "claim attempt 1",
        "UPDATE email.deliveries SET status = 'in_progress', attempts = attempts + 1, "
        "last_attempted_at = now() WHERE delivery_id = :id",
    ),
    (
        "SMTP 421, retry later",
        "UPDATE email.deliveries SET status = 'retrying', last_error_code = 'SMTP_421', "
        "last_error_message = 'Service not available, try again later' WHERE delivery_id = :id",
    ),
    (
        "claim attempt 2",
        "UPDATE email.deliveries SET status = 'in_progress', attempts = attempts + 1, "
        "last_attempted_at = now() WHERE delivery_id = :id",
    ),
    (
        "sent, with the SMTP reply attached to the event",
        "WITH reply AS (SELECT set_config('email.event_payload', "
        '\'{"smtp": "250 2.0.0 OK"}\', true)) '
        "UPDATE email.deliveries SET status = 'sent', last_error_code = NULL, "
        "last_error_message = NULL FROM reply WHERE delivery_id = :id",
    ),
)


@contextlib.asynccontextmanager
async def database_url() -> AsyncIterator[str]:
    """``$DATABASE_URL`` when set, else a private embedded server for the demo's lifetime."""
    if os.environ.get("DATABASE_URL"):
        yield str(async_url(os.environ["DATABASE_URL"]))
        return
    print("DATABASE_URL is not set: starting an embedded PostgreSQL for this demo")
    with embedded_server() as url:
        yield url


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    print(f"\n{title}")
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


async def show_delivery(conn: AsyncConnection, delivery_id: str) -> None:
    row = (
        await conn.execute(
            text(
                "SELECT delivery_id, workflow, recipient, status, attempts, last_error_code, "
                "sent_at IS NOT NULL AS has_sent_at, metadata FROM email.deliveries "
                "WHERE delivery_id = :id"
            ),
            {"id": delivery_id},
        )
    ).one()
    print_table("email.deliveries", list(row._fields), [tuple(row)])
    events = await conn.execute(
        text(
            "SELECT id, status, attempt, error_code, payload FROM email.delivery_events "
            "WHERE delivery_id = :id ORDER BY id"
        ),
        {"id": delivery_id},
    )
    print_table("email.delivery_events (written by trigger)", list(events.keys()), events.all())


async def run() -> int:
    async with database_url() as url:
        print("migrating to head …")
        await migrate.upgrade(url)
        engine = create_async_engine(url)
        delivery_id = f"demo-{os.getpid()}"
        try:
            async with engine.connect() as conn:
                for label, sql in STEPS:
                    await conn.execute(text(sql), {"id": delivery_id})
                    await conn.commit()
                    print(f"  {label}")
                await show_delivery(conn, delivery_id)
                try:
                    await conn.execute(
                        text(
                            "UPDATE email.deliveries SET status = 'queued' WHERE delivery_id = :id"
                        ),
                        {"id": delivery_id},
                    )
                except DBAPIError as exc:
                    await conn.rollback()
                    print(f"\nsent is final: {exc.orig}")
        finally:
            await engine.dispose()
    return 0


def main() -> None:
    sys.exit(asyncio.run(run()))


if __name__ == "__main__":
    main()
