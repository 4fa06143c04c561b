"""3. The lifecycle bypassed with a plain UPDATE.

The nine lifecycle functions are SECURITY INVOKER and the writer holds a table-wide UPDATE
grant, so every rule a function checks in its WHERE clause or arguments (who may requeue,
sanitised messages, no secret in metadata, the lifecycle's own metadata keys, claims and
attempts) can be skipped by writing the row directly. Each test arranges one delivery in
every status through the functions, then tries one statement as the writer.
"""

from __future__ import annotations

import asyncpg
import pytest

from tests.security._attack import (
    all_event_text,
    arrange_one_of_each,
    assert_nothing_changed,
    attempt,
    claim,
    snapshot,
)

FORGED_REQUEUE_PAYLOAD = (
    "WITH p AS (SELECT set_config('email.event_payload', "
    '\'{"reason": "ops ticket", "requeued_by": "postgres"}\', true)) '
)

REQUEUE_PATHS = {
    # an operator's requeue, impersonated in the audit trail by the payload
    "update-failed": FORGED_REQUEUE_PAYLOAD
    + "UPDATE email.deliveries SET status = 'queued' FROM p WHERE delivery_id = 'd-failed'",
    "update-dead_letter": FORGED_REQUEUE_PAYLOAD
    + "UPDATE email.deliveries SET status = 'queued' FROM p WHERE delivery_id = 'd-dead_letter'",
    "do-block": "DO $$ BEGIN UPDATE email.deliveries SET status = 'queued' "
    "WHERE delivery_id = 'd-failed'; END $$",
    # any login may create functions in pg_temp
    "temporary-function": "CREATE FUNCTION pg_temp.requeue(id text) RETURNS void "
    "LANGUAGE sql AS $$ UPDATE email.deliveries SET status = 'queued' WHERE delivery_id = id $$; "
    "SELECT pg_temp.requeue('d-failed')",
    "requeue_delivery": "SELECT * FROM email.requeue_delivery('d-failed', 'ops ticket')",
}


@pytest.mark.parametrize("path", REQUEUE_PATHS)
async def test_writer_cannot_requeue_by_any_path(
    owner: asyncpg.Connection, worker: asyncpg.Connection, path: str
) -> None:
    """``failed``/``dead_letter`` -> ``queued`` is the owner's decision, whatever the path."""
    await arrange_one_of_each(worker)
    before = await snapshot(owner)
    error = await attempt(worker, REQUEUE_PATHS[path])
    await assert_nothing_changed(owner, before, error)


ADDRESS = "bob.victim@example.com"
PASSWORD = "hunter2"
LEAKY = f"535 5.7.8 authentication failed for {ADDRESS} password={PASSWORD}"

UNSANITISED_PATHS = {
    # a transition: the message lands on the row and on the audit event
    "with-a-transition": "UPDATE email.deliveries SET status = 'retrying', "
    "last_error_code = 'SMTP_535', last_error_message = $1 WHERE delivery_id = 'd-in_progress'",
    "on-the-row-only": "UPDATE email.deliveries SET last_error_message = $1 "
    "WHERE delivery_id = 'd-retrying'",
}


@pytest.mark.parametrize("path", UNSANITISED_PATHS)
async def test_writer_cannot_store_an_unsanitised_error_message(
    owner: asyncpg.Connection, worker: asyncpg.Connection, path: str
) -> None:
    """``mark_delivery_failed`` sanitises; a plain UPDATE must not store it raw either (a
    fix may refuse the statement or sanitise the value: neither leaves the secret)."""
    await arrange_one_of_each(worker)
    await attempt(worker, UNSANITISED_PATHS[path], LEAKY)
    stored = await all_event_text(owner)
    assert ADDRESS not in stored, "an address was stored unsanitised"
    assert PASSWORD not in stored, "a password was stored unsanitised"


SECRET_METADATA = {
    "update-otp": 'UPDATE email.deliveries SET metadata = metadata || \'{"otp": "482193"}\' '
    "WHERE delivery_id = 'd-queued'",
    "update-reset-link": "UPDATE email.deliveries SET metadata = metadata || "
    '\'{"reset_url": "https://app.example.com/reset?token=Zx81kQ"}\' '
    "WHERE delivery_id = 'd-queued'",
    # within the table's 16 KiB but beyond the caller's 15,872 bytes: the dead-letter
    # reference the lifecycle appends later would no longer fit
    "update-oversized": "UPDATE email.deliveries SET metadata = "
    "jsonb_build_object('blob', repeat('x', 16300)) WHERE delivery_id = 'd-queued'",
    "insert-otp": "INSERT INTO email.deliveries (delivery_id, workflow, recipient, metadata) "
    "VALUES ('d-new', 'verification-code', 'new@example.com', '{\"otp\": \"482193\"}')",
    "insert-reset-link": "INSERT INTO email.deliveries (delivery_id, workflow, recipient, "
    "metadata) VALUES ('d-new', 'verification-code', 'new@example.com', "
    '\'{"link": "https://app.example.com/reset?token=Zx81kQ"}\')',
}


@pytest.mark.parametrize("path", SECRET_METADATA)
async def test_writer_cannot_store_what_enqueue_rejects_in_metadata(
    owner: asyncpg.Connection, worker: asyncpg.Connection, path: str
) -> None:
    """``enqueue_delivery`` rejects a secret (ED003) and more than the caller's share of
    16 KiB; the same metadata by UPDATE or INSERT must be refused too."""
    await arrange_one_of_each(worker)
    before = await snapshot(owner)
    error = await attempt(worker, SECRET_METADATA[path])
    await assert_nothing_changed(owner, before, error)


LIFECYCLE_KEYS = {
    # attempts - requeued_at_attempt never reaches max_attempts: retried forever
    "set-requeued_at_attempt": "UPDATE email.deliveries SET metadata = metadata || "
    "'{\"requeued_at_attempt\": 1000}' WHERE delivery_id = 'd-retrying'",
    # a forged reference blocks the real one (recorded only when missing)
    "set-dead_letter_reference": "UPDATE email.deliveries SET metadata = metadata || "
    "'{\"dead_letter_reference\": \"forged-1\"}' WHERE delivery_id = 'd-failed'",
    # the retry budget of a requeued delivery disappears
    "remove-requeued_at_attempt": "UPDATE email.deliveries SET metadata = "
    "metadata - 'requeued_at_attempt' WHERE delivery_id = 'd-requeued'",
    "insert-with-requeued_at_attempt": "INSERT INTO email.deliveries (delivery_id, workflow, "
    "recipient, metadata) VALUES ('d-new', 'verification-code', 'new@example.com', "
    "'{\"requeued_at_attempt\": 1000}')",
}


@pytest.mark.parametrize("path", LIFECYCLE_KEYS)
async def test_writer_cannot_set_the_lifecycles_metadata_keys_by_hand(
    owner: asyncpg.Connection, worker: asyncpg.Connection, path: str
) -> None:
    await arrange_one_of_each(worker)
    await owner.execute(
        "SELECT FROM email.enqueue_delivery('d-requeued', 'verification-code', "
        "'r@example.com', '{}', NULL)"
    )
    await owner.execute("SELECT FROM email.claim_delivery('d-requeued', interval '5 minutes')")
    await owner.execute(
        "SELECT FROM email.mark_delivery_failed('d-requeued', 1, 'SMTP_550', 'no', false, 5, NULL)"
    )
    await owner.execute("SELECT FROM email.requeue_delivery('d-requeued', 'ops ticket')")
    before = await snapshot(owner)
    error = await attempt(worker, LIFECYCLE_KEYS[path])
    await assert_nothing_changed(owner, before, error)


LAST_ATTEMPTED_AT = {
    # the live claim looks expired: another claimer takes it over and sends again
    "backwards": "now() - interval '1 hour'",
    "null": "NULL",
    # the claim never expires: the reaper never hands it back
    "into-the-future": "now() + interval '10 years'",
}


@pytest.mark.parametrize("moved", LAST_ATTEMPTED_AT)
async def test_writer_cannot_move_last_attempted_at(
    owner: asyncpg.Connection, worker: asyncpg.Connection, moved: str
) -> None:
    await arrange_one_of_each(worker)
    before = await snapshot(owner)
    error = await attempt(
        worker,
        f"UPDATE email.deliveries SET last_attempted_at = {LAST_ATTEMPTED_AT[moved]} "
        "WHERE delivery_id = 'd-in_progress'",
    )
    await assert_nothing_changed(owner, before, error)


async def test_writer_cannot_steal_a_live_claim_by_backdating_it(
    owner: asyncpg.Connection, worker: asyncpg.Connection
) -> None:
    """End to end: after the backdate, a second claim with the agreed lease must still
    lose (changed = false), or the email goes out twice."""
    await arrange_one_of_each(worker)
    await attempt(
        worker,
        "UPDATE email.deliveries SET last_attempted_at = now() - interval '1 hour' "
        "WHERE delivery_id = 'd-in_progress'",
    )
    assert not await claim(worker, "d-in_progress"), "a live claim was taken over"
    assert (
        await owner.fetchval(
            "SELECT attempts FROM email.deliveries WHERE delivery_id = 'd-in_progress'"
        )
        == 1
    )


ATTEMPTS = {
    "jump": "UPDATE email.deliveries SET attempts = attempts + 5 WHERE delivery_id = 'd-queued'",
    "count-without-a-claim": "UPDATE email.deliveries SET attempts = attempts + 1 "
    "WHERE delivery_id = 'd-queued'",
    # the next claim's attempts + 1 overflows: the delivery can never be claimed again
    "overflow": "UPDATE email.deliveries SET attempts = 2147483647 "
    "WHERE delivery_id = 'd-retrying'",
    # a hand-made lease takeover of a live claim
    "takeover-by-hand": "UPDATE email.deliveries SET attempts = attempts + 1, "
    "last_attempted_at = now() WHERE delivery_id = 'd-in_progress'",
    # a claim that counts no attempt: a superseded worker's report would match it
    "claim-without-counting": "UPDATE email.deliveries SET status = 'in_progress', "
    "last_attempted_at = now() WHERE delivery_id = 'd-retrying'",
    # refused today by deliveries_guard_transition (ED002): a regression guard
    "decrease": "UPDATE email.deliveries SET attempts = 0 WHERE delivery_id = 'd-retrying'",
}


@pytest.mark.parametrize("change", ATTEMPTS)
async def test_writer_cannot_manipulate_attempts(
    owner: asyncpg.Connection, worker: asyncpg.Connection, change: str
) -> None:
    """``attempts`` counts claims: it moves only by one, with a claim."""
    await arrange_one_of_each(worker)
    before = await snapshot(owner)
    error = await attempt(worker, ATTEMPTS[change])
    await assert_nothing_changed(owner, before, error)
