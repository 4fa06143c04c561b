"""Signed webhooks to downstream systems: the transport library the outbox sender calls.

Nothing here touches the database. ``signing`` signs and verifies Standard Webhooks
requests; ``schedule`` says when to retry and when to give up
on an endpoint; ``urls`` is the SSRF guard (endpoint URLs, resolved addresses); the
other modules are added one job each.
"""

from email_delivery.webhooks import schedule, signing, urls
from email_delivery.webhooks.errors import (
    InvalidWebhookSignature,
    MissingWebhooksExtra,
    NonPublicAddress,
)

__all__ = [
    "InvalidWebhookSignature",
    "MissingWebhooksExtra",
    "NonPublicAddress",
    "schedule",
    "signing",
    "urls",
]
