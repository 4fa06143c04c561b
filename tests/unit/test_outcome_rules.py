"""The outcome kinds and their precedence are written once on each side: the table's CHECKs
(``models.OUTCOME_KINDS``) and SQL's ``email.outcome_rank`` follow ``OutcomeKind``."""

from __future__ import annotations

import re

from email_delivery import sql
from email_delivery.models import OUTCOME_KINDS
from email_delivery.providers.events import OutcomeKind


def test_the_tables_know_the_kinds_in_precedence_order() -> None:
    assert tuple(kind.value for kind in OutcomeKind) == OUTCOME_KINDS


def test_outcome_rank_follows_the_precedence() -> None:
    body = sql.read("functions/outcome_rank.sql")
    ranks = {
        kind: int(rank)
        for kind, rank in re.findall(
            r"WHEN '([a-z]+)' THEN (?:CASE WHEN p_permanent THEN )?(\d+)", body
        )
    }
    assert list(ranks) == [kind.value for kind in OutcomeKind]
    assert sorted(ranks.values()) == list(ranks.values())
