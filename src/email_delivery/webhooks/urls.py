"""Which endpoint URLs a webhook may be sent to: the SSRF guard.

A webhook endpoint is a URL a customer typed; the sender fetches it from inside our network.
Unchecked, ``http://169.254.169.254/…`` reads the cloud's instance credentials and
``http://10.0.0.5:9200/`` writes to an internal service. Two checks, both needed:

1. ``check_endpoint_url(url)`` when the endpoint is registered (and again before each
   send): the URL's form. It returns the normalised URL to store, or raises
   ``InvalidInput`` with ``field="url"``.
2. At send time, the addresses the host resolves to (``resolve_public``, and the transport's
   connect-time check, which looks at the very address each socket connects to, so a DNS
   answer that changes between the check and the connection, "DNS rebinding", gains
   nothing).

``check_endpoint_url`` refuses, unless said otherwise:

* a scheme other than ``https`` (``http`` with ``allow_insecure=True``, for development);
* user info (``https://user:pass@host/``): credentials do not belong in a stored URL, and
  ``https://good.example@evil.example/`` is the classic confusion;
* a fragment (``#…``), never sent to a server; whitespace, control characters and ``\\``
  anywhere (parsers disagree on them); a URL longer than ``MAX_URL_LENGTH``;
* a host that is not a valid DNS name or IP literal; an IPv6 zone id (``%eth0``);
* with ``allow_private=False`` (the default):

  - IP literals that are not public (``non_public_reason``): private (RFC 1918), loopback,
    link-local (``169.254.0.0/16``, where cloud metadata services answer), CGNAT
    (``100.64.0.0/10``), unspecified, multicast, broadcast, reserved, documentation and
    benchmarking ranges; IPv6 loopback, unspecified, unique-local (``fc00::/7``),
    link-local, site-local, multicast, documentation, discard; and IPv6 addresses that
    embed such an IPv4 address (IPv4-mapped ``::ffff:127.0.0.1``, NAT64
    ``64:ff9b::7f00:1``, 6to4 ``2002:7f00:1::``);
  - IPv4 addresses spelled any other way than dotted decimal: ``2130706433``, ``0x7f.1``,
    ``0177.0.0.1``, ``127.1`` (URL parsers and ``inet_aton`` read them all as
    ``127.0.0.1``; we do not accept what we would read differently from the client);
  - names that cannot be public: ``localhost`` and ``*.localhost`` (RFC 6761), ``*.local``
    (mDNS), ``*.internal`` (ICANN's private-use TLD: ``metadata.google.internal``,
    ``*.ec2.internal``), ``*.home.arpa``, ``*.localdomain``, the metadata aliases
    ``metadata`` and ``instance-data``, and any single-label name (``http://redis/``
    resolves through the search domains of our own network).

Any port is allowed. With ``allow_private=True`` none of the host rules apply (a numeric
IPv4 spelling is then rewritten to dotted decimal): for development and tests only.

The normalised URL has a lower-case scheme and host, the host in ASCII (IDNA, so
``127.0.0.1`` in full-width digits is seen for what it is), no trailing dot, no default
port, and ``/`` for an empty path; path and query are kept as given.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlsplit

from email_delivery.errors import InvalidInput
from email_delivery.webhooks.errors import NonPublicAddress

__all__ = [
    "MAX_URL_LENGTH",
    "Lookup",
    "NonPublicAddress",
    "check_endpoint_url",
    "non_public_reason",
    "resolve_public",
    "system_lookup",
]

MAX_URL_LENGTH = 2048
"""Longer endpoint URLs are refused (browsers' and proxies' common limit)."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

Lookup = Callable[[str, int], Awaitable[Iterable[str]]]
"""How a host name becomes addresses: ``await lookup(host, port)`` -> IP address strings.
``system_lookup`` (the operating system's resolver) unless a test injects its own."""

_FIELD = "url"

_NON_PUBLIC_V4 = tuple(
    (ipaddress.IPv4Network(network), reason)
    for network, reason in (
        ("0.0.0.0/8", "'this network'"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "shared address space (CGNAT)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local (cloud metadata)"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "6to4 relay anycast"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("255.255.255.255/32", "broadcast"),
        ("240.0.0.0/4", "reserved"),
    )
)
_NON_PUBLIC_V6 = tuple(
    (ipaddress.IPv6Network(network), reason)
    for network, reason in (
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::/96", "IPv4-compatible (deprecated)"),
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("100::/64", "discard-only"),
        ("2001::/23", "IETF protocol assignments (Teredo, ORCHID)"),
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
        ("fc00::/7", "unique local (ULA)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("ff00::/8", "multicast"),
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

_BLOCKED_NAMES = frozenset({"localhost", "metadata", "instance-data"})
_BLOCKED_SUFFIXES = (".localhost", ".local", ".internal", ".home.arpa", ".localdomain")

_FORBIDDEN_CHARACTERS = re.compile(r"[\x00-\x20\x7f\\]|\s")
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
_PORT = re.compile(r"^[0-9]{1,5}$")
_DECIMAL = re.compile(r"^[0-9]+$")
_HEX = re.compile(r"^0[xX][0-9a-fA-F]*$")
_DEFAULT_PORTS = {"https": 443, "http": 80}


def _refuse(message: str) -> InvalidInput:
    return InvalidInput(_FIELD, message)


def non_public_reason(address: str | IPAddress) -> str | None:
    """Why ``address`` is not a public unicast address (``"loopback"``, ``"private"``…),
    or ``None`` when it is one. IPv6 addresses embedding an IPv4 address (mapped, NAT64,
    6to4) are judged by that address too. A string that is not an IP address is refused
    (``"not an IP address"``): the caller asked about something it could not check."""
    if isinstance(address, str):
        try:
            address = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return "not an IP address"
    if isinstance(address, ipaddress.IPv6Address):
        embedded: ipaddress.IPv4Address | None = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            inner = non_public_reason(embedded)
            if inner is not None:
                return f"embeds {embedded}, {inner}"
        if address.ipv4_mapped is not None:
            return None  # judged by its IPv4 address alone
        table: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = (
            _NON_PUBLIC_V6
        )
    else:
        table = _NON_PUBLIC_V4
    for network, reason in table:
        if address in network:
            return reason
    if not address.is_global:
        return "not globally routable"
    return None


def _whatwg_ipv4(host: str) -> int | None:
    """The IPv4 address a URL parser (WHATWG, and ``inet_aton``) reads in ``host`` when
    its last label is a number (``2130706433``, ``0x7f.1``, ``0177.0.0.1``, ``127.1``);
    ``None`` when the host is a name. Raises ``InvalidInput`` for a host that ends in a
    number but is no address (``example.123``, ``1.2.3.4.5``, ``0x7g``)."""
    parts = host.split(".")
    if parts and parts[-1] == "":
        parts.pop()
    if not parts or not (_DECIMAL.match(parts[-1]) or _HEX.match(parts[-1])):
        return None
    if len(parts) > 4:
        raise _refuse(f"host {host!r} ends in a number but is not an IPv4 address")
    numbers = []
    for part in parts:
        try:
            if _HEX.match(part):
                numbers.append(int(part[2:] or "0", 16))
            elif len(part) > 1 and part.startswith("0") and _DECIMAL.match(part):
                numbers.append(int(part, 8))
            elif _DECIMAL.match(part):
                numbers.append(int(part))
            else:
                raise ValueError(part)
        except ValueError:
            raise _refuse(f"host {host!r} ends in a number but is not an IPv4 address") from None
    *leading, last = numbers
    if any(number > 255 for number in leading) or last >= 256 ** (5 - len(numbers)):
        raise _refuse(f"host {host!r} is out of range for an IPv4 address")
    value = last
    for index, number in enumerate(leading):
        value += number << (8 * (3 - index))
    return value


def _ascii_host(host: str) -> str:
    if host.isascii():
        return host.lower()
    try:
        return host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise _refuse(f"host {host!r} is not a valid internationalised name") from None


def _split_netloc(netloc: str) -> tuple[str, int | None, bool]:
    """``(host, port, bracketed)`` of a netloc without user info."""
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            raise _refuse("unclosed '[' in the host")
        host, rest = netloc[1:end], netloc[end + 1 :]
        bracketed = True
    else:
        host, _, port_text = netloc.partition(":")
        rest = f":{port_text}" if ":" in netloc else ""
        bracketed = False
    if not rest:
        return host, None, bracketed
    if not rest.startswith(":") or not _PORT.match(rest[1:]):
        raise _refuse("the port must be a number from 1 to 65535")
    port = int(rest[1:])
    if not 1 <= port <= 65535:
        raise _refuse("the port must be a number from 1 to 65535")
    return host, port, bracketed


def check_endpoint_url(
    url: str, *, allow_insecure: bool = False, allow_private: bool = False
) -> str:
    """The normalised form of a webhook endpoint URL, or ``InvalidInput(field="url")``
    saying what is wrong with it (the rules are in this module's docstring).

    This checks the URL's form and IP literals; names are checked at send time
    (``resolve_public`` and the transport's connect-time check)."""
    if not isinstance(url, str) or not url:
        raise _refuse("must be a non-empty string")
    if len(url) > MAX_URL_LENGTH:
        raise _refuse(f"longer than {MAX_URL_LENGTH} characters")
    if _FORBIDDEN_CHARACTERS.search(url):
        raise _refuse("may not contain whitespace, control characters or backslashes")
    if "#" in url:
        raise _refuse("may not have a fragment (#…)")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise _refuse(f"not a URL ({exc})") from None
    scheme = parts.scheme.lower()
    allowed = ("https", "http") if allow_insecure else ("https",)
    if scheme not in allowed:
        raise _refuse(
            "must be an https:// URL"
            + ("" if allow_insecure else " (http:// only with allow_insecure, for development)")
        )
    if not parts.netloc:
        raise _refuse("has no host")
    if "@" in parts.netloc:
        raise _refuse("may not contain user info (user:password@); use the signing secret")
    raw_host, port, bracketed = _split_netloc(parts.netloc)
    if not raw_host:
        raise _refuse("has no host")

    if bracketed:
        if "%" in raw_host:
            raise _refuse("an IPv6 zone id (%…) is not allowed")
        try:
            address6 = ipaddress.IPv6Address(raw_host)
        except ValueError:
            raise _refuse(f"[{raw_host}] is not an IPv6 address") from None
        host = f"[{address6.compressed}]"
        _check_address(address6, raw_host, allow_private)
    else:
        host = _ascii_host(raw_host)
        if host.endswith("."):
            host = host[:-1]
        if not host:
            raise _refuse("has no host")
        numeric = _whatwg_ipv4(host)
        if numeric is not None:
            address4 = ipaddress.IPv4Address(numeric)
            if str(address4) != host and not allow_private:
                raise _refuse(
                    f"host {raw_host!r} is an IPv4 address ({address4}) in another spelling "
                    "than dotted decimal"
                )
            _check_address(address4, raw_host, allow_private)
            host = str(address4)
        else:
            _check_name(host, allow_private)

    default = _DEFAULT_PORTS[scheme]
    netloc = host if port is None or port == default else f"{host}:{port}"
    path = parts.path or "/"
    query = f"?{parts.query}" if parts.query else ""
    return f"{scheme}://{netloc}{path}{query}"


def _check_address(address: IPAddress, written: str, allow_private: bool) -> None:
    if allow_private:
        return
    reason = non_public_reason(address)
    if reason is not None:
        raise NonPublicAddress(written, str(address), why=reason)


def _check_name(host: str, allow_private: bool) -> None:
    if len(host) > 253:
        raise _refuse("the host name is longer than 253 characters")
    for label in host.split("."):
        if not _LABEL.match(label):
            raise _refuse(f"host {host!r} is not a valid DNS name")
    if allow_private:
        return
    if host in _BLOCKED_NAMES or host.endswith(_BLOCKED_SUFFIXES):
        raise _refuse(f"host {host!r} names a local or internal service, not a public one")
    if "." not in host:
        raise _refuse(
            f"host {host!r} is a single-label name (resolved through local search domains)"
        )


async def system_lookup(host: str, port: int) -> list[str]:
    """The addresses the operating system's resolver gives for ``host`` (TCP), in its
    order, without duplicates. ``OSError`` (``socket.gaierror``) when there are none."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    addresses: list[str] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        return None


async def resolve_public(
    host: str, port: int, *, allow_private: bool, lookup: Lookup | None = None
) -> list[str]:
    """The addresses ``host`` resolves to, all of them public, or ``NonPublicAddress``
    (an ``InvalidInput``, field ``url``) naming the first that is not: one private address
    among public ones is enough to refuse (a name whose answers mix them is an attack or a
    mistake, and the client may pick any of them). With ``allow_private`` nothing is
    refused. IP literals are checked without a lookup.

    ``lookup`` resolves (default ``system_lookup``); a lookup failure is the ``OSError``
    it raises, an empty answer is ``OSError`` too: both are worth a retry later."""
    literal = _literal(host)
    if literal is not None:
        answers: list[str] = [str(literal)]
    else:
        answers = [str(answer) for answer in await (lookup or system_lookup)(host, port)]
        if not answers:
            raise OSError(f"{host} has no address")
    for answer in answers:
        reason = non_public_reason(answer)
        if reason == "not an IP address":
            raise NonPublicAddress(host, answer, why=reason)
        if reason is not None and not allow_private:
            raise NonPublicAddress(host, answer, why=reason)
    return answers
