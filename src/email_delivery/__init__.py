"""email-delivery: the ``email`` schema, the source of truth for transactional email delivery."""

from email_delivery.models import Delivery, DeliveryEvent, DeliveryStatus

__all__ = ["Delivery", "DeliveryEvent", "DeliveryStatus"]
