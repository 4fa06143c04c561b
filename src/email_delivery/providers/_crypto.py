"""Public-key signature checks (SNS: RSA certificates; SendGrid: ECDSA P-256). They need
``cryptography``, imported here on first use so that the rest of the package, Mailgun's and
Resend's HMAC checks included, works without the ``providers`` extra."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from email_delivery.errors import InvalidInput
from email_delivery.providers.errors import MissingProvidersExtra, SignatureMismatch

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey


def _require(purpose: str) -> None:
    try:
        import cryptography  # noqa: F401
    except ImportError as exc:
        raise MissingProvidersExtra(purpose) from exc


def verify_certificate_signature(
    certificate_pem: bytes,
    signature: bytes,
    data: bytes,
    *,
    digest: Literal["sha1", "sha256"],
    field: str,
) -> None:
    """``signature`` must be the PKCS#1 v1.5 RSA signature of ``data`` by the key of a
    certificate that is valid now; anything else is a ``SignatureMismatch(field)``."""
    _require("Verifying an SNS message signature")
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    try:
        certificate = x509.load_pem_x509_certificate(certificate_pem)
    except ValueError:
        raise SignatureMismatch(field, "the signing certificate is not a PEM certificate") from None
    now = datetime.now(UTC)
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise SignatureMismatch(field, "the signing certificate is not valid now")
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise SignatureMismatch(field, "the signing certificate does not hold an RSA key")
    algorithm = hashes.SHA1() if digest == "sha1" else hashes.SHA256()
    try:
        key.verify(signature, data, padding.PKCS1v15(), algorithm)
    except InvalidSignature:
        raise SignatureMismatch(field, "does not match the message") from None


def load_ecdsa_public_key(public_key: str, field: str = "public_key") -> EllipticCurvePublicKey:
    """A P-256 public key: SendGrid's base64 (DER SubjectPublicKeyInfo) or PEM."""
    _require("Verifying a SendGrid Signed Event Webhook")
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import (
        load_der_public_key,
        load_pem_public_key,
    )

    if not isinstance(public_key, str) or not public_key.strip():
        raise InvalidInput(field, "must be the verification key (base64 or PEM)")
    text = public_key.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = load_pem_public_key(text.encode("ascii"))
        else:
            key = load_der_public_key(base64.b64decode("".join(text.split()), validate=True))
    except (ValueError, binascii.Error, UnicodeEncodeError):
        raise InvalidInput(field, "not a readable public key (base64 DER or PEM)") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise InvalidInput(field, "must be an ECDSA P-256 public key")
    return key


def verify_ecdsa_sha256(
    key: EllipticCurvePublicKey, signature: bytes, data: bytes, *, field: str
) -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise SignatureMismatch(field, "does not match the body") from None
