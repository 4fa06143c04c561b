"""6. The secret detectors and sanitisers against the shapes real clients produce.

``secret_corpus.json`` holds metadata objects (keys, values with links) that must be
rejected or accepted, and error messages (smtplib exceptions, provider HTTP bodies, Python
reprs, provider strings, addresses) whose secrets must not survive sanitising and whose
harmless text must. Each test takes one shape of the corpus and reports every sample it
gets wrong. The SQL side runs as the worker login, the way any client reaches it:
``email.find_secret`` and ``email.enqueue_delivery`` (SQLSTATE ED003) for metadata,
``email.sanitize_error_message`` and ``email.mark_delivery_failed`` (row and event) for
messages. Python (``email_delivery.validation``) must agree with SQL on every sample.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from email_delivery import validation
from tests.support.cluster import WORKER_LOGIN, Cluster

CORPUS = json.loads((Path(__file__).parent / "secret_corpus.json").read_text(encoding="utf-8"))
METADATA: list[dict[str, Any]] = CORPUS["metadata"]
MESSAGES: list[dict[str, Any]] = CORPUS["messages"]

T = TypeVar("T")


def shapes(samples: list[dict[str, Any]], keep: Callable[[dict[str, Any]], bool]) -> list[str]:
    return sorted({s["shape"] for s in samples if keep(s)})


def of_shape(samples: list[dict[str, Any]], shape: str) -> list[dict[str, Any]]:
    return [s for s in samples if s["shape"] == shape]


@pytest.fixture(scope="module")
async def corpus_worker(
    cluster: Cluster, template_database: str
) -> AsyncIterator[asyncpg.Connection]:
    """The worker login on one clone for the module: every write is rolled back."""
    async with cluster.clone(template_database, "corpus") as name:
        conn = await asyncpg.connect(cluster.dsn(name, WORKER_LOGIN))
        try:
            yield conn
        finally:
            await conn.close()


async def rolled_back(conn: asyncpg.Connection, work: Callable[[], Awaitable[T]]) -> T:
    transaction = conn.transaction()
    await transaction.start()
    try:
        return await work()
    finally:
        await transaction.rollback()


async def sql_find_secret(conn: asyncpg.Connection, value: object) -> str | None:
    found: str | None = await conn.fetchval(
        "SELECT email.find_secret($1::jsonb)", json.dumps(value, ensure_ascii=False)
    )
    return found


async def enqueue_error(conn: asyncpg.Connection, value: object) -> asyncpg.PostgresError | None:
    async def work() -> asyncpg.PostgresError | None:
        try:
            await conn.execute(
                "SELECT FROM email.enqueue_delivery('corpus-1', 'verification-code', "
                "'ada@example.com', $1::jsonb, NULL)",
                json.dumps(value, ensure_ascii=False),
            )
        except asyncpg.PostgresError as error:
            return error
        return None

    return await rolled_back(conn, work)


async def sql_sanitize(conn: asyncpg.Connection, message: str) -> str:
    sanitized: str = await conn.fetchval("SELECT email.sanitize_error_message($1)", message)
    return sanitized


async def stored_by_mark_failed(conn: asyncpg.Connection, message: str) -> list[str]:
    """What ``mark_delivery_failed`` stores on the row and on its event."""

    async def work() -> list[str]:
        await conn.execute(
            "SELECT FROM email.enqueue_delivery('corpus-1', 'verification-code', "
            "'ada@example.com', '{}', NULL)"
        )
        await conn.execute("SELECT FROM email.claim_delivery('corpus-1', interval '5 minutes')")
        await conn.execute(
            "SELECT FROM email.mark_delivery_failed('corpus-1', 1, 'SMTP_535', $1, true, 5, NULL)",
            message,
        )
        row = await conn.fetchval(
            "SELECT last_error_message FROM email.deliveries WHERE delivery_id = 'corpus-1'"
        )
        event = await conn.fetchval(
            "SELECT error_message FROM email.delivery_events WHERE delivery_id = 'corpus-1' "
            "ORDER BY id DESC LIMIT 1"
        )
        return [row, event]

    return await rolled_back(conn, work)


def report(misses: list[str]) -> None:
    if misses:
        pytest.fail(f"{len(misses)} sample(s) wrong:\n" + "\n".join(misses), pytrace=False)


# -- metadata --------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", shapes(METADATA, lambda s: s["secret"]))
async def test_sql_rejects_every_secret_metadata_sample(
    corpus_worker: asyncpg.Connection, shape: str
) -> None:
    misses = []
    for sample in of_shape(METADATA, shape):
        value = sample["value"]
        if await sql_find_secret(corpus_worker, value) is None:
            misses.append(f"  email.find_secret passes {json.dumps(value, ensure_ascii=False)}")
        error = await enqueue_error(corpus_worker, value)
        if error is None or error.sqlstate != "ED003":
            misses.append(
                f"  email.enqueue_delivery {'accepts' if error is None else error.sqlstate} "
                f"{json.dumps(value, ensure_ascii=False)}"
            )
    report(misses)


@pytest.mark.parametrize("shape", shapes(METADATA, lambda s: not s["secret"]))
async def test_sql_accepts_every_harmless_metadata_sample(
    corpus_worker: asyncpg.Connection, shape: str
) -> None:
    misses = []
    for sample in of_shape(METADATA, shape):
        value = sample["value"]
        found = await sql_find_secret(corpus_worker, value)
        if found is not None:
            misses.append(f"  email.find_secret flags {found!r} in {json.dumps(value)}")
        error = await enqueue_error(corpus_worker, value)
        if error is not None:
            misses.append(
                f"  email.enqueue_delivery raises {error.sqlstate} for {json.dumps(value)}"
            )
    report(misses)


@pytest.mark.parametrize("shape", shapes(METADATA, lambda s: True))
async def test_python_find_secret_agrees_with_sql(
    corpus_worker: asyncpg.Connection, shape: str
) -> None:
    misses = []
    for sample in of_shape(METADATA, shape):
        value = sample["value"]
        in_sql = await sql_find_secret(corpus_worker, value)
        in_python = validation.find_secret(value, "metadata")
        if (in_sql is None) != (in_python is None):
            misses.append(f"  SQL {in_sql!r}, Python {in_python!r}: {json.dumps(value)}")
    report(misses)


# -- error messages --------------------------------------------------------------------------


@pytest.mark.parametrize("shape", shapes(MESSAGES, lambda s: bool(s["secrets"])))
async def test_sql_redacts_every_secret_in_error_messages(
    corpus_worker: asyncpg.Connection, shape: str
) -> None:
    misses = []
    for sample in of_shape(MESSAGES, shape):
        if not sample["secrets"]:
            continue
        sanitized = await sql_sanitize(corpus_worker, sample["message"])
        stored = await stored_by_mark_failed(corpus_worker, sample["message"])
        for where, text in [
            ("sanitize_error_message", sanitized),
            ("row", stored[0]),
            ("event", stored[1]),
        ]:
            leaked = [secret for secret in sample["secrets"] if secret in (text or "")]
            if leaked:
                misses.append(f"  {where} keeps {leaked}: {text!r}")
    report(misses)


@pytest.mark.parametrize("shape", shapes(MESSAGES, lambda s: bool(s["keep"])))
async def test_sql_keeps_the_harmless_text_of_error_messages(
    corpus_worker: asyncpg.Connection, shape: str
) -> None:
    misses = []
    for sample in of_shape(MESSAGES, shape):
        sanitized = await sql_sanitize(corpus_worker, sample["message"])
        stored = await stored_by_mark_failed(corpus_worker, sample["message"])
        for where, text in [
            ("sanitize_error_message", sanitized),
            ("row", stored[0]),
            ("event", stored[1]),
        ]:
            lost = [kept for kept in sample["keep"] if kept not in (text or "")]
            if lost:
                misses.append(f"  {where} lost {lost}: {text!r}")
    report(misses)


@pytest.mark.parametrize("shape", shapes(MESSAGES, lambda s: True))
async def test_python_sanitize_agrees_with_sql(
    corpus_worker: asyncpg.Connection, shape: str
) -> None:
    misses = []
    for sample in of_shape(MESSAGES, shape):
        in_sql = await sql_sanitize(corpus_worker, sample["message"])
        in_python = validation.sanitize_error_message(sample["message"])
        if in_sql != in_python:
            misses.append(f"  SQL {in_sql!r}\n  Py  {in_python!r}")
    report(misses)
