"""The SSRF guard: which endpoint URLs are accepted (normalised) or refused, and the
resolve-time check through an injected resolver (this machine has no DNS)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

import pytest

from email_delivery.errors import InvalidInput
from email_delivery.webhooks.errors import NonPublicAddress
from email_delivery.webhooks.urls import (
    MAX_URL_LENGTH,
    check_endpoint_url,
    non_public_reason,
    resolve_public,
)


def refused(url: str, **flags: bool) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        check_endpoint_url(url, **flags)
    assert caught.value.field == "url"
    return caught.value


@pytest.mark.parametrize(
    ("url", "normalised"),
    [
        ("https://hooks.example.com/email", "https://hooks.example.com/email"),
        ("HTTPS://Hooks.Example.COM", "https://hooks.example.com/"),
        ("https://hooks.example.com:443/x?a=1&b=2", "https://hooks.example.com/x?a=1&b=2"),
        ("https://hooks.example.com:8443/x", "https://hooks.example.com:8443/x"),
        ("https://hooks.example.com./x", "https://hooks.example.com/x"),
        ("https://93.184.216.34/hook", "https://93.184.216.34/hook"),
        (
            "https://[2606:2800:220:1:248:1893:25c8:1946]:9000/",
            "https://[2606:2800:220:1:248:1893:25c8:1946]:9000/",
        ),
        (
            "https://[2606:2800:0220:0001:0248:1893:25C8:1946]/",
            "https://[2606:2800:220:1:248:1893:25c8:1946]/",
        ),
        ("https://bücher.example/hook", "https://xn--bcher-kva.example/hook"),
        ("https://my_host.example.com/", "https://my_host.example.com/"),
        ("https://hooks.example.com:1/", "https://hooks.example.com:1/"),
        ("https://hooks.example.com:65535/", "https://hooks.example.com:65535/"),
    ],
)
def test_public_https_urls_are_accepted_and_normalised(url: str, normalised: str) -> None:
    assert check_endpoint_url(url) == normalised
    assert check_endpoint_url(normalised) == normalised  # idempotent


def test_http_only_with_allow_insecure() -> None:
    assert "https" in str(refused("http://hooks.example.com/"))
    assert "allow_insecure" in str(refused("http://hooks.example.com/"))
    assert check_endpoint_url("http://hooks.example.com:80/", allow_insecure=True) == (
        "http://hooks.example.com/"
    )
    assert check_endpoint_url("https://hooks.example.com/", allow_insecure=True)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hooks.example.com/",
        "file:///etc/passwd",
        "gopher://hooks.example.com/",
        "//hooks.example.com/",
        "hooks.example.com",
        "javascript:alert(1)",
        "ws://hooks.example.com/",
    ],
)
def test_other_schemes_are_refused(url: str) -> None:
    refused(url)
    refused(url, allow_insecure=True, allow_private=True)


@pytest.mark.parametrize(
    "url",
    [
        "https://user:pass@hooks.example.com/",
        "https://user@hooks.example.com/",
        "https://@hooks.example.com/",
        "https://hooks.example.com@169.254.169.254/",
    ],
)
def test_user_info_is_refused(url: str) -> None:
    assert "user info" in str(refused(url, allow_private=True))


@pytest.mark.parametrize("url", ["https://hooks.example.com/#x", "https://hooks.example.com/#"])
def test_fragments_are_refused(url: str) -> None:
    assert "fragment" in str(refused(url))


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/a b",
        "https://hooks.example.com/\t",
        "https://hooks.example.com/\r\nHost: evil",
        "https://hooks.example.com\\@127.0.0.1/",
        "https://hooks.example.com/\x00",
        "https://hooks.example.com/\u3000",
        " https://hooks.example.com/",
    ],
)
def test_whitespace_control_characters_and_backslashes_are_refused(url: str) -> None:
    refused(url, allow_private=True)


@pytest.mark.parametrize(
    "url",
    [
        "https:///path",
        "https://:443/",
        "https://hooks.example.com:0/",
        "https://hooks.example.com:65536/",
        "https://hooks.example.com:/",
        "https://hooks.example.com:+80/",
        "https://hooks.example.com:http/",
        "https://[::1/",
        "https://[not-ipv6]/",
        "https://[fe80::1%25eth0]/",
        "https://hooks..example.com/",
        "https://-hooks.example.com/",
        "https://hooks.example.com-/",
        "https://hooks%2eexample.com/",
        "https://" + "a" * 64 + ".example.com/",
        "https://" + ".".join(["abcdefghi"] * 26) + ".com/",
        "https://example.123/",
        "https://1.2.3.4.5/",
        "https://0x7g.1/",
        "https://256.1.1.1/",
        "https://1.2.3.256/",
        "https://4294967296/",
    ],
)
def test_malformed_hosts_and_ports_are_refused_even_with_allow_private(url: str) -> None:
    refused(url, allow_private=True, allow_insecure=True)


def test_overlong_urls_are_refused() -> None:
    url = "https://hooks.example.com/" + "a" * MAX_URL_LENGTH
    assert str(MAX_URL_LENGTH) in str(refused(url))


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://127.0.0.1/", "loopback"),
        ("https://127.255.255.254:8080/", "loopback"),
        ("https://10.1.2.3/", "private"),
        ("https://172.16.0.1/", "private"),
        ("https://172.31.255.255/", "private"),
        ("https://192.168.1.1/", "private"),
        ("https://169.254.169.254/latest/meta-data/", "link-local"),
        ("https://100.64.0.1/", "CGNAT"),
        ("https://100.127.255.255/", "CGNAT"),
        ("https://0.0.0.0/", "this network"),
        ("https://224.0.0.1/", "multicast"),
        ("https://239.255.255.250/", "multicast"),
        ("https://240.0.0.1/", "reserved"),
        ("https://255.255.255.255/", "broadcast"),
        ("https://192.0.2.10/", "documentation"),
        ("https://198.18.0.1/", "benchmarking"),
        ("https://[::1]/", "loopback"),
        ("https://[::]/", "unspecified"),
        ("https://[fc00::1]/", "unique local"),
        ("https://[fd12:3456:789a::1]/", "unique local"),
        ("https://[fe80::1]/", "link-local"),
        ("https://[fec0::1]/", "site-local"),
        ("https://[ff02::1]/", "multicast"),
        ("https://[2001:db8::1]/", "documentation"),
        ("https://[::ffff:127.0.0.1]/", "loopback"),
        ("https://[::ffff:7f00:1]/", "loopback"),
        ("https://[::ffff:169.254.169.254]/", "link-local"),
        ("https://[::ffff:10.0.0.1]/", "private"),
        ("https://[64:ff9b::7f00:1]/", "embeds 127.0.0.1"),
        ("https://[64:ff9b::a9fe:a9fe]/", "embeds 169.254.169.254"),
        ("https://[2002:7f00:1::]/", "embeds 127.0.0.1"),
        ("https://[2002:a00:1::1]/", "embeds 10.0.0.1"),
        ("https://[::127.0.0.1]/", "IPv4-compatible"),
        ("https://[fd00:ec2::254]/", "unique local"),  # AWS IMDS over IPv6
    ],
)
def test_non_public_ip_literals_are_refused_unless_allow_private(url: str, reason: str) -> None:
    error = refused(url)
    assert isinstance(error, NonPublicAddress)
    assert reason in str(error)
    assert "not a public address" in str(error)
    assert check_endpoint_url(url, allow_private=True).startswith("https://")


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("http://2130706433/", "127.0.0.1"),
        ("http://0x7f.1/", "127.0.0.1"),
        ("http://0x7F000001/", "127.0.0.1"),
        ("http://0177.0.0.1/", "127.0.0.1"),
        ("http://017700000001/", "127.0.0.1"),
        ("http://127.1/", "127.0.0.1"),
        ("http://127.0.1/", "127.0.0.1"),
        ("http://127.000.000.001/", "127.0.0.1"),
        ("http://2852039166/", "169.254.169.254"),
        ("http://0xa9.0xfe.0xa9.0xfe/", "169.254.169.254"),
        ("http://0xa9fea9fe/", "169.254.169.254"),
        ("http://1572395042/", "93.184.216.34"),  # public, but still a disguise
        ("http://\uff11\uff12\uff17.0.0.1/", "127.0.0.1"),  # full-width digits (IDNA maps them)
        ("http://127。0。0。1/", "127.0.0.1"),  # ideographic full stops
    ],
)
def test_other_ipv4_spellings_are_refused_unless_allow_private(url: str, address: str) -> None:
    error = refused(url, allow_insecure=True)
    assert address in str(error)
    assert check_endpoint_url(url, allow_insecure=True, allow_private=True) == f"http://{address}/"


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "LOCALHOST",
        "localhost.",
        "api.localhost",
        "metadata.google.internal",
        "metadata.google.internal.",
        "instance-data.ec2.internal",
        "ip-10-0-0-1.eu-west-1.compute.internal",
        "metadata",
        "instance-data",
        "printer.local",
        "nas.home.arpa",
        "db.localdomain",
        "redis",
        "\uff2c\uff2f\uff23\uff21\uff2c\uff28\uff2f\uff33\uff34",  # full-width LOCALHOST
        "ⓛocalhost",
    ],
)
def test_local_and_internal_names_are_refused_unless_allow_private(host: str) -> None:
    error = refused(f"https://{host}/hook")
    assert not isinstance(error, NonPublicAddress)
    assert check_endpoint_url(f"https://{host}/hook", allow_private=True)


def test_allow_private_accepts_development_urls() -> None:
    assert (
        check_endpoint_url("http://127.0.0.1:8080/hook", allow_insecure=True, allow_private=True)
        == "http://127.0.0.1:8080/hook"
    )
    assert check_endpoint_url("http://localhost:3000", allow_insecure=True, allow_private=True) == (
        "http://localhost:3000/"
    )


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("8.8.8.8", None),
        ("1.1.1.1", None),
        ("2606:4700:4700::1111", None),
        ("::ffff:8.8.8.8", None),
        ("64:ff9b::808:808", None),
        ("100.63.255.255", None),
        ("100.128.0.0", None),
        ("172.15.255.255", None),
        ("172.32.0.0", None),
        ("100.64.0.0", "shared address space (CGNAT)"),
        ("fe80::1%eth0", "link-local"),
        ("64:ff9b:1::1", "local-use NAT64"),
        ("hooks.example.com", "not an IP address"),
    ],
)
def test_non_public_reason(address: str, reason: str | None) -> None:
    assert non_public_reason(address) == reason


def test_every_address_python_calls_non_global_is_non_public_here_too() -> None:
    for network in ("192.0.0.0/29", "198.51.100.0/24", "203.0.113.0/24", "::/128", "2001:10::/28"):
        first = ipaddress.ip_network(network).network_address
        assert non_public_reason(first) is not None, network


# -- resolve_public ----------------------------------------------------------------------


def resolver(answers: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    asked: list[tuple[str, int]] = []

    async def lookup(host: str, port: int) -> Iterable[str]:
        asked.append((host, port))
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return answers[host]

    return lookup, asked


async def test_a_name_with_only_public_addresses_resolves() -> None:
    lookup, asked = resolver({"hooks.example.com": ["93.184.216.34", "2606:2800:220:1::1"]})
    addresses = await resolve_public("hooks.example.com", 443, allow_private=False, lookup=lookup)
    assert addresses == ["93.184.216.34", "2606:2800:220:1::1"]
    assert asked == [("hooks.example.com", 443)]


@pytest.mark.parametrize(
    "answers",
    [
        ["127.0.0.1"],
        ["93.184.216.34", "10.0.0.7"],  # one bad answer among good ones
        ["169.254.169.254"],
        ["::ffff:127.0.0.1"],
        ["fd00::1", "2606:2800:220:1::1"],
    ],
)
async def test_a_public_looking_name_pointing_at_a_private_address_is_refused(
    answers: list[str],
) -> None:
    lookup, _ = resolver({"innocent.example.com": answers})
    with pytest.raises(NonPublicAddress) as caught:
        await resolve_public("innocent.example.com", 443, allow_private=False, lookup=lookup)
    assert caught.value.field == "url"
    assert caught.value.host == "innocent.example.com"
    assert caught.value.address in answers
    assert "innocent.example.com resolves to" in str(caught.value)
    assert (
        await resolve_public("innocent.example.com", 443, allow_private=True, lookup=lookup)
        == answers
    )


async def test_ip_literals_are_checked_without_a_lookup() -> None:
    lookup, asked = resolver({})
    assert await resolve_public("93.184.216.34", 443, allow_private=False, lookup=lookup) == [
        "93.184.216.34"
    ]
    assert await resolve_public("[2606:4700::1]", 443, allow_private=False, lookup=lookup) == [
        "2606:4700::1"
    ]
    with pytest.raises(NonPublicAddress):
        await resolve_public("127.0.0.1", 443, allow_private=False, lookup=lookup)
    assert asked == []


async def test_a_lookup_failure_or_an_empty_answer_is_an_oserror() -> None:
    lookup, _ = resolver({"empty.example.com": []})
    with pytest.raises(socket.gaierror):
        await resolve_public("missing.example.com", 443, allow_private=False, lookup=lookup)
    with pytest.raises(OSError, match="has no address"):
        await resolve_public("empty.example.com", 443, allow_private=False, lookup=lookup)


async def test_an_answer_that_is_not_an_address_is_refused_even_with_allow_private() -> None:
    lookup, _ = resolver({"odd.example.com": ["not-an-address"]})
    with pytest.raises(NonPublicAddress, match="not an IP address"):
        await resolve_public("odd.example.com", 443, allow_private=True, lookup=lookup)


async def test_the_system_resolver_answers_for_localhost() -> None:
    """The default lookup is the operating system's (``/etc/hosts`` knows localhost)."""
    with pytest.raises(NonPublicAddress, match="loopback"):
        await resolve_public("localhost", 443, allow_private=False)
    assert set(await resolve_public("localhost", 443, allow_private=True)) <= {"127.0.0.1", "::1"}
