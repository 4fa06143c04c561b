"""How long ``Sender.run`` waits between ticks (``pause_after``): a backlog goes out at
once, a trickle in batches (``linger``), and an idle sender polls every ``interval``."""

from __future__ import annotations

import pytest

from email_delivery.errors import InvalidInput
from email_delivery.webhooks.outbox import FAN_OUT_PAGE
from email_delivery.webhooks.sender import Sender, TickReport, pause_after

PACE = {"batch": 100, "interval": 1.0, "linger": 0.05}


def test_an_idle_tick_waits_the_interval() -> None:
    assert pause_after(TickReport(), **PACE) == 1.0


def test_a_tick_with_some_work_lingers_so_that_a_trickle_is_sent_in_batches() -> None:
    assert pause_after(TickReport(claimed=3, delivered=3), **PACE) == 0.05
    assert pause_after(TickReport(events_read=20, messages_built=20), **PACE) == 0.05


def test_a_backlog_is_worked_through_at_once() -> None:
    assert pause_after(TickReport(claimed=100), **PACE) == 0.0
    assert pause_after(TickReport(events_read=FAN_OUT_PAGE, claimed=5), **PACE) == 0.0


def test_linger_never_exceeds_the_interval() -> None:
    assert pause_after(TickReport(claimed=1), batch=100, interval=0.01, linger=0.05) == 0.01


@pytest.mark.parametrize("linger", [-1, True, "0.1"])
async def test_a_bad_linger_is_refused(linger: object) -> None:
    sender = Sender.__new__(Sender)
    with pytest.raises(InvalidInput, match="linger"):
        await sender.run(interval=1.0, linger=linger)  # type: ignore[arg-type]
