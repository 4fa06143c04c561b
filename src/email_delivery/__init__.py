"""email-delivery: the ``email`` schema, the source of truth for transactional email delivery."""

from email_delivery.engine import make_engine
from email_delivery.errors import (
    AttemptsDecreased,
    DatabaseUnavailable,
    DatabaseUrlError,
    DeliveryConflict,
    DeliveryNotFound,
    EmailDeliveryError,
    IllegalTransition,
    InvalidInput,
    NotMigrated,
    NotYet,
    OwnerOnly,
    PermissionDenied,
    ProtectedColumn,
    SecretInInput,
    StatementTimeout,
)
from email_delivery.models import Delivery, DeliveryEvent, DeliveryStatus
from email_delivery.tracker import (
    Claim,
    DeliveryTracker,
    EnqueueResult,
    NewDelivery,
    TransitionResult,
)

__all__ = [
    "AttemptsDecreased",
    "Claim",
    "DatabaseUnavailable",
    "DatabaseUrlError",
    "Delivery",
    "DeliveryConflict",
    "DeliveryEvent",
    "DeliveryNotFound",
    "DeliveryStatus",
    "DeliveryTracker",
    "EmailDeliveryError",
    "EnqueueResult",
    "IllegalTransition",
    "InvalidInput",
    "NewDelivery",
    "NotMigrated",
    "NotYet",
    "OwnerOnly",
    "PermissionDenied",
    "ProtectedColumn",
    "SecretInInput",
    "StatementTimeout",
    "TransitionResult",
    "make_engine",
]
