"""The Python transition table and the SQL one agree on all 36 pairs, and real UPDATEs obey it."""

from __future__ import annotations

import itertools

import asyncpg
import pytest

from email_delivery.errors import IllegalTransition
from email_delivery.models import DeliveryStatus as S
from email_delivery.rules import TRANSITIONS, is_allowed
from tests.support.db import events, insert_delivery

PAIRS = list(itertools.product(S, S))


def test_table_encodes_the_rules() -> None:
    assert len(PAIRS) == 49
    assert set(TRANSITIONS) == set(S)
    assert TRANSITIONS[S.SENT] == TRANSITIONS[S.SUPPRESSED] == frozenset()
    assert TRANSITIONS[S.FAILED] == TRANSITIONS[S.DEAD_LETTER] == {S.QUEUED, S.SENT}
    assert all(S.SENT in TRANSITIONS[s] for s in S if s not in (S.SENT, S.SUPPRESSED))
    # suppressed is entered only from queued (at enqueue), and left never.
    assert [s for s in S if S.SUPPRESSED in TRANSITIONS[s]] == [S.QUEUED]
    assert sum(is_allowed(old, new) for old, new in PAIRS) == 7 + 17


async def test_sql_function_equals_python_table(owner_tx: asyncpg.Connection) -> None:
    rows = await owner_tx.fetch(
        "SELECT o::text, n::text, email.is_allowed_transition(o, n) "
        "FROM unnest(enum_range(NULL::email.delivery_status)) o, "
        "unnest(enum_range(NULL::email.delivery_status)) n"
    )
    assert {(S(o), S(n)): allowed for o, n, allowed in rows} == {
        (old, new): is_allowed(old, new) for old, new in PAIRS
    }


@pytest.mark.parametrize(("old", "new"), PAIRS, ids=[f"{o}->{n}" for o, n in PAIRS])
async def test_update_obeys_the_table(owner_tx: asyncpg.Connection, old: S, new: S) -> None:
    await insert_delivery(owner_tx, "move-1", status=old.value, attempts=1)
    statement = "UPDATE email.deliveries SET status = $1 WHERE delivery_id = 'move-1'"
    if is_allowed(old, new):
        await owner_tx.execute(statement, new.value)
        assert await owner_tx.fetchval("SELECT status::text FROM email.deliveries") == new
        assert [e["status"] for e in await events(owner_tx, "move-1")] == (
            [old] if old == new else [old, new]
        )
        return
    with pytest.raises(asyncpg.PostgresError) as raised:
        async with owner_tx.transaction():
            await owner_tx.execute(statement, new.value)
    assert raised.value.sqlstate == IllegalTransition.sqlstate
    assert f"from {old} to {new}" in str(raised.value)
    assert await owner_tx.fetchval("SELECT status::text FROM email.deliveries") == old
