"""email-delivery: the ``email`` schema, the source of truth for transactional email delivery."""

from email_delivery.engine import make_engine
from email_delivery.models import Delivery, DeliveryEvent, DeliveryStatus
from email_delivery.tracker import (
    Claim,
    DeliveryConflict,
    DeliveryNotFound,
    DeliveryTracker,
    EnqueueResult,
    NewDelivery,
    TransitionResult,
)
from email_delivery.validation import DeliveryInputError, SecretInInput

__all__ = [
    "Claim",
    "Delivery",
    "DeliveryConflict",
    "DeliveryEvent",
    "DeliveryInputError",
    "DeliveryNotFound",
    "DeliveryStatus",
    "DeliveryTracker",
    "EnqueueResult",
    "NewDelivery",
    "SecretInInput",
    "TransitionResult",
    "make_engine",
]
