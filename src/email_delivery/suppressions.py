"""The suppression list (``email.suppressions``, revision 0012): addresses no mail goes to.

- **Fed by outcomes.** A permanent bounce or a complaint recorded by ``record_outcome`` puts
  the recipient on the list (reason ``hard_bounce`` / ``complaint``, the source delivery,
  the provider's reason), for the bouncing workflow's policy's ``suppress_for`` (NULL: until
  removed). An existing entry keeps the strongest reason (manual > complaint > hard_bounce)
  and the later expiry; an expired one starts afresh.
- **Checked at enqueue.** A new delivery to a suppressed address ends at once in the
  terminal status ``suppressed``; its ``last_error_code`` says why (``SUPPRESSED_HARD_BOUNCE``,
  ``SUPPRESSED_COMPLAINT``, ``SUPPRESSED_MANUAL``) and its audit event carries the entry.
  A workflow whose policy lists the reason in ``send_despite_suppression`` still sends (a
  password reset to an address that once hard-bounced: a suppressed reset locks the user
  out). ``suppressed`` is final, like ``sent``; enqueue a new delivery id once cleared.
- **Clears itself.** A hard-bounce entry is deleted when a later delivery to the address is
  delivered (the mailbox works again); complaints and manual entries stay until removed.
- **Changed by the owner only** (``email-delivery suppress add|remove``, or the functions
  here with the owner's engine); the worker and readers may read it (``check``, ``entries``).

Addresses are normalised as recipients are (trimmed, lower-cased).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from email_delivery import validation as v
from email_delivery.errors import InvalidInput, translate_errors
from email_delivery.models import SUPPRESSION_REASONS
from email_delivery.urls import location

__all__ = ["SUPPRESSION_REASONS", "Suppression", "add", "check", "entries", "remove"]

_COLUMNS = (
    "address, reason, source_delivery_id, provider, detail, created_at, expires_at, created_by"
)
_SQL = {
    "add": text(
        "INSERT INTO email.suppressions AS s (address, reason, detail, expires_at) "
        "VALUES (:address, :reason, :detail, now() + CAST(:expires_in AS interval)) "
        "ON CONFLICT (address) DO UPDATE SET reason = EXCLUDED.reason, "
        "detail = EXCLUDED.detail, expires_at = EXCLUDED.expires_at, created_at = now(), "
        "created_by = SESSION_USER, source_delivery_id = NULL, provider = NULL "
        f"RETURNING {_COLUMNS}"
    ),
    "remove": text(f"DELETE FROM email.suppressions WHERE address = :address RETURNING {_COLUMNS}"),
    "entries": text(
        f"SELECT {_COLUMNS} FROM email.suppressions "
        "WHERE CAST(:include_expired AS boolean) OR expires_at IS NULL OR expires_at > now() "
        "ORDER BY created_at DESC, address LIMIT :limit"
    ),
    "check": text(
        f"SELECT {_COLUMNS} FROM email.suppressions "
        "WHERE address = :address AND (expires_at IS NULL OR expires_at > now())"
    ),
}


@dataclass(frozen=True, kw_only=True)
class Suppression:
    address: str
    reason: str
    source_delivery_id: str | None
    provider: str | None
    detail: str | None
    created_at: datetime
    expires_at: datetime | None
    created_by: str

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


async def _run(engine: AsyncEngine, name: str, params: dict[str, Any]) -> list[Suppression]:
    async with translate_errors(database=location(engine.url)), engine.connect() as conn:
        rows = (await conn.execute(_SQL[name], params)).all()
        await conn.commit()
    return [Suppression(**row._asdict()) for row in rows]


async def add(
    engine: AsyncEngine,
    address: str,
    *,
    reason: str = "manual",
    expires_in: timedelta | None = None,
    detail: str | None = None,
) -> Suppression:
    """Put ``address`` on the list (the owner only); an existing entry is replaced."""
    address = v.normalize_recipient(address, "address")
    if reason not in SUPPRESSION_REASONS:
        raise InvalidInput("reason", f"one of {', '.join(SUPPRESSION_REASONS)}")
    if expires_in is not None:
        v.check_positive_interval(expires_in, "expires_in")
    if detail is not None:
        detail = v.check_reason(detail, "detail")
    params = {"address": address, "reason": reason, "detail": detail, "expires_in": expires_in}
    (entry,) = await _run(engine, "add", params)
    return entry


async def remove(engine: AsyncEngine, address: str) -> Suppression | None:
    """Take ``address`` off the list (the owner only); the removed entry, if there was one."""
    rows = await _run(engine, "remove", {"address": v.normalize_recipient(address, "address")})
    return rows[0] if rows else None


async def check(engine: AsyncEngine, address: str) -> Suppression | None:
    """The entry in force for ``address`` (``None``: mail goes to it)."""
    rows = await _run(engine, "check", {"address": v.normalize_recipient(address, "address")})
    return rows[0] if rows else None


async def entries(
    engine: AsyncEngine, *, include_expired: bool = False, limit: int = 100
) -> list[Suppression]:
    """The entries, newest first (expired ones only with ``include_expired``)."""
    if not 1 <= limit <= 10_000:
        raise InvalidInput("limit", "must be between 1 and 10000")
    return await _run(engine, "entries", {"include_expired": include_expired, "limit": limit})
