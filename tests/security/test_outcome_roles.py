"""The role matrix of provider facts and outcomes (revision 0010), as real logins: the
writer records outcomes only through ``email.record_delivery_outcome`` (and facts through
the report functions), readers read, and nobody but the owner writes the tables. The Data
API roles and a bare login are covered by test_role_matrix's sweep of every relation and
function of schema ``email``."""

from __future__ import annotations

import asyncpg
import pytest

from tests.security._attack import arrange_one_of_each, attempt

TABLES = ("delivery_attempts", "outcome_events", "delivery_outcomes")
VIEWS = ("provider_metrics_24h", "unmatched_outcome_events")

RECORD = (
    "SELECT * FROM email.record_delivery_outcome('ses', 'ev-1', 'bounced', now(), 'm-1', "
    "NULL, true, 'mailbox unknown')"
)

DIRECT_WRITES = {
    "insert-attempt": "INSERT INTO email.delivery_attempts (delivery_id, attempt, result, "
    "workflow, provider, provider_message_id) VALUES ('d-sent', 9, 'sent', 'x', 'ses', 'forged')",
    "update-attempt": "UPDATE email.delivery_attempts SET provider_message_id = 'stolen'",
    "delete-attempt": "DELETE FROM email.delivery_attempts",
    "insert-event": "INSERT INTO email.outcome_events (provider, event_id, kind, occurred_at, "
    "provider_message_id) VALUES ('ses', 'forged', 'delivered', now(), 'm-1')",
    "update-event": "UPDATE email.outcome_events SET kind = 'delivered'",
    "delete-event": "DELETE FROM email.outcome_events",
    "insert-outcome": "INSERT INTO email.delivery_outcomes (delivery_id, workflow, outcome, "
    "provider, outcome_at) VALUES ('d-queued', 'x', 'delivered', 'ses', now())",
    "update-outcome": "UPDATE email.delivery_outcomes SET outcome = 'delivered'",
    "delete-outcome": "DELETE FROM email.delivery_outcomes",
    "truncate": "TRUNCATE email.delivery_attempts, email.outcome_events, email.delivery_outcomes",
    "apply-internal": "SELECT email.apply_outcome_events(ARRAY[1::bigint])",
    "facts-internal": "SELECT email.record_attempt_facts('sent', ARRAY['d-sent'], ARRAY[1], "
    'ARRAY[\'{"provider": "ses", "provider_message_id": "forged"}\'::jsonb], ARRAY[1])',
}


async def arrange(owner: asyncpg.Connection, worker: asyncpg.Connection) -> None:
    """One delivery sent with a message id and a hard bounce recorded for it."""
    await arrange_one_of_each(worker)
    await worker.execute(
        "SELECT * FROM email.enqueue_delivery('d-out', 'verification-code', 'o@example.com', "
        "'{}', NULL)"
    )
    await worker.execute("SELECT * FROM email.claim_delivery('d-out')")
    await worker.execute(
        "SELECT * FROM email.mark_delivery_sent('d-out', 1, NULL, 'ses', 'm-1', 250, 900)"
    )
    await worker.execute(RECORD)


async def outcome_state(owner: asyncpg.Connection) -> list[object]:
    return [await owner.fetch(f"SELECT * FROM email.{table} ORDER BY 1, 2") for table in TABLES]


async def test_writer_records_an_outcome_through_the_function(
    owner: asyncpg.Connection, worker: asyncpg.Connection
) -> None:
    await arrange(owner, worker)
    row = await owner.fetchrow("SELECT outcome, permanent FROM email.delivery_outcomes")
    assert tuple(row) == ("bounced", True)
    # The worker reads what provider_health needs.
    assert (
        await worker.fetchval(
            "SELECT count(*) FROM email.provider_metrics(now() - interval '1 hour')"
        )
        == 1
    )


@pytest.mark.parametrize("statement", DIRECT_WRITES)
async def test_writer_cannot_write_the_outcome_tables(
    owner: asyncpg.Connection, worker: asyncpg.Connection, statement: str
) -> None:
    await arrange(owner, worker)
    before = await outcome_state(owner)
    error = await attempt(worker, DIRECT_WRITES[statement])
    assert isinstance(error, asyncpg.InsufficientPrivilegeError), error
    assert await outcome_state(owner) == before


@pytest.mark.parametrize(
    "statement",
    [*DIRECT_WRITES.values(), RECORD, "SELECT email.match_outcome_events(NULL)"],
)
async def test_reader_reads_and_cannot_write(
    owner: asyncpg.Connection,
    worker: asyncpg.Connection,
    reader: asyncpg.Connection,
    statement: str,
) -> None:
    await arrange(owner, worker)
    for relation in (*TABLES, *VIEWS):
        await reader.fetch(f"SELECT * FROM email.{relation}")
    assert await reader.fetchval("SELECT count(*) FROM email.delivery_outcomes") == 1
    before = await outcome_state(owner)
    error = await attempt(reader, statement)
    assert isinstance(error, asyncpg.InsufficientPrivilegeError), error
    assert await outcome_state(owner) == before


async def test_new_tables_have_row_level_security_and_no_api_grants(
    owner: asyncpg.Connection,
) -> None:
    for relation in (*TABLES, *VIEWS):
        for role in ("anon", "authenticated"):
            assert not await owner.fetchval(
                "SELECT has_table_privilege($1, $2, 'SELECT')", role, f"email.{relation}"
            )
    for table in TABLES:
        assert await owner.fetchval(
            "SELECT relrowsecurity FROM pg_class WHERE oid = $1::regclass", f"email.{table}"
        )
