"""Signed webhooks to downstream systems: the transport library the outbox sender calls.

Nothing here touches the database. ``signing`` signs and verifies Standard Webhooks
requests; ``schedule`` says when to retry and when to give up
on an endpoint; ``urls`` is the SSRF guard (endpoint URLs, resolved addresses); ``payloads`` is
the documented, versioned JSON body; the transport is added next.
"""

from email_delivery.webhooks import payloads, schedule, signing, urls
from email_delivery.webhooks.errors import (
    InvalidWebhookSignature,
    MissingWebhooksExtra,
    NonPublicAddress,
)

__all__ = [
    "InvalidWebhookSignature",
    "MissingWebhooksExtra",
    "NonPublicAddress",
    "payloads",
    "schedule",
    "signing",
    "urls",
]
