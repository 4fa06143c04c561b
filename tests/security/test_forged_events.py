"""1. Forged events: the audit trail is written by triggers, whoever makes the change.

With the leaked worker credential an attacker types raw SQL into ``email.delivery_events``
or attaches a payload through ``email.event_payload`` from a plain statement. Each test
asserts the forgery is refused (an error, or no effect) and nothing was half-written.
"""

from __future__ import annotations

import asyncpg
import pytest

from tests.security._attack import (
    all_event_text,
    arrange,
    assert_nothing_changed,
    attempt,
    claim,
    snapshot,
)

OTP = "482193"
ADDRESS = "bob.victim@example.com"
PASSWORD = "hunter2"


async def test_writer_cannot_insert_an_event_for_a_transition_that_did_not_happen(
    owner: asyncpg.Connection, worker: asyncpg.Connection
) -> None:
    """A ``sent`` event for a delivery that is still ``queued``: the trail would claim an
    email went out that never did."""
    await arrange(worker, "d1", "queued")
    before = await snapshot(owner)
    error = await attempt(
        worker,
        "INSERT INTO email.delivery_events (delivery_id, status, attempt, payload) "
        "VALUES ('d1', 'sent', 1, '{\"smtp\": \"250 2.0.0 OK\"}')",
    )
    await assert_nothing_changed(owner, before, error)


async def test_writer_cannot_backdate_an_event(
    owner: asyncpg.Connection, worker: asyncpg.Connection
) -> None:
    await arrange(worker, "d1", "in_progress")
    before = await snapshot(owner)
    error = await attempt(
        worker,
        "INSERT INTO email.delivery_events (delivery_id, status, attempt, created_at) "
        "VALUES ('d1', 'retrying', 1, now() - interval '30 days')",
    )
    await assert_nothing_changed(owner, before, error)


@pytest.mark.parametrize("forged_id", [0, -1])
async def test_writer_cannot_place_an_event_before_the_real_history(
    owner: asyncpg.Connection, worker: asyncpg.Connection, forged_id: int
) -> None:
    """``OVERRIDING SYSTEM VALUE`` picks an ``id`` below every real one: history is read
    ``ORDER BY id``, so the forged event would come first."""
    await arrange(worker, "d1", "sent")
    before = await snapshot(owner)
    error = await attempt(
        worker,
        "INSERT INTO email.delivery_events (id, delivery_id, status, attempt) "
        "OVERRIDING SYSTEM VALUE VALUES ($1, 'd1', 'failed', 0)",
        forged_id,
    )
    await assert_nothing_changed(owner, before, error)


SECRET_PAYLOAD_PATHS = {
    # a hand-written event
    "insert-event": [
        "INSERT INTO email.delivery_events (delivery_id, status, attempt, payload) "
        f"VALUES ('d1', 'in_progress', 1, '{{\"otp\": \"{OTP}\"}}')"
    ],
    # the README's own pattern for raw SQL, with a secret instead of an SMTP reply
    "setting-and-plain-update": [
        f"WITH p AS (SELECT set_config('email.event_payload', '{{\"otp\": \"{OTP}\"}}', true)) "
        "UPDATE email.deliveries SET status = 'retrying', last_error_code = 'SMTP_421' "
        "FROM p WHERE delivery_id = 'd1'"
    ],
    # the setting made earlier in the transaction of a lifecycle call that takes no payload
    "setting-then-claim": [
        "BEGIN",
        f"SELECT set_config('email.event_payload', '{{\"otp\": \"{OTP}\"}}', true)",
        "SELECT * FROM email.claim_delivery('d2', interval '5 minutes')",
        "COMMIT",
    ],
    # one autocommit statement: the argument is evaluated before enqueue_delivery's body,
    # which validates the metadata but never clears the setting its insert event reads
    "setting-inside-the-enqueue-call": [
        "SELECT * FROM email.enqueue_delivery('d3', 'verification-code', 'c@example.com', "
        f"(SELECT '{{}}'::jsonb FROM set_config('email.event_payload', "
        f'\'{{"otp": "{OTP}"}}\', true)), NULL)'
    ],
}


@pytest.mark.parametrize("path", SECRET_PAYLOAD_PATHS)
async def test_writer_cannot_store_a_secret_in_an_event_payload(
    owner: asyncpg.Connection, worker: asyncpg.Connection, path: str
) -> None:
    """``mark_delivery_sent``/``mark_delivery_failed`` reject a payload holding a secret
    (ED003); no other way may store one."""
    await arrange(worker, "d1", "in_progress")
    await arrange(worker, "d2", "queued")
    for statement in SECRET_PAYLOAD_PATHS[path]:
        if await attempt(worker, statement) is not None:
            await attempt(worker, "ROLLBACK")
            break
    assert OTP not in await all_event_text(owner)


async def test_writer_cannot_insert_an_unsanitised_event_error_message(
    owner: asyncpg.Connection, worker: asyncpg.Connection
) -> None:
    await arrange(worker, "d1", "in_progress")
    before = await snapshot(owner)
    error = await attempt(
        worker,
        "INSERT INTO email.delivery_events (delivery_id, status, attempt, error_code, "
        "error_message) VALUES ('d1', 'retrying', 1, 'SMTP_535', $1)",
        f"535 authentication failed for {ADDRESS} password={PASSWORD}",
    )
    text = await all_event_text(owner)
    assert ADDRESS not in text and PASSWORD not in text
    await assert_nothing_changed(owner, before, error)


# The demo's check (email_delivery.demo.report): no delivery has more than one sent event.
DEMO_SENT_TWICE = (
    "SELECT count(*) FROM (SELECT delivery_id FROM email.delivery_events "
    "WHERE status = 'sent' GROUP BY delivery_id HAVING count(*) > 1) AS t"
)

SENT_TWICE_PATHS = {
    "insert-second-sent-event": "INSERT INTO email.delivery_events (delivery_id, status, "
    "attempt) VALUES ('d1', 'sent', 1)",
    # no INSERT grant needed: sent -> sent is "the same status", and a changed attempts
    # fires deliveries_audit_update, which writes another sent event
    "bump-attempts-of-a-sent-delivery": "UPDATE email.deliveries SET attempts = attempts + 1 "
    "WHERE delivery_id = 'd1'",
}


@pytest.mark.parametrize("path", SENT_TWICE_PATHS)
async def test_writer_cannot_make_a_delivery_look_sent_twice(
    owner: asyncpg.Connection, worker: asyncpg.Connection, path: str
) -> None:
    """The demo's "no email sent twice" counts ``sent`` events: a forged one fools it."""
    await arrange(worker, "d1", "sent")
    before = await snapshot(owner)
    error = await attempt(worker, SENT_TWICE_PATHS[path])
    assert await owner.fetchval(DEMO_SENT_TWICE) == 0, "a second sent event was recorded"
    await assert_nothing_changed(owner, before, error)


async def test_a_claimed_delivery_has_no_forged_history(
    owner: asyncpg.Connection, worker: asyncpg.Connection
) -> None:
    """Control: the lifecycle itself writes exactly the expected trail (so the tests above
    compare against a real baseline)."""
    await arrange(worker, "d1", "queued")
    assert await claim(worker, "d1")
    trail = await owner.fetch(
        "SELECT status::text, attempt, payload FROM email.delivery_events "
        "WHERE delivery_id = 'd1' ORDER BY id"
    )
    assert [tuple(r) for r in trail] == [("queued", 0, None), ("in_progress", 1, None)]
