"""The status transition table: the one Python copy of it.

The database enforces the same table in ``email.is_allowed_transition`` (see ``ddl.py``);
``tests/integration/test_transitions.py`` proves the two agree. Staying in the same status
is always allowed (a lease takeover, a metadata change); every other move must be listed.
"""

from __future__ import annotations

from types import MappingProxyType

from email_delivery.models import DeliveryStatus as S

ILLEGAL_TRANSITION_SQLSTATE = "ED001"
"""SQLSTATE of the error raised for a move outside the table (class ``ED``: email delivery)."""

ATTEMPTS_DECREASED_SQLSTATE = "ED002"
"""SQLSTATE of the error raised when ``attempts`` would go down."""

TERMINAL = frozenset({S.SENT, S.FAILED, S.DEAD_LETTER})
"""Statuses the worker never leaves on its own (``failed``/``dead_letter`` only by requeue)."""

TRANSITIONS: MappingProxyType[S, frozenset[S]] = MappingProxyType(
    {
        S.QUEUED: frozenset({S.IN_PROGRESS, S.SENT, S.FAILED, S.DEAD_LETTER}),
        S.IN_PROGRESS: frozenset({S.SENT, S.RETRYING, S.FAILED, S.DEAD_LETTER}),
        S.RETRYING: frozenset({S.IN_PROGRESS, S.SENT, S.FAILED, S.DEAD_LETTER}),
        # A requeue by an operator, or a late success report: nothing else.
        S.FAILED: frozenset({S.QUEUED, S.SENT}),
        S.DEAD_LETTER: frozenset({S.QUEUED, S.SENT}),
        S.SENT: frozenset(),
    }
)


def is_allowed(old: S, new: S) -> bool:
    """Whether a delivery may move from ``old`` to ``new``."""
    return old == new or new in TRANSITIONS[old]
