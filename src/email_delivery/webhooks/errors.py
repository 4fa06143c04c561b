"""What the webhook transport library raises. Each is an ``email_delivery.errors``
exception; bad input names its field (``url``, ``secret``, ``headers.webhook-signature``)."""

from __future__ import annotations

from email_delivery.errors import EmailDeliveryError, InvalidInput

__all__ = [
    "EndpointNotFound",
    "InvalidWebhookSignature",
    "MissingWebhooksExtra",
    "NonPublicAddress",
]


class InvalidWebhookSignature(InvalidInput):
    """A received webhook is not proven to come from the holder of the secret: a
    ``webhook-*`` header is missing or malformed, its timestamp is outside the tolerance, or
    no ``v1`` signature matches the body. ``field`` names the header
    (``headers.webhook-timestamp``). Answer it with HTTP 401."""


class NonPublicAddress(InvalidInput):
    """An endpoint's host is, or resolves to, an address that is not publicly routable
    (loopback, private, link-local, CGNAT, metadata service…): refused against SSRF.
    ``field`` is ``url``; ``address`` is the refused address."""

    def __init__(self, host: str, address: str, *, why: str = "") -> None:
        shown = host if host == address else f"{host} resolves to {address}"
        super().__init__(
            "url",
            f"{shown}, which is not a public address{f' ({why})' if why else ''}",
            hint="webhook endpoints must be reachable on the public internet; "
            "allow_private=True is for development only",
        )
        self.host = host
        self.address = address


class MissingWebhooksExtra(EmailDeliveryError, ImportError):
    """Sending webhooks needs ``aiohttp``, which this install lacks."""

    hint = "pip install 'email-delivery[webhooks]'"

    def __init__(self) -> None:
        super().__init__(
            "sending webhooks needs the 'aiohttp' package: install the 'webhooks' extra "
            "(pip install 'email-delivery[webhooks]')"
        )


class EndpointNotFound(EmailDeliveryError, LookupError):
    """No webhook endpoint has this id."""

    hint = "email-delivery webhooks list"

    def __init__(self, endpoint_id: int) -> None:
        super().__init__(f"no webhook endpoint {endpoint_id}")
        self.endpoint_id = endpoint_id
