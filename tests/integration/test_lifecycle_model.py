"""Property: random call sequences end in the same state in the database as in a pure-Python
model of the state machine (and every call's answer agrees on the way)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from email_delivery import DeliveryConflict, DeliveryNotFound, DeliveryTracker
from email_delivery.validation import next_status_after_failure
from tests.support.db import expire_claim, skip_backoff

LEASE = timedelta(minutes=5)
ACTIVE = ("queued", "in_progress", "retrying")


@pytest.fixture(params=["per-call", "group-commit"])
async def worker_tracker(
    worker_engine: AsyncEngine, request: pytest.FixtureRequest
) -> AsyncIterator[DeliveryTracker]:
    """Every rule holds in both commit modes: group commit runs each call through the batch
    functions (email.claim_deliveries …), which must answer exactly as the single ones."""
    async with DeliveryTracker(
        worker_engine, group_commit=request.param == "group-commit"
    ) as tracker:
        yield tracker


_examples = itertools.count()


@dataclass
class Row:
    recipient: str
    status: str = "queued"
    attempts: int = 0
    base: int = 0
    reference: str | None = None
    expired: bool = False


class Model:
    def __init__(self) -> None:
        self.rows: dict[str, Row] = {}

    def enqueue(self, key: str, recipient: str) -> tuple[str, bool]:
        if key not in self.rows:
            self.rows[key] = Row(recipient)
            return "created", True
        return ("same", False) if self.rows[key].recipient == recipient else ("conflict", False)

    def claim(self, key: str) -> int | None:
        row = self.rows[key]
        if row.status in ("queued", "retrying") or (row.status == "in_progress" and row.expired):
            row.status, row.attempts, row.expired = "in_progress", row.attempts + 1, False
            return row.attempts
        return None

    def sent(self, key: str) -> bool:
        row = self.rows[key]
        if row.status == "sent":
            return False
        row.status = "sent"
        return True

    def failed(self, key: str, attempt: int, retryable: bool, max_attempts: int) -> bool:
        row = self.rows[key]
        if row.status != "in_progress" or row.attempts != attempt:
            return False
        row.status = next_status_after_failure(
            attempts=row.attempts,
            retryable=retryable,
            max_attempts=max_attempts,
            requeued_at_attempt=row.base,
        )
        return True

    def dead_letter(self, key: str, reference: str) -> bool:
        row = self.rows[key]
        if row.status in ACTIVE:
            row.status, row.reference = "dead_letter", reference
            return True
        if row.status in ("failed", "dead_letter") and row.reference is None:
            row.reference = reference
            return True
        return False

    def requeue(self, key: str) -> bool:
        row = self.rows[key]
        if row.status not in ("failed", "dead_letter"):
            return False
        row.status, row.base = "queued", row.attempts
        return True

    def reap(self, max_attempts: int) -> set[str]:
        reaped = set()
        for key, row in self.rows.items():
            if row.status == "in_progress" and row.expired:
                exhausted = row.attempts - row.base >= max_attempts
                row.status = "dead_letter" if exhausted else "retrying"
                reaped.add(key)
        return reaped


async def _assert_unknown(
    worker: DeliveryTracker, operator: DeliveryTracker, op: str, delivery_id: str
) -> None:
    calls = {
        "claim": lambda: worker.claim(delivery_id),
        "sent": lambda: worker.mark_sent(delivery_id, attempt=1),
        "failed": lambda: worker.mark_failed(delivery_id, attempt=1, error=("E", "")),
        "dead_letter": lambda: worker.mark_dead_letter(delivery_id, reference="r"),
        "requeue": lambda: operator.requeue(delivery_id, reason="r"),
    }
    try:
        await calls[op]()
    except DeliveryNotFound:
        return
    raise AssertionError(f"{op} of an unknown delivery did not raise")


keys = st.sampled_from("abc")
operations = st.one_of(
    st.tuples(st.just("enqueue"), keys, st.booleans()),
    st.tuples(st.just("claim"), keys),
    st.tuples(st.just("sent"), keys, st.integers(-1, 1)),
    st.tuples(st.just("failed"), keys, st.integers(-1, 1), st.booleans(), st.integers(1, 3)),
    st.tuples(st.just("dead_letter"), keys),
    st.tuples(st.just("requeue"), keys),
    st.tuples(st.just("expire"), keys),
    st.tuples(st.just("reap"), st.integers(1, 3)),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(program=st.lists(operations, max_size=20))
async def test_random_call_sequences_match_the_model(
    worker_tracker: DeliveryTracker,
    operator_tracker: DeliveryTracker,
    owner_conn: asyncpg.Connection,
    program: list[tuple[Any, ...]],
) -> None:
    prefix = f"m{next(_examples)}-"
    model = Model()
    references = itertools.count()

    def did(key: str) -> str:
        return prefix + key

    for op, *args in program:
        if op == "enqueue":
            key, same = args
            recipient = "a@x.io" if same else "b@x.io"
            expected = model.enqueue(key, recipient)
            try:
                result = await worker_tracker.enqueue(
                    did(key), workflow="invite", recipient=recipient
                )
                assert expected == ("created" if result.created else "same", result.created)
            except DeliveryConflict as conflict:
                assert expected[0] == "conflict"
                assert conflict.fields == ("recipient",)
            continue
        if op == "reap":
            (max_attempts,) = args
            expected_reaped = model.reap(max_attempts)
            reaped = await worker_tracker.reap_stale(lease=LEASE, max_attempts=max_attempts)
            ours = {d.delivery_id.removeprefix(prefix) for d in reaped}
            assert ours & set("abc") == expected_reaped
            continue
        key = args[0]
        if key not in model.rows:
            if op != "expire":
                await _assert_unknown(worker_tracker, operator_tracker, op, did(key))
            continue
        row = model.rows[key]
        if op == "claim":
            expected_attempt = model.claim(key)
            # Time passes: a retry's backoff is over (backoff itself: test_policies.py).
            await skip_backoff(owner_conn, did(key))
            claim = await worker_tracker.claim(did(key), lease=LEASE)
            assert (claim.attempt if claim else None) == expected_attempt
        elif op == "sent":
            attempt = max(row.attempts + args[1], 0)
            changed = model.sent(key)
            assert (await worker_tracker.mark_sent(did(key), attempt=attempt)).changed == changed
        elif op == "failed":
            _, offset, retryable, max_attempts = args
            attempt = max(row.attempts + offset, 1)
            changed = model.failed(key, attempt, retryable, max_attempts)
            result = await worker_tracker.mark_failed(
                did(key),
                attempt=attempt,
                error=("SMTP_421", "busy"),
                retryable=retryable,
                max_attempts=max_attempts,
            )
            assert result.changed == changed
        elif op == "dead_letter":
            reference = f"ref-{next(references)}"
            changed = model.dead_letter(key, reference)
            result = await worker_tracker.mark_dead_letter(did(key), reference=reference)
            assert result.changed == changed
        elif op == "requeue":
            changed = model.requeue(key)
            assert (await operator_tracker.requeue(did(key), reason="retry")).changed == changed
        elif op == "expire":
            row.expired = True
            await expire_claim(owner_conn, did(key), "1 hour")
        stored = await worker_tracker.get(did(key))
        assert stored is not None
        assert (stored.status.value, stored.attempts) == (row.status, row.attempts), op

    for key, row in model.rows.items():
        stored = await worker_tracker.get(did(key))
        assert stored is not None
        assert stored.status.value == row.status
        assert stored.attempts == row.attempts
        assert stored.recipient == row.recipient
        assert stored.metadata_.get("dead_letter_reference") == row.reference
        assert stored.metadata_.get("requeued_at_attempt", 0) == row.base
