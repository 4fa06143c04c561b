"""What a webhook parser raises. Nothing is ever returned half-parsed: a body either parses
whole into events or raises one of these, naming the field (``body[2].event``,
``body.Message.bounce.bouncedRecipients[0].emailAddress``, ``headers.svix-signature``).

Answer ``InvalidWebhook`` (and so ``SignatureMismatch``) with HTTP 400 (401/403 for a
signature if you prefer): the provider retries, and a permanently bad body ends up in its
failed-deliveries log. A bad *argument* (an unreadable public key, an empty secret) is an
``InvalidInput`` that is not an ``InvalidWebhook``: a configuration error, not the caller's.
"""

from __future__ import annotations

from email_delivery.errors import EmailDeliveryError, InvalidInput

__all__ = ["InvalidWebhook", "MissingProvidersExtra", "SignatureMismatch"]


class InvalidWebhook(InvalidInput):
    """The webhook body or its headers are not what the provider sends: not JSON, the wrong
    shape, a required field missing, an event type this parser does not know."""


class SignatureMismatch(InvalidWebhook):
    """The request is not proven to come from the provider: a signature (or basic-auth
    credential) is missing, malformed or wrong, its timestamp is outside the tolerance, or
    the signing certificate is not the provider's."""


class MissingProvidersExtra(EmailDeliveryError, ImportError):
    """A signature check needs the ``cryptography`` package, which this install lacks."""

    hint = "pip install 'email-delivery[providers]'"

    def __init__(self, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the 'cryptography' package: install the 'providers' extra "
            f"(pip install 'email-delivery[providers]')"
        )
