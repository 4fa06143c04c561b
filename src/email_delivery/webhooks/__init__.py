"""Signed webhooks to downstream systems: the transport library the outbox sender calls.

Nothing here touches the database. ``signing`` signs and verifies Standard Webhooks
requests; the other modules are added one job each.
"""

from email_delivery.webhooks import signing
from email_delivery.webhooks.errors import (
    InvalidWebhookSignature,
    MissingWebhooksExtra,
    NonPublicAddress,
)

__all__ = [
    "InvalidWebhookSignature",
    "MissingWebhooksExtra",
    "NonPublicAddress",
    "signing",
]
