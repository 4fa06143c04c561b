"""Email provider webhooks, parsed into one normalised form with their signatures checked.

Each module turns one webhook request of its provider into ``list[ProviderEvent]``::

    from email_delivery.providers import mailgun, postmark, resend, sendgrid, ses

    events = sendgrid.parse(request_body, request_headers, public_key=SENDGRID_KEY)
    events = mailgun.parse(request_body, request_headers, signing_key=MAILGUN_KEY)
    events = resend.parse(request_body, request_headers, secret=RESEND_SECRET)
    events = postmark.parse(request_body, request_headers, basic_auth=(USER, PASSWORD))
    result = ses.parse(request_body, request_headers, topic_arns={TOPIC_ARN})
    if isinstance(result, ses.SubscriptionConfirmation):
        ses.confirm_subscription(result)

``request_body`` is the raw body as received (bytes: signatures are over those exact bytes)
and ``request_headers`` any mapping of header names (case does not matter) to values.

* Every bad request raises ``InvalidWebhook`` (an ``email_delivery.errors.InvalidInput``,
  ``.field`` naming the culprit, e.g. ``body[2].event`` or ``headers.svix-signature``);
  ``SignatureMismatch`` (an ``InvalidWebhook``) when authenticity is not proven. Nothing is
  returned half-parsed.
* Events a provider reports but that say nothing about the outcome (accepted, processed,
  sent, unsubscribed…) are left out; a request may yield ``[]``.
* ``event_id`` is the idempotency key: a retried webhook yields the same ids.
* Signatures: SNS (RSA, certificate from AWS) and SendGrid (ECDSA) need the ``providers``
  extra (``cryptography``); Mailgun and Resend (HMAC) need nothing more; Postmark does not
  sign (basic auth). Signed timestamps must be within 5 minutes of now (``tolerance=``).

Each provider module's docstring holds its mapping table; ``events`` documents the kinds and
their precedence.
"""

from email_delivery.providers import mailgun, postmark, resend, sendgrid, ses
from email_delivery.providers.errors import (
    InvalidWebhook,
    MissingProvidersExtra,
    SignatureMismatch,
)
from email_delivery.providers.events import (
    DELIVERY_ID_HEADER,
    DELIVERY_ID_KEY,
    MAX_REASON_LENGTH,
    PROVIDERS,
    OutcomeKind,
    ProviderEvent,
)

__all__ = [
    "DELIVERY_ID_HEADER",
    "DELIVERY_ID_KEY",
    "MAX_REASON_LENGTH",
    "PROVIDERS",
    "InvalidWebhook",
    "MissingProvidersExtra",
    "OutcomeKind",
    "ProviderEvent",
    "SignatureMismatch",
    "mailgun",
    "postmark",
    "resend",
    "sendgrid",
    "ses",
]
