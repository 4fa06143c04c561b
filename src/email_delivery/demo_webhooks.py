"""The demo's ending: a downstream system receiving every status change as a signed webhook.

A local receiver (aiohttp, 127.0.0.1) stands in for the downstream system: it verifies each
request's signature (with the ``standardwebhooks`` reference package when installed, else
``email_delivery.webhooks.signing.verify``, which is tested against it), keeps what it got by
``webhook-id`` (its idempotency), and is down for a few seconds in the middle of the run
(503). An endpoint for one workflow is registered with ``webhooks.outbox.add`` (the
development flags, since the receiver is local and plain http), and a ``Sender`` runs
alongside the workers, as ``email-delivery webhooks run`` would. At the end the demo
compares what the receiver holds with the audit trail of that workflow's deliveries.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import text

from email_delivery.cli.output import print_table
from email_delivery.engine import make_engine
from email_delivery.webhooks import outbox, signing
from email_delivery.webhooks.sender import Sender

OUTAGE_AFTER_S = 1.0
OUTAGE_S = 3.0
"""Shorter than the schedule's second step (5 s, jittered to at least 4.5 s): a message that
fails during the outage is retried once it is over."""


def _verifier(secret: str) -> tuple[str, Callable[[bytes, dict[str, str]], object]]:
    try:
        from standardwebhooks.webhooks import Webhook
    except ImportError:
        return "email_delivery.webhooks.signing", lambda body, headers: signing.verify(
            secret, body=body, headers=headers
        )
    hook = Webhook(secret)
    return "standardwebhooks", lambda body, headers: hook.verify(body, headers)


@dataclass
class Downstream:
    """The receiving system: messages by ``webhook-id``, and every request it answered."""

    down: bool = False
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    answers: Counter[str] = field(default_factory=Counter)
    refused_during_outage: set[str] = field(default_factory=set)
    verifier: str = ""
    url: str = ""

    _verify: Callable[[bytes, dict[str, str]], object] | None = None

    def use_secret(self, secret: str) -> None:
        self.verifier, self._verify = _verifier(secret)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        from aiohttp import web

        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            headers = {name.lower(): value for name, value in request.headers.items()}
            message_id = headers.get("webhook-id", "")
            if self.down:
                self.answers["503 (outage)"] += 1
                self.refused_during_outage.add(message_id)
                return web.Response(status=503, text="down for maintenance")
            try:
                if self._verify is None:
                    raise ValueError("no secret yet")
                self._verify(body, headers)
            except Exception:  # any verification failure: refuse, and count it
                self.answers["401 (bad signature)"] += 1
                return web.Response(status=401, text="bad signature")
            self.answers["200"] += 1
            self.messages.setdefault(message_id, json.loads(body))  # idempotent by id
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/hooks", handle)
        runner = web.AppRunner(app, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hooks"
        try:
            yield
        finally:
            await runner.cleanup()


@contextlib.asynccontextmanager
async def webhooks_during(url: str, workflow: str) -> AsyncIterator[Downstream]:
    """Register an endpoint for ``workflow``, run a sender and an outage while the body runs;
    afterwards, drain the outbox (the retries after the outage included)."""
    downstream = Downstream()
    engine = make_engine(url, pool_size=6, max_overflow=0)
    stop = asyncio.Event()
    try:
        async with downstream.running():
            endpoint, secret = await outbox.add(
                engine,
                url=downstream.url,
                workflows=[workflow],
                description="make demo",
                allow_insecure=True,
                allow_private=True,
            )
            downstream.use_secret(secret)  # given to the downstream system once
            print(
                f"webhook endpoint #{endpoint.id} for {workflow} (email-delivery webhooks add "
                f"{downstream.url} --workflow {workflow}); its receiver is down for "
                f"{OUTAGE_S:g} s mid-run"
            )
            async with Sender(
                engine,
                timeout=5,
                lease=timedelta(seconds=30),
                concurrency=8,
                allow_insecure=True,
                allow_private=True,
            ) as sender:
                sending = asyncio.create_task(sender.run(interval=0.2, stop=stop))
                outage = asyncio.create_task(_outage(downstream))
                try:
                    yield downstream
                    await outage
                    await _drain(engine, sender)
                finally:
                    stop.set()
                    outage.cancel()
                    await asyncio.gather(sending, outage, return_exceptions=True)
    finally:
        await engine.dispose()


async def _outage(downstream: Downstream) -> None:
    await asyncio.sleep(OUTAGE_AFTER_S)
    downstream.down = True
    await asyncio.sleep(OUTAGE_S)
    downstream.down = False


async def _drain(engine: Any, sender: Sender) -> None:
    """Until the feed is read to its end and no message is pending (bounded)."""
    for _ in range(600):
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        # Unread: committed events past the outbox's cursor, whether or
                        # not the feed shows them yet (another session's open transaction
                        # may hold it back for a moment).
                        "SELECT (SELECT count(*) FROM email.webhook_messages "
                        "        WHERE state = 'pending') AS pending, "
                        "       EXISTS (SELECT FROM email.delivery_events AS e "
                        "               WHERE (e.xact_id, e.id) "
                        "                     > (s.after_xact_id, s.after_event_id)) AS unread "
                        "FROM email.webhook_feed_state AS s"
                    )
                )
            ).one()
            await conn.rollback()
        if not row.pending and not row.unread:
            return
        await asyncio.sleep(0.1)


async def report(url: str, run: str, workflow: str, downstream: Downstream) -> bool:
    """Compare the receiver's messages with the audit trail of the workflow's deliveries."""
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            trail = (
                await conn.execute(
                    text(
                        "SELECT e.id, e.delivery_id, e.status::text AS status "
                        "FROM email.delivery_events AS e "
                        "JOIN email.deliveries AS d USING (delivery_id) "
                        "WHERE d.workflow = :workflow AND d.delivery_id LIKE :run"
                    ),
                    {"workflow": workflow, "run": f"{run}-%"},
                )
            ).all()
            attempts = (
                await conn.execute(
                    text(
                        "SELECT count(*) FILTER (WHERE status_code = 503) AS refused, "
                        "count(*) AS attempts FROM email.webhook_attempts"
                    )
                )
            ).one()
            await conn.rollback()
    finally:
        await engine.dispose()
    expected = {(row.id, row.delivery_id, row.status) for row in trail}
    received = {
        (m["event"]["id"], m["delivery"]["delivery_id"], m["event"]["status"])
        for m in downstream.messages.values()
        if m["delivery"]["delivery_id"].startswith(f"{run}-")
    }
    deliveries = {row.delivery_id for row in trail}
    recovered = sum(
        1 for message_id in downstream.refused_during_outage if message_id in downstream.messages
    )
    complete = expected == received
    print(f"\nwebhooks: what the downstream system received for {workflow}")
    print_table(
        ["webhooks", "value"],
        [
            ("deliveries of the workflow", len(deliveries)),
            ("status changes in the audit trail", len(expected)),
            ("messages received (distinct webhook-id)", len(received)),
            ("signatures verified with", downstream.verifier),
            ("answers", ", ".join(f"{k}: {v}" for k, v in sorted(downstream.answers.items()))),
            ("refused in the outage, delivered on retry", recovered),
            (
                "sender attempts (503 during the outage)",
                f"{attempts.attempts} ({attempts.refused})",
            ),
        ],
        sys.stdout,
    )
    print(
        "every status change received, signed and verified, the outage included: "
        + ("yes" if complete and downstream.answers["401 (bad signature)"] == 0 else "NO")
    )
    return complete
