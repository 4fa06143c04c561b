"""Signed webhooks to downstream systems: the transport library the outbox sender calls.

Nothing here touches the database. One module per job:

* ``signing``: Standard Webhooks signatures (``webhook-id``, ``webhook-timestamp``,
  ``webhook-signature``), ``generate_secret``, ``sign``, ``headers``, ``verify``;
* ``schedule``: Svix's retry schedule with a deterministic jitter (``next_attempt_at``) and
  the 5-day failure budget of an endpoint (``should_disable``);
* ``urls``: the SSRF guard: ``check_endpoint_url`` at registration, ``resolve_public`` at
  send time;
* ``payloads``: the versioned JSON body (``render``, ``PAYLOAD_SCHEMA``) and the stable
  message id;
* ``transport``: one HTTP attempt (``Transport``, ``post``, ``AttemptResult``), over
  aiohttp (the ``webhooks`` extra; imported only when a ``Transport`` is made).

One attempt of the outbox sender, end to end::

    rendered = payloads.render(endpoint_id=endpoint.id, event=event_row,
                               delivery=delivery_row, options=endpoint.options)
    async with transport.Transport() as sender:         # once per sender process
        result = await sender.post(
            url=endpoint.url, body=rendered.body, timeout=15,
            headers=signing.headers(endpoint.secret, message_id=rendered.message_id,
                                    timestamp=datetime.now(UTC), body=rendered.body))
    if result.ok: ...                                    # delivered
    elif result.gone: ...                                # disable the endpoint
    elif result.retryable:
        due = schedule.next_attempt_at(attempt=n, failed_at=now,
                                       message_id=rendered.message_id)  # None: give up
    else: ...                                            # failed for good

``docs/webhooks.md`` describes the whole.
"""

from email_delivery.webhooks import payloads, schedule, signing, transport, urls
from email_delivery.webhooks.errors import (
    InvalidWebhookSignature,
    MissingWebhooksExtra,
    NonPublicAddress,
)
from email_delivery.webhooks.transport import AttemptResult, Transport

__all__ = [
    "AttemptResult",
    "InvalidWebhookSignature",
    "MissingWebhooksExtra",
    "NonPublicAddress",
    "Transport",
    "payloads",
    "schedule",
    "signing",
    "transport",
    "urls",
]
