"""One HTTP attempt of a signed webhook: ``POST`` the body, classify the answer.

::

    async with Transport() as transport:            # one per sender: one aiohttp session
        result = await transport.post(
            url=endpoint_url,                         # stored by check_endpoint_url
            body=rendered.body,                       # payloads.render(...)
            headers=signing.headers(secret, message_id=rendered.message_id,
                                    timestamp=now, body=rendered.body),
            timeout=15.0,
        )

``post(...)`` (module level) does the same with a session of its own, for a one-off.

What an ``AttemptResult`` means, and what the outbox should do with it:

=========================================  =======  ==========  ====  =========================
outcome                                    status   retryable   gone  outbox
=========================================  =======  ==========  ====  =========================
2xx                                        2xx      no          no    delivered; the
                                                                      endpoint's failure streak
                                                                      ends
410 Gone                                   410      no          yes   disable the endpoint
                                                                      (the receiver asks to
                                                                      stop: Standard Webhooks)
any other non-2xx (3xx, 4xx, 5xx)          it       yes         no    retry on the schedule
timeout, connection refused or reset, DNS  None     yes         no    retry on the schedule
failure, TLS failure
host resolves to a non-public address      None     no          no    fail the message; the
(connect-time SSRF guard)                                             URL is no longer safe:
                                                                      review the endpoint
=========================================  =======  ==========  ====  =========================

4xx are retried, as Svix does ("any other status code … treated as failures", all on the
same schedule): most are a receiver's transient mistake (a deploy answering 404, a 401
while it rotates its secret, a 429), and a receiver that is permanently wrong is caught by
the failure budget (``schedule.should_disable``), not by one answer. Only 410 says
"permanently gone". 3xx are failures too and redirects are never followed: a redirect
could point anywhere, including inside our network, and the Standard Webhooks guidance is
to update the URL instead.

Svix's delivery-control response header is honoured: ``webhook-delivery: disable`` sets
``gone`` (whatever the status), ``webhook-delivery: abort-message`` makes a failure not
retryable. ``Retry-After`` (429, 503) is not modelled: the schedule's next delay applies.

``error`` says what went wrong in one line (``HTTP 500 Internal Server Error``, ``timed out
after 15 s``, ``cannot connect: …``) and is ``None`` for a 2xx. ``response_excerpt`` is the
start of the response body: at most ``max_excerpt`` bytes read (the rest is never read),
decoded with the response's charset (UTF-8 if it names none or an unknown one) with
``errors="replace"``, NUL replaced by U+FFFD (a PostgreSQL ``text`` column refuses NUL);
``None`` when there was no response, ``""`` for an empty body. The excerpt is the
receiver's text: store it as untrusted, and through the schema's sanitiser if it is
shown. ``latency_ms`` is the wall time of the whole attempt (connect, send, response
headers, excerpt).

A URL ``check_endpoint_url`` refuses (with this transport's flags) raises
``InvalidInput(field="url")`` before anything is sent: it is a configuration error, which
registration should have caught. The timeout is total: connecting, sending, the response
headers and the excerpt.
"""

from __future__ import annotations

import codecs
import contextlib
import importlib
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Self

from email_delivery.errors import InvalidInput
from email_delivery.webhooks.errors import MissingWebhooksExtra, NonPublicAddress
from email_delivery.webhooks.urls import Lookup, check_endpoint_url

if TYPE_CHECKING:
    import aiohttp

__all__ = ["DEFAULT_MAX_EXCERPT", "MAX_ERROR_LENGTH", "AttemptResult", "Transport", "post"]

DEFAULT_MAX_EXCERPT = 1024
MAX_ERROR_LENGTH = 500
"""``AttemptResult.error`` is cut to this length (it may quote the receiver's text: a
reason phrase, a ``Location``)."""
DELIVERY_CONTROL_HEADER = "webhook-delivery"
_CHECKED_URLS = 1000
_HEADER_VALUE = re.compile(r"^[^\x00\r\n]*$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def _user_agent() -> str:
    try:
        return f"email-delivery-webhooks/{version('email-delivery')}"
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "email-delivery-webhooks"


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """The outcome of one attempt (the table in the module docstring)."""

    status: int | None
    """The HTTP status, or ``None`` when no response came (timeout, connection error)."""
    latency_ms: float
    response_excerpt: str | None
    error: str | None
    """One line saying what failed; ``None`` for a 2xx."""
    retryable: bool
    """Try again later, on the schedule."""
    gone: bool
    """The receiver asked to stop (410, or ``webhook-delivery: disable``)."""

    @property
    def ok(self) -> bool:
        """Delivered: a 2xx answer."""
        return self.status is not None and 200 <= self.status < 300


def _glue() -> ModuleType:
    """``email_delivery.webhooks._aiohttp``, or ``MissingWebhooksExtra`` without aiohttp."""
    try:
        return importlib.import_module("email_delivery.webhooks._aiohttp")
    except ImportError as exc:
        if (exc.name or "").split(".")[0] in {"aiohttp", "aiohappyeyeballs", "yarl", "multidict"}:
            raise MissingWebhooksExtra() from exc
        raise


def _check_headers(headers: object) -> dict[str, str]:
    if not isinstance(headers, Mapping):
        raise InvalidInput("headers", "must be a mapping of header names to values")
    checked: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise InvalidInput("headers", f"{name!r} is not a valid header name")
        if not isinstance(value, str) or not _HEADER_VALUE.match(value):
            raise InvalidInput(f"headers.{name}", "must be a string without CR, LF or NUL")
        checked[name] = value
    return checked


def _check_timeout(timeout: object) -> float:
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise InvalidInput("timeout", "must be a positive number of seconds")
    return float(timeout)


def _one_line(error: str) -> str:
    """The error on one line, at most ``MAX_ERROR_LENGTH`` characters."""
    text = " ".join(error.split())
    if len(text) > MAX_ERROR_LENGTH:
        text = text[: MAX_ERROR_LENGTH - 1] + "…"
    return text


def _decode(data: bytes, charset: str | None, limit: int) -> str:
    encoding = "utf-8"
    if charset:
        with contextlib.suppress(LookupError):
            encoding = codecs.lookup(charset).name
    return data.decode(encoding, errors="replace").replace("\x00", "\ufffd")[:limit]


class Transport:
    """One sender's HTTP client: ``async with Transport(...) as transport``, then
    ``await transport.post(...)`` for every attempt (connections are pooled per host).

    ``allow_insecure`` accepts ``http://`` URLs and ``allow_private`` non-public hosts and
    addresses: development and tests only. ``lookup`` replaces the system resolver (tests;
    the result is still checked). ``limit`` and ``limit_per_host`` cap open connections.
    """

    def __init__(
        self,
        *,
        allow_insecure: bool = False,
        allow_private: bool = False,
        lookup: Lookup | None = None,
        user_agent: str | None = None,
        limit: int = 100,
        limit_per_host: int = 10,
    ) -> None:
        self._glue = _glue()
        self.allow_insecure = allow_insecure
        self.allow_private = allow_private
        self._lookup = lookup
        self._user_agent = user_agent or _user_agent()
        self._limit = limit
        self._limit_per_host = limit_per_host
        self._session: aiohttp.ClientSession | None = None
        self._checked: dict[str, str] = {}
        """URLs ``check_endpoint_url`` accepted with this transport's flags (a pure function
        of them): a sender posts to a few URLs many times."""

    async def __aenter__(self) -> Self:
        if self._session is not None:
            raise RuntimeError("this Transport is already open")
        self._session = self._glue.make_session(
            allow_private=self.allow_private,
            lookup=self._lookup,
            user_agent=self._user_agent,
            limit=self._limit,
            limit_per_host=self._limit_per_host,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def post(
        self,
        *,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        # A timed-out attempt is a result (retryable), not an exception: hence a parameter.
        timeout: float,  # noqa: ASYNC109
        max_excerpt: int = DEFAULT_MAX_EXCERPT,
    ) -> AttemptResult:
        """One attempt: ``POST body`` to ``url`` with ``headers`` (the ``webhook-*``
        signature headers; ``Content-Type: application/json`` is added unless given)."""
        if self._session is None:
            raise RuntimeError("use `async with Transport() as transport:` before post()")
        if not isinstance(body, bytes | bytearray | memoryview):
            raise InvalidInput("body", "must be the exact bytes that were signed")
        request_headers = _check_headers(headers)
        seconds = _check_timeout(timeout)
        if isinstance(max_excerpt, bool) or not isinstance(max_excerpt, int) or max_excerpt < 0:
            raise InvalidInput("max_excerpt", "must be an integer >= 0")
        target = self._checked.get(url) if isinstance(url, str) else None
        if target is None:
            target = check_endpoint_url(
                url, allow_insecure=self.allow_insecure, allow_private=self.allow_private
            )
            if len(self._checked) >= _CHECKED_URLS:
                self._checked.clear()
            self._checked[url] = target
        if not any(name.lower() == "content-type" for name in request_headers):
            request_headers["Content-Type"] = "application/json"
        return await self._attempt(target, bytes(body), request_headers, seconds, max_excerpt)

    async def _attempt(
        self, url: str, body: bytes, headers: dict[str, str], seconds: float, max_excerpt: int
    ) -> AttemptResult:
        import aiohttp

        assert self._session is not None
        started = time.perf_counter()

        def failed(error: str, *, retryable: bool = True) -> AttemptResult:
            return AttemptResult(
                status=None,
                latency_ms=(time.perf_counter() - started) * 1000,
                response_excerpt=None,
                error=_one_line(error),
                retryable=retryable,
                gone=False,
            )

        try:
            async with self._session.post(
                url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=seconds),
            ) as response:
                status = response.status
                reason = response.reason or ""
                control = response.headers.get(DELIVERY_CONTROL_HEADER, "").strip().lower()
                location = response.headers.get("Location")
                excerpt = await self._excerpt(response, max_excerpt)
        except NonPublicAddress as exc:
            return failed(f"refused: {exc.reason}", retryable=False)
        except (TimeoutError, aiohttp.ServerTimeoutError):
            return failed(f"timed out after {seconds:g} s")
        except aiohttp.ClientConnectorCertificateError as exc:
            return failed(f"TLS certificate verification failed: {exc.certificate_error}")
        except aiohttp.ClientConnectorError as exc:
            text = str(exc.os_error) or type(exc.os_error).__name__
            if self._glue.REFUSED_MARKER in text:
                return failed(f"refused: {text}", retryable=False)
            return failed(f"cannot connect: {text}")
        except aiohttp.ClientError as exc:
            return failed(f"{type(exc).__name__}: {exc}".rstrip(": "))
        except OSError as exc:
            return failed(f"{type(exc).__name__}: {exc}")

        latency_ms = (time.perf_counter() - started) * 1000
        gone = status == 410 or control == "disable"
        if 200 <= status < 300:
            return AttemptResult(status, latency_ms, excerpt, None, False, gone)
        error = f"HTTP {status} {reason}".rstrip()
        if status == 410:
            error += ": the endpoint asks to stop receiving webhooks"
        elif 300 <= status < 400:
            error += f": redirect to {location!r} not followed"
        if control == "disable" and status != 410:
            error += " (webhook-delivery: disable)"
        retryable = not gone and control != "abort-message"
        return AttemptResult(status, latency_ms, excerpt, _one_line(error), retryable, gone)

    @staticmethod
    async def _excerpt(response: aiohttp.ClientResponse, max_excerpt: int) -> str | None:
        """At most ``max_excerpt`` bytes of the body, decoded; what was read so far if the
        body breaks off (the status is what counts)."""
        if max_excerpt == 0:
            return None
        import aiohttp

        data = bytearray()
        try:
            while len(data) < max_excerpt:
                chunk = await response.content.read(max_excerpt - len(data))
                if not chunk:
                    break
                data += chunk
        except (TimeoutError, aiohttp.ClientError, OSError):
            pass
        return _decode(bytes(data), response.charset, max_excerpt)


async def post(
    *,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    timeout: float,  # noqa: ASYNC109 (see Transport.post)
    allow_insecure: bool = False,
    allow_private: bool = False,
    max_excerpt: int = DEFAULT_MAX_EXCERPT,
) -> AttemptResult:
    """One attempt with a session of its own (prefer one ``Transport`` per sender)."""
    async with Transport(allow_insecure=allow_insecure, allow_private=allow_private) as transport:
        return await transport.post(
            url=url, body=body, headers=headers, timeout=timeout, max_excerpt=max_excerpt
        )
