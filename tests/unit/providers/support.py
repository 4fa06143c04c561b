"""Helpers of the provider webhook tests: fixtures on disk, a real local HTTP server, and
signers that produce what each provider would send."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import urlopen

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

FIXTURES = Path(__file__).parent / "fixtures"
DELIVERY_ID = "01HZX3Q7K9VYB8W2N4M6P5R1TA"


def fixture(provider: str, name: str) -> Any:
    """A fixture, parsed (a fresh copy each call, so tests may change it)."""
    return json.loads((FIXTURES / provider / name).read_text(encoding="utf-8"))


def body_of(value: Any) -> bytes:
    return json.dumps(value).encode("utf-8")


# -- a real HTTP server on 127.0.0.1 ---------------------------------------------------------


@dataclass
class LocalServer:
    """Serves ``routes`` (path -> body) over plain HTTP on 127.0.0.1 and records each GET
    (path with query) in ``requests``."""

    port: int
    routes: dict[str, bytes] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def get(self, url: str) -> bytes:
        """Fetch ``url``'s path and query from this server (what the injectable fetchers
        do with the ``https://sns…`` URLs the parser hands them)."""
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        with urlopen(f"http://127.0.0.1:{self.port}{target}", timeout=5) as response:
            data: bytes = response.read()
        return data


@contextmanager
def local_server(tls: ssl.SSLContext | None = None) -> Iterator[LocalServer]:
    """A real HTTP server on 127.0.0.1 (HTTPS with ``tls``), stopped on exit."""
    state: dict[str, LocalServer] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server = state["server"]
            server.requests.append(self.path)
            body = server.routes.get(urlsplit(self.path).path)
            if body is None:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    state["server"] = LocalServer(port=httpd.server_address[1])
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    try:
        yield state["server"]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


# -- SNS -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SigningCertificate:
    key: rsa.RSAPrivateKey
    pem: bytes


def make_certificate(*, days: int = 30, not_before_days: int = -1) -> SigningCertificate:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com (test)")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + timedelta(days=not_before_days))
        .not_valid_after(now + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return SigningCertificate(key=key, pem=certificate.public_bytes(serialization.Encoding.PEM))


_SIGNED = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
_SIGNED["UnsubscribeConfirmation"] = _SIGNED["SubscriptionConfirmation"]


def sns_sign(envelope: dict[str, Any], key: rsa.RSAPrivateKey) -> dict[str, Any]:
    """Set ``Signature`` as SNS does (canonical string, SHA1 or SHA256 with RSA)."""
    canonical = "".join(
        f"{name}\n{envelope[name]}\n"
        for name in _SIGNED[envelope["Type"]]
        if envelope.get(name) is not None
    )
    algorithm = hashes.SHA1() if envelope["SignatureVersion"] == "1" else hashes.SHA256()
    signature = key.sign(canonical.encode("utf-8"), padding.PKCS1v15(), algorithm)
    envelope["Signature"] = base64.b64encode(signature).decode("ascii")
    return envelope


def sns_notification(record: Any, key: rsa.RSAPrivateKey, **changes: Any) -> dict[str, Any]:
    """The SNS envelope fixture around an SES record (a dict, or a raw Message string),
    signed with ``key`` after applying ``changes``."""
    envelope = fixture("ses", "sns-notification.json")
    envelope["Message"] = record if isinstance(record, str) else json.dumps(record)
    envelope.update(changes)
    return sns_sign(envelope, key)


def sns_headers(envelope: dict[str, Any]) -> dict[str, str]:
    return {
        "x-amz-sns-message-type": envelope["Type"],
        "x-amz-sns-message-id": envelope["MessageId"],
        "x-amz-sns-topic-arn": envelope["TopicArn"],
        "Content-Type": "text/plain; charset=UTF-8",
    }


# -- SendGrid --------------------------------------------------------------------------------


def sendgrid_keys() -> tuple[ec.EllipticCurvePrivateKey, str]:
    """A P-256 key pair; the public key as SendGrid shows it (base64 DER)."""
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, base64.b64encode(der).decode("ascii")


def sendgrid_headers(
    body: bytes, key: ec.EllipticCurvePrivateKey, *, timestamp: int | None = None
) -> dict[str, str]:
    stamp = str(timestamp if timestamp is not None else int(datetime.now(UTC).timestamp()))
    signature = key.sign(stamp.encode("ascii") + body, ec.ECDSA(hashes.SHA256()))
    return {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode("ascii"),
        "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
        "Content-Type": "application/json",
    }


# -- Mailgun ---------------------------------------------------------------------------------


def mailgun_sign(
    payload: dict[str, Any], signing_key: str, *, timestamp: int | None = None, token: str = ""
) -> dict[str, Any]:
    stamp = str(timestamp if timestamp is not None else int(datetime.now(UTC).timestamp()))
    token = token or hashlib.sha256(json.dumps(payload.get("event-data")).encode()).hexdigest()[:50]
    payload["signature"] = {
        "timestamp": stamp,
        "token": token,
        "signature": hmac.new(
            signing_key.encode(), (stamp + token).encode(), hashlib.sha256
        ).hexdigest(),
    }
    return payload
