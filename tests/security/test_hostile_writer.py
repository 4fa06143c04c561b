"""8. More of what the hostile writer can do, beyond the issue's list.

- A table-level UPDATE grant also allows ``LOCK TABLE … IN ACCESS EXCLUSIVE MODE``: the
  writer can stall every dashboard and the owner's prune for as long as it likes.
- The INSERT grant lets the writer create a delivery in any state (already ``sent``, a
  claim with attempts, a failure with an unsanitised message, a past ``created_at``).
- The lease is the caller's argument: a lease of one microsecond takes over or reaps every
  live claim through the lifecycle functions themselves.
"""

from __future__ import annotations

import asyncpg
import pytest

from tests.security._attack import (
    arrange,
    arrange_one_of_each,
    assert_nothing_changed,
    attempt,
    attempt_fetch,
    snapshot,
)

LOCK_MODES = {
    # conflicts with every SELECT: dashboards, support tools, the owner's prune
    "access-exclusive": "ACCESS EXCLUSIVE",
    # conflicts with the FOR UPDATE of the owner's prune and with every worker's write
    "exclusive": "EXCLUSIVE",
}


@pytest.mark.parametrize("mode", LOCK_MODES)
async def test_writer_cannot_lock_out_readers_and_the_owner(
    worker: asyncpg.Connection, reader: asyncpg.Connection, mode: str
) -> None:
    await arrange(worker, "d1", "queued")
    transaction = worker.transaction()
    await transaction.start()
    try:
        error = await attempt(worker, f"LOCK TABLE email.deliveries IN {LOCK_MODES[mode]} MODE")
        impact = ""
        if error is None:
            await reader.execute("SET lock_timeout = '200ms'")
            blocked = await attempt(reader, "SELECT count(*) FROM email.deliveries FOR KEY SHARE")
            blocked = blocked or await attempt(reader, "SELECT count(*) FROM email.deliveries")
            impact = f" (the dashboard's query then failed with: {blocked})" if blocked else ""
    finally:
        await transaction.rollback()
    assert error is not None, f"the writer locked email.deliveries in {mode} mode{impact}"


FORGED_BIRTHS = {
    "born-sent": "INSERT INTO email.deliveries (delivery_id, workflow, recipient, status) "
    "VALUES ('forged', 'verification-code', 'f@example.com', 'sent')",
    "born-claimed": "INSERT INTO email.deliveries (delivery_id, workflow, recipient, status, "
    "attempts, last_attempted_at) VALUES ('forged', 'verification-code', 'f@example.com', "
    "'in_progress', 3, now())",
    "born-failed-unsanitised": "INSERT INTO email.deliveries (delivery_id, workflow, "
    "recipient, status, attempts, last_error_code, last_error_message) VALUES ('forged', "
    "'verification-code', 'f@example.com', 'failed', 1, 'SMTP_535', "
    "'auth failed for bob.victim@example.com password=hunter2')",
    "born-long-ago": "INSERT INTO email.deliveries (delivery_id, workflow, recipient, "
    "created_at) VALUES ('forged', 'verification-code', 'f@example.com', "
    "now() - interval '10 years')",
}


@pytest.mark.parametrize("birth", FORGED_BIRTHS)
async def test_writer_cannot_insert_a_delivery_that_skipped_the_lifecycle(
    owner: asyncpg.Connection, worker: asyncpg.Connection, birth: str
) -> None:
    """A delivery is born ``queued`` with no attempt, no error and ``created_at = now()``
    (``enqueue_delivery``); a hand-made INSERT is refused, or stores exactly that."""
    await arrange_one_of_each(worker)
    before = await snapshot(owner)
    error = await attempt(worker, FORGED_BIRTHS[birth])
    row = await owner.fetchrow(
        "SELECT status::text, attempts, last_error_code, last_error_message, "
        "last_attempted_at, sent_at, created_at > now() - interval '1 minute' AS fresh "
        "FROM email.deliveries WHERE delivery_id = 'forged'"
    )
    if row is None:
        await assert_nothing_changed(owner, before, error)
    else:
        assert tuple(row) == ("queued", 0, None, None, None, None, True), (
            f"a delivery was born as {dict(row)}"
        )


TINY_LEASE = {
    "claim_delivery": "SELECT changed FROM email.claim_delivery('d-in_progress', "
    "interval '1 microsecond')",
    "reap_stale_deliveries": "SELECT changed FROM email.reap_stale_deliveries("
    "interval '1 microsecond', 5, 1000)",
}


@pytest.mark.parametrize("call", TINY_LEASE)
async def test_writer_cannot_take_over_a_live_claim_with_a_tiny_lease(
    owner: asyncpg.Connection, worker: asyncpg.Connection, call: str
) -> None:
    """The claim was made with the agreed 5-minute lease a moment ago; the lease a later
    caller passes must not decide that it has expired: since revision 0008 the claim stores
    its expiry (W27)."""
    await arrange_one_of_each(worker)
    before = await snapshot(owner)
    rows, error = await attempt_fetch(worker, TINY_LEASE[call])
    assert not any(r["changed"] for r in rows or []), "a live claim was taken over"
    await assert_nothing_changed(owner, before, error)


TEMPORARY_IMPOSTORS = {
    # A temporary table's row type takes a built-in type's name; the writer owns it, so it
    # may create a cast to it whose function would run as whoever casts: inside a SECURITY
    # DEFINER function, the schema owner.
    "type-and-cast": [
        "CREATE TEMP TABLE hijacked (who text)",
        "CREATE TEMP TABLE text (x int)",
        "CREATE FUNCTION pg_temp.hijack(jsonb) RETURNS pg_temp.text LANGUAGE plpgsql AS "
        "$$ BEGIN INSERT INTO pg_temp.hijacked VALUES (current_user); RETURN NULL; END $$",
        "CREATE CAST (jsonb AS pg_temp.text) WITH FUNCTION pg_temp.hijack(jsonb)",
    ],
    # Tables named like ours, in the writer's temporary schema.
    "tables": [
        "CREATE TEMP TABLE hijacked (who text)",
        "CREATE TEMP TABLE deliveries (LIKE email.deliveries)",
        "CREATE TEMP TABLE delivery_events (LIKE email.delivery_events)",
        "CREATE TEMP TABLE jsonb (x int)",
    ],
}


@pytest.mark.parametrize("impostor", TEMPORARY_IMPOSTORS)
async def test_writer_cannot_stand_in_for_a_type_or_table_inside_the_owners_functions(
    owner: asyncpg.Connection, worker: asyncpg.Connection, impostor: str
) -> None:
    """Every function runs with search_path = pg_catalog, pg_temp: pg_temp last, so a
    temporary object of the caller never replaces a built-in type or one of our tables
    while a lifecycle function runs as the owner (with search_path = '' it is looked up
    first)."""
    await arrange(worker, "d1", "in_progress")
    for statement in TEMPORARY_IMPOSTORS[impostor]:
        await worker.execute(statement)
    # Untyped literals: the calls themselves do not name an impostor.
    await worker.execute(
        "SELECT FROM email.mark_delivery_failed('d1', 1, 'SMTP_421', 'busy', true, 5, "
        '\'{"smtp": "421"}\')'
    )
    await worker.execute("SELECT FROM email.mark_delivery_sent('d1', 1, '{\"smtp\": \"250\"}')")
    assert await worker.fetchval("SELECT count(*) FROM pg_temp.hijacked") == 0
    assert await owner.fetchval(
        "SELECT array_agg(status::text ORDER BY id) FROM email.delivery_events "
        "WHERE delivery_id = 'd1'"
    ) == ["queued", "in_progress", "retrying", "sent"]
