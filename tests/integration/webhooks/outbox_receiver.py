"""A real receiver for the outbox tests: an ``aiohttp.web`` server on 127.0.0.1 that verifies
every request with the ``standardwebhooks`` reference package (the secret of the path's
endpoint) and answers as its script says.

Paths are ``/<token>``; ``receiver.script(token, [...])`` sets the answers by arrival of each
``webhook-id``: the n-th arrival of one message gets step n (the last step repeats).
Steps: ``ok`` (200), ``500``, ``410``, ``timeout`` (sleeps ``hang`` seconds: past the
sender's timeout), ``slow`` (sleeps ``slow`` seconds, then 200). ``receiver.down = True``
answers 503 to everything (an outage).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass(frozen=True)
class Arrival:
    token: str
    message_id: str
    body: bytes
    verified: bool
    answer: str

    @property
    def payload(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class OutboxReceiver:
    hang: float = 5.0
    slow: float = 0.2
    down: bool = False
    arrivals: list[Arrival] = field(default_factory=list)
    port: int = 0
    _secrets: dict[str, str] = field(default_factory=dict)
    _scripts: dict[str, list[str]] = field(default_factory=dict)
    _count: Counter[tuple[str, str]] = field(default_factory=Counter)
    _runner: web.AppRunner | None = None

    def url(self, token: str) -> str:
        return f"http://127.0.0.1:{self.port}/{token}"

    def secret(self, token: str, secret: str) -> None:
        self._secrets[token] = secret

    def script(self, token: str, steps: list[str]) -> None:
        self._scripts[token] = steps

    def of(self, token: str) -> list[Arrival]:
        return [a for a in self.arrivals if a.token == token]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{token}", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        body = await request.read()
        headers = {name.lower(): value for name, value in request.headers.items()}
        message_id = headers.get("webhook-id", "")
        try:
            Webhook(self._secrets[token]).verify(body, headers)
            verified = True
        except (WebhookVerificationError, KeyError):
            verified = False
        steps = self._scripts.get(token, ["ok"])
        seen = self._count[(token, message_id)]
        self._count[(token, message_id)] += 1
        answer = "503" if self.down else steps[min(seen, len(steps) - 1)]
        if not verified:
            answer = "401"
        self.arrivals.append(Arrival(token, message_id, body, verified, answer))
        match answer:
            case "ok":
                return web.Response(text="accepted")
            case "slow":
                await asyncio.sleep(self.slow)
                return web.Response(text="accepted, slowly")
            case "timeout":
                await asyncio.sleep(self.hang)
                return web.Response(text="too late")
            case "410":
                return web.Response(status=410, text="gone")
            case "401":
                return web.Response(status=401, text="bad signature")
            case "503":
                return web.Response(status=503, text="down for maintenance")
        return web.Response(status=500, text="boom " + "x" * 5000)
