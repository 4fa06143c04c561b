"""The transport against a real local receiver (``receiver.py``): every request it gets is
verified with the ``standardwebhooks`` reference package. Nothing is mocked: real sockets,
real HTTP, real TLS. The receiver listens on 127.0.0.1, a private address, so the tests
that mean to reach it say ``allow_private=True``; the SSRF tests say it does not, and check
that the receiver saw nothing."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import sys
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from email_delivery.errors import InvalidInput
from email_delivery.webhooks import _aiohttp, payloads, schedule, signing
from email_delivery.webhooks.errors import MissingWebhooksExtra, NonPublicAddress
from email_delivery.webhooks.transport import MAX_ERROR_LENGTH, AttemptResult, Transport, post
from tests.integration.webhooks.receiver import Receiver

SECRET = signing.generate_secret()
BODY = b'{"type":"delivery.status_changed","version":1}'


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    running = Receiver(secret=SECRET)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
def token() -> str:
    return uuid.uuid4().hex


def signed(
    body: bytes = BODY, message_id: str = "msg_test", at: datetime | None = None
) -> dict[str, str]:
    return signing.headers(
        SECRET, message_id=message_id, timestamp=at or datetime.now(UTC), body=body
    )


async def send(url: str, *, seconds: float = 5.0, **options: int) -> AttemptResult:
    async with Transport(allow_insecure=True, allow_private=True) as transport:
        return await transport.post(
            url=url, body=BODY, headers=signed(), timeout=seconds, **options
        )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def lookup_for(answers: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    asked: list[str] = []

    async def lookup(host: str, port: int) -> Iterable[str]:
        asked.append(host)
        return answers[host]

    return lookup, asked


# -- outcomes -------------------------------------------------------------------------------


async def test_a_2xx_is_a_success_and_the_receiver_verified_the_signature(
    receiver: Receiver, token: str
) -> None:
    result = await send(receiver.url("ok", token))
    assert result.ok
    assert (result.status, result.retryable, result.gone, result.error) == (200, False, False, None)
    assert result.response_excerpt == "accepted"
    assert 0 < result.latency_ms < 5000
    [request] = receiver.seen(token)
    assert request.verified, request.error
    assert request.body == BODY
    assert request.message_id == "msg_test"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("email-delivery-webhooks/")
    assert "cookie" not in request.headers


async def test_a_500_is_a_retryable_failure(receiver: Receiver, token: str) -> None:
    result = await send(receiver.url("fail", token))
    assert not result.ok
    assert (result.status, result.retryable, result.gone) == (500, True, False)
    assert result.error == "HTTP 500 Internal Server Error"
    assert result.response_excerpt == "boom"
    assert receiver.seen(token)[0].verified


async def test_410_gone_asks_to_stop_and_is_not_retried(receiver: Receiver, token: str) -> None:
    result = await send(receiver.url("gone", token))
    assert (result.status, result.retryable, result.gone) == (410, False, True)
    assert result.error is not None
    assert "410 Gone" in result.error
    assert result.response_excerpt == "this endpoint was removed"


async def test_other_4xx_are_retryable_failures_as_in_svix(receiver: Receiver, token: str) -> None:
    result = await send(receiver.url("not-found", token))
    assert (result.status, result.retryable, result.gone) == (404, True, False)
    assert result.error == "HTTP 404 Not Found"


async def test_a_bad_signature_is_a_401_from_the_receiver_and_retryable(
    receiver: Receiver, token: str
) -> None:
    other = signing.headers(
        signing.generate_secret(), message_id="msg_x", timestamp=datetime.now(UTC), body=BODY
    )
    async with Transport(allow_insecure=True, allow_private=True) as transport:
        result = await transport.post(
            url=receiver.url("ok", token), body=BODY, headers=other, timeout=5
        )
    assert (result.status, result.retryable) == (401, True)
    [request] = receiver.seen(token)
    assert not request.verified


async def test_a_timeout_is_retryable_with_an_error_text(receiver: Receiver, token: str) -> None:
    result = await send(receiver.url("sleep", token, "seconds=1.5"), seconds=0.3)
    assert (result.status, result.retryable, result.gone) == (None, True, False)
    assert result.error == "timed out after 0.3 s"
    assert result.response_excerpt is None
    assert 250 <= result.latency_ms < 1400
    [request] = receiver.seen(token)  # it arrived, signed; only the answer was late
    assert request.verified


async def test_a_slow_answer_within_the_timeout_succeeds(receiver: Receiver, token: str) -> None:
    result = await send(receiver.url("slow", token, "seconds=0.3"), seconds=5)
    assert result.ok
    assert result.response_excerpt == "finally"
    assert result.latency_ms >= 300


async def test_connection_refused_is_retryable() -> None:
    result = await send(f"http://127.0.0.1:{free_port()}/ok/x")
    assert (result.status, result.retryable, result.gone) == (None, True, False)
    assert result.error is not None
    assert result.error.startswith("cannot connect:")
    assert result.response_excerpt is None


async def test_a_name_that_does_not_resolve_is_retryable() -> None:
    async def lookup(host: str, port: int) -> Iterable[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async with Transport(lookup=lookup) as transport:
        result = await transport.post(
            url="https://hooks.example.com/", body=BODY, headers=signed(), timeout=5
        )
    assert (result.status, result.retryable, result.gone) == (None, True, False)
    assert result.error is not None
    assert result.error.startswith("cannot connect:")
    assert "Name or service not known" in result.error


async def test_redirects_are_not_followed(receiver: Receiver, token: str) -> None:
    result = await send(receiver.url("redirect", token))
    assert (result.status, result.retryable, result.gone) == (302, True, False)
    assert result.error == f"HTTP 302 Found: redirect to '/ok/{token}' not followed"
    assert [request.behaviour for request in receiver.seen(token)] == ["redirect"]


async def test_the_error_is_one_line_of_at_most_500_characters(
    receiver: Receiver, token: str
) -> None:
    result = await send(receiver.url("redirect", token, "to=/" + "a" * 1500))
    assert result.status == 302
    assert result.error is not None
    assert len(result.error) == MAX_ERROR_LENGTH == 500
    assert result.error.endswith("…")
    assert "\n" not in result.error


async def test_svix_delivery_control_headers_are_honoured(receiver: Receiver, token: str) -> None:
    disabled = await send(receiver.url("disable", token))
    assert disabled.ok
    assert (disabled.gone, disabled.retryable, disabled.error) == (True, False, None)
    aborted = await send(receiver.url("abort", token))
    assert (aborted.status, aborted.gone, aborted.retryable) == (500, False, False)


# -- the excerpt ----------------------------------------------------------------------------


async def test_the_excerpt_is_capped(receiver: Receiver, token: str) -> None:
    default = await send(receiver.url("big", token))
    assert default.response_excerpt == "x" * 1024
    small = await send(receiver.url("big", token), max_excerpt=100)
    assert small.response_excerpt == "x" * 100
    none = await send(receiver.url("big", token), max_excerpt=0)
    assert none.ok
    assert none.response_excerpt is None


async def test_undecodable_bytes_are_replaced_and_nul_never_reaches_the_excerpt(
    receiver: Receiver, token: str
) -> None:
    result = await send(receiver.url("binary", token))
    assert result.response_excerpt == "\ufffd\ufffd\ufffdcafé \ufffd"
    cut = await send(receiver.url("binary", token), max_excerpt=7)  # cuts "é" in two
    assert cut.response_excerpt == "\ufffd\ufffd\ufffdcaf\ufffd"


async def test_the_declared_charset_decodes_the_excerpt(receiver: Receiver, token: str) -> None:
    assert (await send(receiver.url("latin1", token))).response_excerpt == "café"


# -- retries --------------------------------------------------------------------------------


async def test_a_retried_message_carries_the_same_webhook_id_and_body(
    receiver: Receiver, token: str
) -> None:
    queued = datetime(2025, 3, 4, 10, 15, 4, tzinfo=UTC)
    rendered = payloads.render(
        endpoint_id="ep_1",
        event={"id": 4711, "status": "sent", "attempt": 1, "created_at": queued},
        delivery={
            "delivery_id": "d-1",
            "workflow": "verification-code",
            "status": "sent",
            "attempts": 1,
            "queued_at": queued,
            "sent_at": queued,
        },
    )
    url = receiver.url("flaky", token)
    first_at = datetime.now(UTC) - timedelta(seconds=30)
    async with Transport(allow_insecure=True, allow_private=True) as transport:
        first = await transport.post(
            url=url,
            body=rendered.body,
            headers=signing.headers(
                SECRET, message_id=rendered.message_id, timestamp=first_at, body=rendered.body
            ),
            timeout=5,
        )
        assert first.retryable
        due = schedule.next_attempt_at(
            attempt=1, failed_at=first_at, message_id=rendered.message_id
        )
        assert due is not None
        assert due > first_at
        # The outbox re-renders the same event (or reuses the stored body) and re-signs.
        again = payloads.render(
            endpoint_id="ep_1",
            event={"id": 4711, "status": "sent", "attempt": 1, "created_at": queued},
            delivery={
                "delivery_id": "d-1",
                "workflow": "verification-code",
                "status": "sent",
                "attempts": 1,
                "queued_at": queued,
                "sent_at": queued,
            },
        )
        second = await transport.post(
            url=url,
            body=again.body,
            headers=signing.headers(
                SECRET, message_id=again.message_id, timestamp=due, body=again.body
            ),
            timeout=5,
        )
    assert second.ok
    assert second.response_excerpt == "accepted on retry"
    one, two = receiver.seen(token)
    assert one.verified and two.verified
    assert one.message_id == two.message_id == rendered.message_id
    assert one.body == two.body == rendered.body
    assert one.headers["webhook-timestamp"] != two.headers["webhook-timestamp"]
    assert one.headers["webhook-signature"] != two.headers["webhook-signature"]


# -- SSRF -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "2130706433", "0x7f.1"]
)
async def test_a_private_address_is_refused_before_anything_is_sent(
    receiver: Receiver, token: str, host: str
) -> None:
    async with Transport(allow_insecure=True) as transport:
        with pytest.raises(InvalidInput) as caught:
            await transport.post(
                url=f"http://{host}:{receiver.port}/ok/{token}",
                body=BODY,
                headers=signed(),
                timeout=5,
            )
    assert caught.value.field == "url"
    await asyncio.sleep(0.05)
    assert receiver.seen(token) == []


async def test_a_public_looking_name_resolving_to_loopback_is_refused_at_connect_time(
    receiver: Receiver, token: str
) -> None:
    lookup, asked = lookup_for({"hooks.example.com": ["127.0.0.1"]})
    async with Transport(allow_insecure=True, lookup=lookup) as transport:
        result = await transport.post(
            url=f"http://hooks.example.com:{receiver.port}/ok/{token}",
            body=BODY,
            headers=signed(),
            timeout=5,
        )
    assert asked == ["hooks.example.com"]  # the URL passed; the resolved address did not
    assert (result.status, result.retryable, result.gone) == (None, False, False)
    assert result.error == (
        "refused: hooks.example.com resolves to 127.0.0.1, which is not a public address (loopback)"
    )
    await asyncio.sleep(0.05)
    assert receiver.seen(token) == []


async def test_one_private_answer_among_public_ones_is_enough_to_refuse(
    receiver: Receiver, token: str
) -> None:
    lookup, _ = lookup_for({"mixed.example.com": ["93.184.216.34", "127.0.0.1"]})
    async with Transport(allow_insecure=True, lookup=lookup) as transport:
        result = await transport.post(
            url=f"http://mixed.example.com:{receiver.port}/ok/{token}",
            body=BODY,
            headers=signed(),
            timeout=5,
        )
    assert result.error is not None
    assert "127.0.0.1" in result.error
    assert not result.retryable
    assert receiver.seen(token) == []


async def test_with_allow_private_the_same_name_reaches_the_receiver(
    receiver: Receiver, token: str
) -> None:
    lookup, asked = lookup_for({"hooks.example.com": ["127.0.0.1"]})
    async with Transport(allow_insecure=True, allow_private=True, lookup=lookup) as transport:
        result = await transport.post(
            url=f"http://hooks.example.com:{receiver.port}/ok/{token}",
            body=BODY,
            headers=signed(),
            timeout=5,
        )
    assert result.ok, result.error
    assert asked == ["hooks.example.com"]
    [request] = receiver.seen(token)
    assert request.headers["host"] == f"hooks.example.com:{receiver.port}"


async def test_the_connect_time_check_refuses_a_literal_loopback_address(
    receiver: Receiver, token: str
) -> None:
    """Past the URL check (which would refuse it first), the socket factory still refuses
    to open a socket to 127.0.0.1: the session itself cannot reach a private address."""
    session = _aiohttp.make_session(
        allow_private=False, lookup=None, user_agent="test", limit=10, limit_per_host=10
    )
    async with session:
        with pytest.raises(aiohttp.ClientConnectorError) as caught:
            await session.post(receiver.url("ok", token), data=BODY, headers=signed())
    assert isinstance(caught.value.os_error, _aiohttp.RefusedAddress)
    assert "127.0.0.1 (loopback)" in str(caught.value.os_error)

    async with Transport(allow_insecure=True) as transport:
        result = await transport._attempt(receiver.url("ok", token), BODY, signed(), 5.0, 100)
    assert (result.status, result.retryable, result.gone) == (None, False, False)
    assert result.error == (
        "refused: refused to connect to a non-public address: 127.0.0.1 (loopback)"
    )
    await asyncio.sleep(0.05)
    assert receiver.seen(token) == []


def test_the_socket_factory_checks_every_address_family() -> None:
    factory = _aiohttp.guarded_socket_factory(allow_private=False)
    for family, address in [
        (socket.AF_INET, ("10.0.0.1", 443)),
        (socket.AF_INET, ("169.254.169.254", 80)),
        (socket.AF_INET6, ("::1", 443, 0, 0)),
        (socket.AF_INET6, ("::ffff:127.0.0.1", 443, 0, 0)),
        (socket.AF_INET6, ("fe80::1", 443, 0, 2)),
    ]:
        with pytest.raises(_aiohttp.RefusedAddress):
            factory((family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", address))
    public = factory((socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("8.8.8.8", 443)))
    public.close()
    allowed = _aiohttp.guarded_socket_factory(allow_private=True)
    allowed((socket.AF_INET, socket.SOCK_STREAM, 0, "", ("127.0.0.1", 80))).close()


# -- TLS ------------------------------------------------------------------------------------


def self_signed(directory: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    (directory / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return context


async def test_tls_certificates_are_verified(tmp_path: Path, token: str) -> None:
    tls_receiver = Receiver(secret=SECRET)
    await tls_receiver.start(tls=self_signed(tmp_path))
    try:
        async with Transport(allow_private=True) as transport:
            result = await transport.post(
                url=f"https://127.0.0.1:{tls_receiver.port}/ok/{token}",
                body=BODY,
                headers=signed(),
                timeout=5,
            )
    finally:
        await tls_receiver.stop()
    assert (result.status, result.retryable, result.gone) == (None, True, False)
    assert result.error is not None
    assert result.error.startswith("TLS certificate verification failed")
    assert tls_receiver.received == []


# -- the API --------------------------------------------------------------------------------


async def test_the_module_level_post_is_a_one_off_transport(receiver: Receiver, token: str) -> None:
    result = await post(
        url=receiver.url("ok", token),
        body=BODY,
        headers=signed(),
        timeout=5,
        allow_insecure=True,
        allow_private=True,
    )
    assert result.ok
    with pytest.raises(InvalidInput):
        await post(url=receiver.url("ok", token), body=BODY, headers=signed(), timeout=5)


async def test_one_transport_serves_many_attempts_concurrently(
    receiver: Receiver, token: str
) -> None:
    async with Transport(allow_insecure=True, allow_private=True) as transport:
        results = await asyncio.gather(
            *(
                transport.post(
                    url=receiver.url("ok", token),
                    body=BODY,
                    headers=signed(message_id=f"msg_{n}"),
                    timeout=5,
                )
                for n in range(20)
            )
        )
    assert all(result.ok for result in results)
    assert sorted(r.message_id or "" for r in receiver.seen(token)) == sorted(
        f"msg_{n}" for n in range(20)
    )


async def test_a_given_content_type_is_kept(receiver: Receiver, token: str) -> None:
    async with Transport(allow_insecure=True, allow_private=True) as transport:
        await transport.post(
            url=receiver.url("ok", token),
            body=BODY,
            headers={**signed(), "content-type": "application/webhook+json"},
            timeout=5,
        )
    assert receiver.seen(token)[0].headers["content-type"] == "application/webhook+json"


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"body": "text"}, "body"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": float("inf")}, "timeout"),
        ({"timeout": True}, "timeout"),
        ({"headers": {"x-evil": "a\r\nInjected: 1"}}, "headers.x-evil"),
        ({"headers": {"bad name": "x"}}, "headers"),
        ({"headers": [("a", "b")]}, "headers"),
        ({"max_excerpt": -1}, "max_excerpt"),
        ({"url": "ftp://hooks.example.com/"}, "url"),
    ],
)
async def test_bad_arguments_raise_before_anything_is_sent(
    arguments: dict[str, object], field: str
) -> None:
    call: dict[str, object] = {
        "url": "https://hooks.example.com/",
        "body": BODY,
        "headers": signed(),
        "timeout": 5,
        **arguments,
    }
    async with Transport() as transport:
        with pytest.raises(InvalidInput) as caught:
            await transport.post(**call)  # type: ignore[arg-type]
    assert caught.value.field == field


async def test_post_needs_an_open_transport() -> None:
    transport = Transport()
    with pytest.raises(RuntimeError, match="async with"):
        await transport.post(url="https://hooks.example.com/", body=BODY, headers={}, timeout=1)
    async with transport:
        with pytest.raises(RuntimeError, match="already open"):
            await transport.__aenter__()


def test_without_aiohttp_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aiohttp", None)
    monkeypatch.delitem(sys.modules, "email_delivery.webhooks._aiohttp")
    with pytest.raises(MissingWebhooksExtra) as caught:
        Transport()
    assert "pip install 'email-delivery[webhooks]'" in str(caught.value)
    assert isinstance(caught.value, ImportError)
    # Everything but the transport works without it.
    assert signing.generate_secret().startswith("whsec_")


def test_non_public_address_is_invalid_input_about_the_url() -> None:
    error = NonPublicAddress("hooks.example.com", "10.0.0.1", why="private")
    assert isinstance(error, InvalidInput)
    assert error.field == "url"
