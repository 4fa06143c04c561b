"""The webhook outbox in the database (revision 0009): endpoints, their secrets, and the
messages built from the change feed. Everything here runs as the schema owner: the tables
are owner-only (RLS on, no policy, no grant), so no reader or writer login ever sees an
endpoint, a secret or a rendered payload.

The outbox is **derived from the change feed** (``email_delivery.feed``): ``fan_out`` reads
the next page after the outbox's own cursor (``email.webhook_feed_state``), renders one
message per matching (endpoint, event) — the body stored once, the ``webhook-id`` stable —
and moves the cursor, all in one transaction. The feed is gap-free and holds only committed
changes, so nothing is built for a change that rolled back and nothing committed is missed;
a crash before the commit leaves the cursor where it was, and the unique (endpoint_id,
event_id) makes a second build of the same page a no-op. Several senders may call it at
once: the cursor row is taken ``FOR UPDATE SKIP LOCKED``, so one builds and the others move
on to sending. The lifecycle functions do no webhook work at all: a subscribed endpoint adds
nothing to a lifecycle call but the feed's index entry and a NOTIFY per statement.

Endpoint management (``add``, ``list_endpoints``, ``disable``, ``enable``, ``replay``) is
what ``email-delivery webhooks …`` calls.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from email_delivery.errors import InvalidInput, translate_errors
from email_delivery.feed import Cursor, FeedEvent, event_from_row, read_page
from email_delivery.models import WORKFLOW_PATTERN, DeliveryStatus
from email_delivery.urls import location
from email_delivery.webhooks import payloads, signing
from email_delivery.webhooks.errors import EndpointNotFound
from email_delivery.webhooks.urls import check_endpoint_url

__all__ = [
    "DELIVERY_COLUMNS",
    "Endpoint",
    "ReplayReport",
    "add",
    "disable",
    "enable",
    "fan_out",
    "get",
    "list_endpoints",
    "render",
    "replay",
]

MAX_DESCRIPTION = 500
FAN_OUT_PAGE = 1000

DELIVERY_COLUMNS = (
    "delivery_id, workflow, recipient, status, attempts, last_error_code, last_error_message, "
    "last_attempted_at, queued_at, sent_at, metadata, updated_at"
)
_ENDPOINT_COLUMNS = (
    "e.id, e.url, e.description, e.enabled, e.workflows, e.statuses, e.include_recipient, "
    "e.include_metadata, e.first_failure_at, e.disabled_at, e.disabled_reason, "
    "e.disabled_automatically, e.created_at, "
    "(SELECT count(*) FROM email.webhook_messages AS m "
    " WHERE m.endpoint_id = e.id AND m.state = 'pending') AS pending, "
    "(SELECT count(*) FROM email.webhook_messages AS m "
    " WHERE m.endpoint_id = e.id AND m.state = 'failed') AS failed"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """An endpoint as ``webhooks list`` shows it (never its secret)."""

    id: int
    url: str
    description: str | None
    enabled: bool
    workflows: tuple[str, ...] | None
    statuses: tuple[str, ...] | None
    include_recipient: bool
    include_metadata: bool
    first_failure_at: datetime | None
    disabled_at: datetime | None
    disabled_reason: str | None
    disabled_automatically: bool
    created_at: datetime
    pending: int = 0
    failed: int = 0

    @property
    def options(self) -> payloads.EndpointOptions:
        return payloads.EndpointOptions(
            include_recipient=self.include_recipient, include_metadata=self.include_metadata
        )

    def wants(self, *, workflow: str, status: str) -> bool:
        """Whether a change of a ``workflow`` delivery into ``status`` is for this endpoint."""
        return (self.workflows is None or workflow in self.workflows) and (
            self.statuses is None or status in self.statuses
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "description": self.description,
            "enabled": self.enabled,
            "workflows": list(self.workflows) if self.workflows is not None else None,
            "statuses": list(self.statuses) if self.statuses is not None else None,
            "include_recipient": self.include_recipient,
            "include_metadata": self.include_metadata,
            "first_failure_at": _iso(self.first_failure_at),
            "disabled_at": _iso(self.disabled_at),
            "disabled_reason": self.disabled_reason,
            "disabled_automatically": self.disabled_automatically,
            "created_at": _iso(self.created_at),
            "pending": self.pending,
            "failed": self.failed,
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _endpoint(row: Any) -> Endpoint:
    return Endpoint(
        id=row.id,
        url=row.url,
        description=row.description,
        enabled=row.enabled,
        workflows=tuple(row.workflows) if row.workflows is not None else None,
        statuses=tuple(row.statuses) if row.statuses is not None else None,
        include_recipient=row.include_recipient,
        include_metadata=row.include_metadata,
        first_failure_at=row.first_failure_at,
        disabled_at=row.disabled_at,
        disabled_reason=row.disabled_reason,
        disabled_automatically=row.disabled_automatically,
        created_at=row.created_at,
        pending=getattr(row, "pending", 0),
        failed=getattr(row, "failed", 0),
    )


# -----------------------------------------------------------------------------------------
# Input
# -----------------------------------------------------------------------------------------


def _names(values: Iterable[str] | None, field: str, check: Any) -> list[str] | None:
    if values is None:
        return None
    if isinstance(values, str):
        raise InvalidInput(field, "must be a list, not a string")
    checked: list[str] = []
    for index, value in enumerate(values):
        if not isinstance(value, str) or not check(value):
            raise InvalidInput(f"{field}[{index}]", f"not a valid value: {value!r}")
        if value not in checked:
            checked.append(value)
    if not checked:
        raise InvalidInput(field, "must name at least one (or be None for all)")
    return checked


_STATUSES = {status.value for status in DeliveryStatus}


def _endpoint_id(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput("endpoint_id", "must be an endpoint id (a positive integer)")
    return value


# -----------------------------------------------------------------------------------------
# Management
# -----------------------------------------------------------------------------------------


async def add(
    engine: AsyncEngine,
    *,
    url: str,
    workflows: Sequence[str] | None = None,
    statuses: Sequence[str] | None = None,
    include_recipient: bool = False,
    include_metadata: bool = False,
    description: str | None = None,
    allow_insecure: bool = False,
    allow_private: bool = False,
) -> tuple[Endpoint, str]:
    """Register an endpoint; returns it and its new signing secret (``whsec_…``), which is
    shown once: give it to the receiver. ``url`` goes through the SSRF guard
    (``check_endpoint_url``): https only and public hosts only, unless the process-wide
    development flags say otherwise. Messages start with the changes made from now on."""
    checked_url = check_endpoint_url(
        url, allow_insecure=allow_insecure, allow_private=allow_private
    )
    wanted_workflows = _names(workflows, "workflows", re.compile(WORKFLOW_PATTERN).match)
    wanted_statuses = _names(statuses, "statuses", _STATUSES.__contains__)
    if description is not None and (
        not isinstance(description, str) or len(description) > MAX_DESCRIPTION
    ):
        raise InvalidInput("description", f"must be a string of at most {MAX_DESCRIPTION}")
    for name, flag in (
        ("include_recipient", include_recipient),
        ("include_metadata", include_metadata),
    ):
        if not isinstance(flag, bool):
            raise InvalidInput(name, "must be a boolean")
    secret = signing.generate_secret()
    async with translate_errors(database=location(engine.url)), engine.begin() as conn:
        row = (
            await conn.execute(
                text(
                    "INSERT INTO email.webhook_endpoints (url, description, workflows, statuses, "
                    "include_recipient, include_metadata) VALUES (:url, :description, "
                    "CAST(:workflows AS text[]), CAST(:statuses AS text[]), :include_recipient, "
                    ":include_metadata) RETURNING id"
                ),
                {
                    "url": checked_url,
                    "description": description,
                    "workflows": wanted_workflows,
                    "statuses": wanted_statuses,
                    "include_recipient": include_recipient,
                    "include_metadata": include_metadata,
                },
            )
        ).one()
        await conn.execute(
            text("INSERT INTO email.webhook_secrets (endpoint_id, secret) VALUES (:id, :secret)"),
            {"id": row.id, "secret": secret},
        )
        endpoint = await _get(conn, row.id)
    return endpoint, secret


async def _get(conn: AsyncConnection, endpoint_id: int) -> Endpoint:
    row = (
        await conn.execute(
            text(f"SELECT {_ENDPOINT_COLUMNS} FROM email.webhook_endpoints AS e WHERE e.id = :id"),
            {"id": endpoint_id},
        )
    ).first()
    if row is None:
        raise EndpointNotFound(endpoint_id)
    return _endpoint(row)


async def get(engine: AsyncEngine, endpoint_id: int) -> Endpoint:
    checked = _endpoint_id(endpoint_id)
    async with translate_errors(database=location(engine.url)), engine.connect() as conn:
        endpoint = await _get(conn, checked)
        await conn.rollback()
    return endpoint


async def list_endpoints(engine: AsyncEngine) -> list[Endpoint]:
    async with translate_errors(database=location(engine.url)), engine.connect() as conn:
        rows = (
            await conn.execute(
                text(f"SELECT {_ENDPOINT_COLUMNS} FROM email.webhook_endpoints AS e ORDER BY e.id")
            )
        ).all()
        await conn.rollback()
    return [_endpoint(row) for row in rows]


async def disable(engine: AsyncEngine, endpoint_id: int, *, reason: str | None = None) -> Endpoint:
    """Stop sending to an endpoint (its pending messages wait; ``enable`` resumes them)."""
    checked = _endpoint_id(endpoint_id)
    async with translate_errors(database=location(engine.url)), engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE email.webhook_endpoints SET enabled = false, disabled_at = now(), "
                "disabled_reason = :reason, disabled_automatically = false, updated_at = now() "
                "WHERE id = :id AND enabled"
            ),
            {"id": checked, "reason": reason or f"disabled by {'an operator'}"},
        )
        return await _get(conn, checked)


async def enable(engine: AsyncEngine, endpoint_id: int) -> Endpoint:
    """Send to an endpoint again; its failure streak starts afresh and its pending messages
    go out (those whose time has passed at once)."""
    checked = _endpoint_id(endpoint_id)
    async with translate_errors(database=location(engine.url)), engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE email.webhook_endpoints SET enabled = true, disabled_at = NULL, "
                "disabled_reason = NULL, disabled_automatically = false, "
                "first_failure_at = NULL, updated_at = now() WHERE id = :id"
            ),
            {"id": checked},
        )
        return await _get(conn, checked)


async def secrets_of(
    conn: AsyncConnection, endpoint_ids: Iterable[int]
) -> dict[int, tuple[str, str]]:
    """Endpoint id → (url, secret) for enabled endpoints, for the sender."""
    rows = (
        await conn.execute(
            text(
                "SELECT e.id, e.url, s.secret FROM email.webhook_endpoints AS e "
                "JOIN email.webhook_secrets AS s ON s.endpoint_id = e.id "
                "WHERE e.id = ANY(CAST(:ids AS bigint[]))"
            ),
            {"ids": sorted(set(endpoint_ids))},
        )
    ).all()
    return {row.id: (row.url, row.secret) for row in rows}


# -----------------------------------------------------------------------------------------
# Building messages
# -----------------------------------------------------------------------------------------


def _event_row(event: FeedEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "delivery_id": event.delivery_id,
        "status": event.status.value,
        "attempt": event.attempt,
        "error_code": event.error_code,
        "error_message": event.error_message,
        "payload": event.payload,
        "changed_columns": event.changed_columns,
        "created_at": event.created_at,
    }


def render(endpoint: Endpoint, event: FeedEvent, delivery: Mapping[str, Any]) -> payloads.Rendered:
    """The message of ``event`` for ``endpoint``: the delivery as read when it is built."""
    return payloads.render(
        endpoint_id=endpoint.id,
        event=_event_row(event),
        delivery=dict(delivery),
        options=endpoint.options,
    )


async def _enabled_endpoints(conn: AsyncConnection) -> list[Endpoint]:
    rows = (
        await conn.execute(
            text(
                "SELECT e.id, e.url, e.description, e.enabled, e.workflows, e.statuses, "
                "e.include_recipient, e.include_metadata, e.first_failure_at, e.disabled_at, "
                "e.disabled_reason, e.disabled_automatically, e.created_at "
                "FROM email.webhook_endpoints AS e WHERE e.enabled ORDER BY e.id"
            )
        )
    ).all()
    return [_endpoint(row) for row in rows]


async def _deliveries(conn: AsyncConnection, ids: Iterable[str]) -> dict[str, Mapping[str, Any]]:
    rows = (
        await conn.execute(
            text(
                f"SELECT {DELIVERY_COLUMNS} FROM email.deliveries "
                "WHERE delivery_id = ANY(CAST(:ids AS text[]))"
            ),
            {"ids": sorted(set(ids))},
        )
    ).all()
    return {row.delivery_id: dict(row._mapping) for row in rows}


_INSERT_MESSAGES = text(
    "INSERT INTO email.webhook_messages (endpoint_id, event_id, delivery_id, message_id, body) "
    "SELECT * FROM unnest(CAST(:endpoint_ids AS bigint[]), CAST(:event_ids AS bigint[]), "
    "CAST(:delivery_ids AS text[]), CAST(:message_ids AS text[]), CAST(:bodies AS text[])) "
    "ON CONFLICT (endpoint_id, event_id) DO NOTHING"
)


async def _insert(
    conn: AsyncConnection, messages: list[tuple[Endpoint, FeedEvent, payloads.Rendered]]
) -> int:
    if not messages:
        return 0
    result = await conn.execute(
        _INSERT_MESSAGES,
        {
            "endpoint_ids": [endpoint.id for endpoint, _, _ in messages],
            "event_ids": [event.id for _, event, _ in messages],
            "delivery_ids": [event.delivery_id for _, event, _ in messages],
            "message_ids": [rendered.message_id for _, _, rendered in messages],
            "bodies": [rendered.body.decode("ascii") for _, _, rendered in messages],
        },
    )
    return int(result.rowcount or 0)


def _matching(
    endpoints: Sequence[Endpoint],
    events: Iterable[FeedEvent],
    deliveries: Mapping[str, Mapping[str, Any]],
    *,
    since_endpoint_created: bool,
) -> list[tuple[Endpoint, FeedEvent, payloads.Rendered]]:
    messages = []
    for event in events:
        delivery = deliveries.get(event.delivery_id)
        if delivery is None:  # purged by retention since: nothing left to describe
            continue
        for endpoint in endpoints:
            if not endpoint.wants(workflow=delivery["workflow"], status=event.status.value):
                continue
            if since_endpoint_created and event.created_at < endpoint.created_at:
                continue
            messages.append((endpoint, event, render(endpoint, event, delivery)))
    return messages


_ANYTHING_NEW = text(
    "SELECT EXISTS (SELECT FROM email.webhook_feed_state AS s, "
    "email.delivery_feed(s.after_xact_id, s.after_event_id, 1)) AS new"
)


async def fan_out(engine: AsyncEngine, *, limit: int = FAN_OUT_PAGE) -> tuple[int, int] | None:
    """Build the messages of the next feed page; returns (events read, messages created),
    or ``None`` when another sender holds the cursor. With no enabled endpoint the cursor
    jumps to the feed's head (nothing to build for)."""
    async with translate_errors(database=location(engine.url)), engine.begin() as conn:
        # Anything readable after the cursor? Asked without a lock, so that an idle tick
        # writes nothing (a row lock takes a transaction id, and its commit a WAL flush).
        if not (await conn.execute(_ANYTHING_NEW)).scalar_one():
            return 0, 0
        state = (
            await conn.execute(
                text(
                    "SELECT after_xact_id, after_event_id FROM email.webhook_feed_state "
                    "FOR UPDATE SKIP LOCKED"
                )
            )
        ).first()
        if state is None:
            return None
        # Nobody to build for: jump to the head. One statement, so the check for an enabled
        # endpoint and the head come from one snapshot (an endpoint added just before is seen).
        jumped = await conn.execute(
            text(
                "UPDATE email.webhook_feed_state AS s SET after_xact_id = h.xact_id, "
                "after_event_id = h.id, updated_at = now() "
                "FROM email.delivery_feed_head() AS h "
                "WHERE NOT EXISTS (SELECT FROM email.webhook_endpoints AS e WHERE e.enabled) "
                "AND (h.xact_id, h.id) > (s.after_xact_id, s.after_event_id)"
            )
        )
        endpoints = await _enabled_endpoints(conn)
        if jumped.rowcount or not endpoints:
            return 0, 0
        page = await read_page(
            conn, after=Cursor(state.after_xact_id, state.after_event_id), limit=limit
        )
        if not page.events:
            return 0, 0
        deliveries = await _deliveries(conn, (event.delivery_id for event in page.events))
        created = await _insert(
            conn, _matching(endpoints, page.events, deliveries, since_endpoint_created=True)
        )
        await conn.execute(
            text(
                "UPDATE email.webhook_feed_state SET after_xact_id = :xact_id, "
                "after_event_id = :event_id, updated_at = now()"
            ),
            {"xact_id": page.cursor.xact_id, "event_id": page.cursor.event_id},
        )
    return len(page.events), created


# -----------------------------------------------------------------------------------------
# Replay
# -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayReport:
    rescheduled: int
    """Existing messages sent again (same ``webhook-id``), their schedule restarted."""
    created: int
    """Messages built for changes that had none for the endpoint (before it existed, while
    it was disabled)."""

    def as_dict(self) -> dict[str, int]:
        return {"rescheduled": self.rescheduled, "created": self.created}


_REPLAY_EVENTS = 50_000


async def replay(
    engine: AsyncEngine,
    *,
    since: datetime | None = None,
    delivery_id: str | None = None,
    endpoint_id: int | None = None,
) -> ReplayReport:
    """Send again every change since ``since`` or of one delivery, to one endpoint or every
    enabled one: existing messages go out again with the same ``webhook-id`` (receivers
    that already have them deduplicate), and changes that never had a message get one."""
    if (since is None) == (delivery_id is None):
        raise InvalidInput("since", "give exactly one of since and delivery_id")
    if since is not None and (not isinstance(since, datetime) or since.tzinfo is None):
        raise InvalidInput("since", "must be a timezone-aware datetime")
    if delivery_id is not None and (not isinstance(delivery_id, str) or not delivery_id):
        raise InvalidInput("delivery_id", "must be a delivery id")
    wanted = _endpoint_id(endpoint_id) if endpoint_id is not None else None
    condition = "e.created_at >= :since" if since is not None else "e.delivery_id = :delivery_id"
    params: dict[str, Any] = {"since": since} if since is not None else {"delivery_id": delivery_id}
    async with translate_errors(database=location(engine.url)), engine.begin() as conn:
        endpoints = [
            endpoint
            for endpoint in await _enabled_endpoints(conn)
            if wanted is None or endpoint.id == wanted
        ]
        if wanted is not None and not endpoints:
            await _get(conn, wanted)  # EndpointNotFound, or:
            raise InvalidInput("endpoint_id", f"endpoint {wanted} is disabled; enable it first")
        rows = (
            await conn.execute(
                text(
                    "SELECT coalesce(e.xact_id, 0) AS xact_id, e.id, e.delivery_id, e.status, "
                    "e.attempt, e.error_code, e.error_message, e.payload, e.changed_columns, "
                    f"e.created_at FROM email.delivery_events AS e WHERE {condition} "
                    f"ORDER BY e.id LIMIT {_REPLAY_EVENTS}"
                ),
                params,
            )
        ).all()
        events = [event_from_row(row) for row in rows]
        ids = [endpoint.id for endpoint in endpoints]
        event_ids = [event.id for event in events]
        rescheduled = await conn.execute(
            text(
                "UPDATE email.webhook_messages SET state = 'pending', attempts = 0, "
                "next_attempt_at = now(), finished_at = NULL "
                "WHERE endpoint_id = ANY(CAST(:ids AS bigint[])) "
                "AND event_id = ANY(CAST(:event_ids AS bigint[]))"
            ),
            {"ids": ids, "event_ids": event_ids},
        )
        deliveries = await _deliveries(conn, (event.delivery_id for event in events))
        created = await _insert(
            conn, _matching(endpoints, events, deliveries, since_endpoint_created=False)
        )
    return ReplayReport(rescheduled=int(rescheduled.rowcount or 0), created=created)
