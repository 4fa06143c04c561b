"""Every error the package raises on purpose, and the one translation of database errors.

The hierarchy: ``EmailDeliveryError`` is the base of everything here, so a caller (the CLI
among them) can tell an error it knows from a bug. Errors the database raises carry a
SQLSTATE; the ones of class ``ED`` (email delivery) are defined here, next to the exception
each becomes, and the SQL files receive them through placeholders (``email_delivery.rules``),
so a code is written once.

``translate_errors()`` is the one place where asyncpg and SQLAlchemy exceptions become these:
the tracker (through its ``Connector``), retention and the CLI all go through it. What it
does not recognise is a bug and propagates unchanged, traceback and all.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from email_delivery.models import Delivery

__all__ = [
    "SQLSTATES",
    "AttemptsDecreased",
    "DatabaseUnavailable",
    "DatabaseUrlError",
    "DeliveryConflict",
    "DeliveryNotFound",
    "EmailDeliveryError",
    "IllegalTransition",
    "InvalidInput",
    "NotMigrated",
    "NotYet",
    "OwnerOnly",
    "PermissionDenied",
    "ProtectedColumn",
    "SecretInInput",
    "StatementTimeout",
    "translate_errors",
    "translated",
]


class EmailDeliveryError(Exception):
    """Base of every error this package raises on purpose."""

    sqlstate: ClassVar[str | None] = None
    """The SQLSTATE the database raises for this error, where it has one of its own."""
    hint: str = ""
    """What a user can do about it (the CLI prints it after the message); the class gives
    the usual advice, an instance may give a more precise one."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class InvalidInput(EmailDeliveryError, ValueError):
    """Bad input, refused before anything is written; ``field`` names the input
    (``metadata.invite.token``, ``deliveries[3].recipient``, ``older_than``)."""

    def __init__(self, field: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"{field}: {message}", hint=hint)
        self.field = field
        self.reason = message


class DatabaseUrlError(EmailDeliveryError, ValueError):
    """``DATABASE_URL`` is missing or is not a PostgreSQL URL."""

    hint = "export DATABASE_URL=postgresql://USER:PASSWORD@HOST:5432/DB"


class SecretInInput(InvalidInput):
    """A metadata or payload key or value carries a secret; ``field`` is its path."""

    sqlstate = "ED003"
    hint = "store a hash under a key ending in _sha256 (or leave the value out)"


class IllegalTransition(EmailDeliveryError):
    """A status move outside the transition table (raised by the database's guard)."""

    sqlstate = "ED001"
    hint = "statuses never go backwards and sent is final (README: Statuses and transitions)"


class AttemptsDecreased(EmailDeliveryError):
    """``attempts`` would go down (raised by the database's guard)."""

    sqlstate = "ED002"
    hint = "attempts only ever increase (a requeue keeps them and resets the retry budget)"


class ProtectedColumn(EmailDeliveryError):
    """A change only the lifecycle functions (or the schema owner) may make to a delivery:
    an immutable column, a time the database sets, a sent delivery, the lifecycle's own
    metadata keys (raised by the database's guard; ``column`` names it)."""

    sqlstate = "ED004"


class OwnerOnly(EmailDeliveryError, PermissionError):
    """Only the schema owner may do this: requeue, or insert a delivery other than a new
    ``queued`` one (raised by the database's guard, whoever calls)."""

    sqlstate = "ED005"
    hint = "run it as the schema owner (Supabase's postgres), e.g. `email-delivery requeue`"


class DeliveryNotFound(EmailDeliveryError, LookupError):
    """No delivery with this ``delivery_id``."""

    hint = "check the id, or look it up with `email-delivery find --recipient ADDRESS`"

    def __init__(self, delivery_id: str) -> None:
        super().__init__(f"no delivery with id {delivery_id!r}")
        self.delivery_id = delivery_id


class NotYet(EmailDeliveryError):
    """A claim of a ``retrying`` delivery before its next attempt's time: its workflow's
    backoff has not passed. Nothing changed; try again at ``retry_at`` (``wait`` from now) —
    nack the Pub/Sub message with that delay (README, the push handler)."""

    hint = "retry after the delay; the workflow's backoff is in `email-delivery policy show`"

    def __init__(self, delivery_id: str, retry_at: datetime, wait: timedelta) -> None:
        super().__init__(
            f"delivery {delivery_id!r} may be attempted again at {retry_at.isoformat()} "
            f"(in {max(wait.total_seconds(), 0):.1f} s)"
        )
        self.delivery_id = delivery_id
        self.retry_at = retry_at
        self.wait = max(wait, timedelta(0))


class DeliveryConflict(EmailDeliveryError):
    """An enqueue for an existing ``delivery_id`` with a different workflow or recipient.

    Nothing was written. ``fields`` names what differs; ``existing`` is the stored row.
    """

    def __init__(self, delivery_id: str, fields: Sequence[str], existing: Delivery) -> None:
        super().__init__(f"delivery {delivery_id!r} exists with a different {' and '.join(fields)}")
        self.delivery_id = delivery_id
        self.fields = tuple(fields)
        self.existing = existing


class PermissionDenied(EmailDeliveryError, PermissionError):
    """The connected role may not do this (SQLSTATE 42501)."""

    hint = (
        "connect as a login in email_reader (reads), email_writer (the worker), or as the "
        "schema owner (migrate, verify, requeue, prune)"
    )


class NotMigrated(EmailDeliveryError):
    """Schema ``email`` (or one of its objects) is missing in this database."""

    hint = "run `email-delivery migrate upgrade` as the database owner"


class DatabaseUnavailable(EmailDeliveryError, ConnectionError):
    """The database cannot be reached, refused the login, or closed the connection."""

    hint = (
        "check DATABASE_URL, that the server is up and reachable (Supabase: the direct "
        "connection or the session pooler)"
    )


class StatementTimeout(EmailDeliveryError, TimeoutError):
    """The statement was cancelled (``statement_timeout`` or ``lock_timeout``)."""

    hint = "retry later"


SQLSTATES: dict[str, type[EmailDeliveryError]] = {
    cls.sqlstate: cls
    for cls in (IllegalTransition, AttemptsDecreased, SecretInInput, ProtectedColumn, OwnerOnly)
    if cls.sqlstate is not None
}
"""The package's own SQLSTATEs (class ``ED``) and the exceptions they become."""

_NOT_MIGRATED = frozenset({"42P01", "3F000", "42883", "42704"})
_LOGIN_REFUSED = frozenset({"28P01", "28000", "3D000"})
# The server ended the session (terminated backend, shutdown, restart) or cannot take it yet.
_CONNECTION_LOST = frozenset({"57P01", "57P02", "57P03"})
_CONNECTION_EXCEPTION_CLASS = "08"
_CANCELLED = frozenset({"57014", "55P03"})
_INVALID_PARAMETER = "22023"
_INSUFFICIENT_PRIVILEGE = "42501"
_THE_DATABASE = "the database"


def _sqlstate(exc: BaseException) -> str | None:
    seen: BaseException | None = exc
    while seen is not None:
        for attribute in ("sqlstate", "pgcode"):
            code = getattr(seen, attribute, None)
            if isinstance(code, str) and code:
                return code
        seen = getattr(seen, "orig", None) or seen.__cause__
    return None


def _column(exc: BaseException, default: str) -> str:
    """The error's COLUMN field, where the SQL functions name the offending argument
    (asyncpg's exception, under SQLAlchemy's wrapper when there is one)."""
    seen: BaseException | None = exc
    while seen is not None:
        column = getattr(seen, "column_name", None)
        if isinstance(column, str) and column:
            return column
        seen = getattr(seen, "orig", None) or seen.__cause__
    return default


def _driver_error(exc: BaseException) -> BaseException:
    """The driver's own exception under SQLAlchemy's wrapper (the message users read)."""
    orig = getattr(exc, "orig", None)
    return orig if isinstance(orig, BaseException) else exc


def _first_line(exc: BaseException) -> str:
    lines = str(_driver_error(exc)).strip().splitlines()
    line = lines[0] if lines else type(exc).__name__
    # SQLAlchemy's asyncpg adapter prefixes "<class 'asyncpg….Error'>: ".
    if line.startswith("<class '") and "'>: " in line:
        line = line.split("'>: ", 1)[1]
    return line


def _unreachable(exc: BaseException) -> BaseException | None:
    """The network-level cause of ``exc``, if that is what it is.

    Any ``OSError`` counts: asyncio reports a refused connection to several addresses as a
    bare ``OSError("Multiple exceptions: …")``. So translate only around database access,
    where an ``OSError`` can only be the network (``translate_errors`` is used that way).
    """
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return None
        if isinstance(seen, OSError | TimeoutError) or type(seen).__name__ in {
            "ConnectionDoesNotExistError",
            "CannotConnectNowError",
        }:
            return seen
        seen = getattr(seen, "orig", None) or seen.__cause__ or seen.__context__
    return None


def translated(exc: BaseException, *, database: str | None = None) -> EmailDeliveryError | None:
    """The package error for a driver or SQLAlchemy exception, or None when it is not one
    users meet (a bug: let it propagate as it is). ``database`` (``host:port/name``) is
    named in connection errors."""
    if isinstance(exc, EmailDeliveryError):
        return exc
    where = database or _THE_DATABASE
    state = _sqlstate(exc)
    message = _first_line(exc)
    known = SQLSTATES.get(state or "")
    if known is SecretInInput:
        return SecretInInput(_column(exc, "input"), message)
    if known is not None:
        return known(message)
    if state == _INVALID_PARAMETER:
        return InvalidInput(_column(exc, "argument"), message)
    if state == _INSUFFICIENT_PRIVILEGE:
        return PermissionDenied(
            message if "permission denied" in message else f"permission denied: {message}"
        )
    if state in _NOT_MIGRATED:
        return NotMigrated(f"schema email is not migrated in this database: {message}")
    if state in _LOGIN_REFUSED:
        return DatabaseUnavailable(
            f"cannot connect to {where}: {message}",
            hint="check the user, password and database name in DATABASE_URL",
        )
    if state in _CANCELLED:
        return StatementTimeout(f"the statement was cancelled: {message}")
    cause = _unreachable(exc)
    if (
        state in _CONNECTION_LOST
        or (state or "").startswith(_CONNECTION_EXCEPTION_CLASS)
        or type(cause).__name__ == "ConnectionDoesNotExistError"  # closed mid-statement
    ):
        return DatabaseUnavailable(
            f"lost the connection to {where}: {message}",
            hint="retry: the server closed the connection (restart, failover, terminated session)",
        )
    if cause is not None:
        reason = str(cause).strip() or type(cause).__name__
        return DatabaseUnavailable(f"cannot connect to {where}: {reason}")
    return None


class translate_errors:  # lower case: used like contextlib.suppress, so named like it
    """``with translate_errors():`` or ``async with translate_errors():`` around database
    access: a database error users meet is raised as the package's error (the original kept
    as ``__cause__``); anything else, a bug, propagates unchanged.

    ``database`` (``host:port/name``, see ``urls.location``) is named in connection errors.
    A class rather than ``@contextmanager``: the tracker enters it on every call.
    """

    __slots__ = ("database",)

    def __init__(self, *, database: str | None = None) -> None:
        self.database = database

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Only Exception: cancellation and KeyboardInterrupt are not errors to translate.
        if not isinstance(exc, Exception) or isinstance(exc, EmailDeliveryError):
            return
        error = translated(exc, database=self.database)
        if error is not None:
            raise error from exc

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, traceback)
