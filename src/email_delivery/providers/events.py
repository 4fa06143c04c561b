"""The one normalised form of what happened to an email after a provider accepted it.

Every provider module (``ses``, ``postmark``, ``resend``, ``sendgrid``, ``mailgun``) turns
its webhook body into a list of :class:`ProviderEvent`; nothing downstream needs to know a
provider's vocabulary.

Outcome kinds, in precedence order (lowest first). When several events arrive for one
delivery, in any order, the one of highest precedence is the delivery's outcome: a late
``delivered`` does not hide an earlier ``bounced``, and a complaint outranks everything.

=============  ==========  =================================================================
kind           precedence  meaning
=============  ==========  =================================================================
``deferred``   1           not delivered yet; the provider is still retrying
``delivered``  2           the recipient's server accepted the message
``opened``     3           the recipient opened it (tracking pixel; implies delivered)
``clicked``    4           the recipient followed a tracked link (implies delivered)
``bounced``    5           the recipient's server refused or returned it; ``permanent``
                           says hard (``True``) or soft (``False``), ``None`` when the
                           provider could not tell
``rejected``   6           the provider refused to send it at all (suppression list,
                           invalid address, policy, template rendering, virus)
``complained`` 7           the recipient reported it as spam
=============  ==========  =================================================================

Our own id comes back from the provider because the worker sends it twice: as the header
``X-Email-Delivery-Id`` (:data:`DELIVERY_ID_HEADER`) and as the provider's metadata / tag /
custom variable ``delivery_id`` (:data:`DELIVERY_ID_KEY`). Each provider module documents
where it finds it.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = [
    "DELIVERY_ID_HEADER",
    "DELIVERY_ID_KEY",
    "MAX_REASON_LENGTH",
    "PROVIDERS",
    "OutcomeKind",
    "ProviderEvent",
]

DELIVERY_ID_HEADER = "X-Email-Delivery-Id"
"""The message header the worker sets to the delivery's id."""

DELIVERY_ID_KEY = "delivery_id"
"""The provider metadata / tag / custom-variable name the worker sets to the delivery's id."""

MAX_REASON_LENGTH = 500
"""``ProviderEvent.reason`` is cut to this many characters."""

PROVIDERS = frozenset({"ses", "postmark", "resend", "sendgrid", "mailgun"})
"""The provider slugs a :class:`ProviderEvent` may carry."""


class OutcomeKind(enum.StrEnum):
    """What happened, in precedence order (lowest first); see the module docstring."""

    DEFERRED = "deferred"
    DELIVERED = "delivered"
    OPENED = "opened"
    CLICKED = "clicked"
    BOUNCED = "bounced"
    REJECTED = "rejected"
    COMPLAINED = "complained"

    @property
    def precedence(self) -> int:
        """1 for ``deferred`` up to 7 for ``complained``: keep the highest one seen."""
        return _PRECEDENCE[self]


_PRECEDENCE = {kind: rank for rank, kind in enumerate(OutcomeKind, start=1)}

_RECIPIENT = re.compile(r"^[^@\s]+@[^@\s]+$")


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderEvent:
    """One provider event about one message (and, where the provider says, one recipient).

    ``event_id`` is the idempotency key: the same event delivered twice (providers retry)
    has the same ``event_id``. Each provider module documents where it comes from; where a
    provider has no id for an event it is the SHA-256 (hex) of the event's canonical JSON
    (keys sorted, no whitespace, UTF-8).
    """

    provider: str
    """The provider's slug: ``ses``, ``postmark``, ``resend``, ``sendgrid`` or ``mailgun``."""
    event_id: str
    """The provider's unique id for this event (see the provider module)."""
    kind: OutcomeKind
    occurred_at: datetime
    """When it happened, timezone-aware UTC."""
    provider_message_id: str | None
    """The id the provider's send API returned for the message, in that API's form."""
    delivery_id: str | None
    """Our ``delivery_id``, echoed back by the provider; ``None`` for mail we did not tag."""
    recipient: str | None
    """Trimmed and lower-cased; ``None`` when the provider does not say which recipient."""
    permanent: bool | None
    """Bounces: ``True`` hard, ``False`` soft, ``None`` undetermined; ``None`` otherwise."""
    reason: str | None
    """The provider's reason or diagnostic, at most 500 characters."""
    smtp_code: int | None
    """The remote SMTP reply code (200-599) where the provider gives one."""
    provider_event_type: str
    """The provider's own name for the event (``Bounce``, ``email.bounced``, ``failed``)."""

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise ValueError(f"provider: unknown provider {self.provider!r}")
        if not self.event_id:
            raise ValueError("event_id: may not be empty")
        if not isinstance(self.kind, OutcomeKind):
            raise ValueError("kind: must be an OutcomeKind")
        offset = self.occurred_at.utcoffset()
        if offset is None or offset != timedelta(0):
            raise ValueError("occurred_at: must be timezone-aware UTC")
        if self.recipient is not None and (
            self.recipient != self.recipient.strip().lower()
            or not _RECIPIENT.fullmatch(self.recipient)
        ):
            raise ValueError("recipient: must be a trimmed, lower-case address")
        if self.permanent is not None and self.kind is not OutcomeKind.BOUNCED:
            raise ValueError("permanent: only a bounce is permanent or not")
        if self.reason is not None and not 0 < len(self.reason) <= MAX_REASON_LENGTH:
            raise ValueError(f"reason: 1 to {MAX_REASON_LENGTH} characters")
        if self.smtp_code is not None and not 200 <= self.smtp_code <= 599:
            raise ValueError("smtp_code: an SMTP reply code is 200-599")
        if not self.provider_event_type:
            raise ValueError("provider_event_type: may not be empty")
