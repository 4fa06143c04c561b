"""The aiohttp side of the transport: a session whose every connection goes only to public
addresses. Imported by ``transport`` on first use, so that the rest of the package works
without the ``webhooks`` extra.

Two guards, one per place an address can come from:

* ``PublicResolver``: host names are resolved through ``urls.resolve_public``; a name with
  any non-public address raises ``NonPublicAddress`` and nothing connects.
* ``guarded_socket_factory``: every socket is created for the exact address it is about to
  connect to (aiohttp passes the ``getaddrinfo`` tuple), and refuses a non-public one. This
  covers IP literals, which aiohttp never hands to the resolver, and anything that reaches
  the connector by another path: the check is on the address connected to, not on an
  earlier answer (DNS rebinding cannot slip between the two).
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.connector import AddrInfoType

from email_delivery.webhooks.urls import Lookup, non_public_reason, resolve_public

__all__ = [
    "REFUSED_MARKER",
    "PublicResolver",
    "RefusedAddress",
    "guarded_socket_factory",
    "make_session",
]

REFUSED_MARKER = "refused to connect to a non-public address"


class RefusedAddress(OSError):
    """Raised by the socket factory (an ``OSError``, as the connector expects from socket
    creation); its text starts with ``REFUSED_MARKER`` so it is recognisable even when
    aiohttp folds several connection errors into one."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"{REFUSED_MARKER}: {address} ({reason})")
        self.address = address
        self.reason = reason


class PublicResolver(AbstractResolver):
    """Resolves through ``resolve_public``: all public addresses, or ``NonPublicAddress``."""

    def __init__(self, *, allow_private: bool, lookup: Lookup | None = None) -> None:
        self._allow_private = allow_private
        self._lookup = lookup

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await resolve_public(
            host, port, allow_private=self._allow_private, lookup=self._lookup
        )
        results: list[ResolveResult] = []
        for address in addresses:
            address_family = socket.AF_INET6 if ":" in address else socket.AF_INET
            if family not in (socket.AF_UNSPEC, address_family):
                continue
            results.append(
                ResolveResult(
                    hostname=host,
                    host=address,
                    port=port,
                    family=address_family,
                    proto=0,
                    flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
                )
            )
        if not results:
            raise OSError(f"{host} has no address of the requested family")
        return results

    async def close(self) -> None:
        return None


def guarded_socket_factory(*, allow_private: bool) -> Callable[[AddrInfoType], socket.socket]:
    """A ``socket_factory`` for ``aiohttp.TCPConnector`` that refuses to create a socket
    for a non-public destination (``RefusedAddress``) unless ``allow_private``."""

    def factory(addr_info: AddrInfoType) -> socket.socket:
        family, kind, proto, _canonical, sockaddr = addr_info
        address = str(sockaddr[0])
        if not allow_private:
            reason = non_public_reason(address)
            if reason is not None:
                raise RefusedAddress(address, reason)
        return socket.socket(family=family, type=kind, proto=proto)

    return factory


def make_session(
    *,
    allow_private: bool,
    lookup: Lookup | None,
    user_agent: str,
    limit: int,
    limit_per_host: int,
) -> aiohttp.ClientSession:
    """One session for a sender: guarded resolver and sockets, TLS verified (aiohttp's
    default context), no proxies from the environment (``trust_env=False``: a proxy would
    connect on our behalf, past both guards), no cookies kept between endpoints, no
    automatic decompression (the excerpt is read raw, so a compressed bomb costs nothing)."""
    connector = aiohttp.TCPConnector(
        resolver=PublicResolver(allow_private=allow_private, lookup=lookup),
        socket_factory=guarded_socket_factory(allow_private=allow_private),
        ssl=True,
        limit=limit,
        limit_per_host=limit_per_host,
    )
    return aiohttp.ClientSession(
        connector=connector,
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        headers={"User-Agent": user_agent, "Accept-Encoding": "identity"},
    )
