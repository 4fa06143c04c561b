"""A real webhook receiver for the transport tests: an ``aiohttp.web`` server on
127.0.0.1 that verifies every request's signature with the ``standardwebhooks`` reference
package, records what it received, and answers as the request's path tells it to.

Paths are ``/<behaviour>/<token>``: each test uses a token of its own, and asks
``receiver.seen(token)`` what arrived for it (the server is shared by a module).

=============  =================================================================
behaviour      answer
=============  =================================================================
``ok``         200 ``accepted``
``fail``       500 ``boom``
``gone``       410
``not-found``  404
``sleep``      200 after ``?seconds=`` (default 2): past a short timeout
``slow``       same as ``sleep``, used with a timeout long enough to wait
``redirect``   302 to ``?to=`` (default ``/ok/<token>``)
``big``        200 with 100,000 bytes of ``x``
``binary``     200 with bytes that are not UTF-8 and a NUL
``latin1``     200 ``café`` in ISO-8859-1, declared in ``Content-Type``
``flaky``      500 the first time a ``webhook-id`` arrives, 200 after
``disable``    200 with ``webhook-delivery: disable``
``abort``      500 with ``webhook-delivery: abort-message``
=============  =================================================================

A request whose signature does not verify is recorded with ``verified=False`` and
answered 401.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass(frozen=True)
class Received:
    behaviour: str
    token: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    error: str | None

    @property
    def message_id(self) -> str | None:
        return self.headers.get("webhook-id")


@dataclass
class Receiver:
    secret: str
    received: list[Received] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None
    _seen_ids: set[str] = field(default_factory=set)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, behaviour: str, token: str, query: str = "") -> str:
        return f"{self.base_url}/{behaviour}/{token}{f'?{query}' if query else ''}"

    def seen(self, token: str) -> list[Received]:
        return [request for request in self.received if request.token == token]

    async def start(self, *, tls: ssl.SSLContext | None = None) -> None:
        app = web.Application()
        app.router.add_route("*", "/{behaviour}/{token}", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=tls)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        behaviour = request.match_info["behaviour"]
        token = request.match_info["token"]
        body = await request.read()
        headers = {name.lower(): value for name, value in request.headers.items()}
        try:
            Webhook(self.secret).verify(body, headers)
            verified, error = True, None
        except WebhookVerificationError as exc:
            verified, error = False, str(exc)
        self.received.append(Received(behaviour, token, headers, body, verified, error))
        if not verified:
            return web.Response(status=401, text=f"bad signature: {error}")

        seconds = float(request.query.get("seconds", "2"))
        match behaviour:
            case "ok":
                return web.Response(text="accepted")
            case "fail":
                return web.Response(status=500, text="boom")
            case "gone":
                return web.Response(status=410, text="this endpoint was removed")
            case "not-found":
                return web.Response(status=404, text="no such hook")
            case "sleep" | "slow":
                await asyncio.sleep(seconds)
                return web.Response(text="finally")
            case "redirect":
                raise web.HTTPFound(request.query.get("to", f"/ok/{token}"))
            case "big":
                return web.Response(body=b"x" * 100_000, content_type="text/plain")
            case "binary":
                return web.Response(
                    body=b"\xff\xfe\x00caf\xc3\xa9 \xc3", content_type="application/octet-stream"
                )
            case "latin1":
                return web.Response(
                    body="café".encode("latin-1"),
                    headers={"Content-Type": "text/plain; charset=iso-8859-1"},
                )
            case "flaky":
                message_id = headers.get("webhook-id", "")
                if message_id not in self._seen_ids:
                    self._seen_ids.add(message_id)
                    return web.Response(status=500, text="not yet")
                return web.Response(text="accepted on retry")
            case "disable":
                return web.Response(text="ok, but stop", headers={"webhook-delivery": "disable"})
            case "abort":
                return web.Response(
                    status=500, text="poison", headers={"webhook-delivery": "abort-message"}
                )
        return web.Response(status=400, text=f"unknown behaviour {behaviour}")
