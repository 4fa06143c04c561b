"""Every error the package raises on purpose, and the one translation of database errors.

The hierarchy: ``EmailDeliveryError`` is the base of everything here, so a caller (the CLI
among them) can tell an error it knows from a bug. Errors the database raises carry a
SQLSTATE; the ones of class ``ED`` (email delivery) are defined here, next to the exception
each becomes, and the SQL files receive them through placeholders (``email_delivery.rules``),
so a code is written once.

``translate_errors()`` is the one place where asyncpg and SQLAlchemy exceptions become these:
the tracker, retention and the CLI all go through it.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import ClassVar

__all__ = [
    "SQLSTATES",
    "AttemptsDecreased",
    "DatabaseUnavailable",
    "DeliveryConflict",
    "DeliveryNotFound",
    "EmailDeliveryError",
    "IllegalTransition",
    "InvalidInput",
    "NotMigrated",
    "OwnerOnly",
    "PermissionDenied",
    "ProtectedColumn",
    "SecretInInput",
    "StatementTimeout",
    "translate_errors",
]


class EmailDeliveryError(Exception):
    """Base of every error this package raises on purpose."""

    sqlstate: ClassVar[str | None] = None
    """The SQLSTATE the database raises for this error, where it has one of its own."""
    hint: ClassVar[str] = ""
    """What a user can do about it (the CLI prints it after the message)."""


class InvalidInput(EmailDeliveryError, ValueError):
    """Bad input, refused before anything is written; ``field`` names the input
    (``metadata.invite.token``, ``deliveries[3].recipient``, ``older_than``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


class SecretInInput(InvalidInput):
    """A metadata or payload key or value carries a secret; ``field`` is its path."""

    sqlstate = "ED003"


class IllegalTransition(EmailDeliveryError):
    """A status move outside the transition table (raised by the database's guard)."""

    sqlstate = "ED001"


class AttemptsDecreased(EmailDeliveryError):
    """``attempts`` would go down (raised by the database's guard)."""

    sqlstate = "ED002"


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
        super().__init__(f"no delivery {delivery_id!r}")
        self.delivery_id = delivery_id


class DeliveryConflict(EmailDeliveryError):
    """An enqueue for an existing ``delivery_id`` with a different workflow or recipient.

    Nothing was written. ``fields`` names what differs; ``existing`` is the stored row
    (an ``email_delivery.Delivery``).
    """

    def __init__(self, delivery_id: str, fields: tuple[str, ...], existing: object) -> None:
        super().__init__(f"delivery {delivery_id!r} exists with a different {' and '.join(fields)}")
        self.delivery_id = delivery_id
        self.fields = fields
        self.existing = existing


class PermissionDenied(EmailDeliveryError, PermissionError):
    """The connected role may not do this (SQLSTATE 42501)."""

    hint = (
        "connect as a login in email_reader (reads), email_writer (the worker), or as the "
        "schema owner (migrate, verify, requeue, prune, policy)"
    )


class NotMigrated(EmailDeliveryError):
    """Schema ``email`` (or one of its objects) is missing in this database."""

    hint = "run `email-delivery migrate upgrade` as the database owner"


class DatabaseUnavailable(EmailDeliveryError, ConnectionError):
    """The database cannot be reached, or refused the login."""

    hint = "check DATABASE_URL (user, password, host, port, database) and that the server is up"


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
_CANCELLED = frozenset({"57014", "55P03"})
_INVALID_PARAMETER = "22023"


def _sqlstate(exc: BaseException) -> str | None:
    seen: BaseException | None = exc
    while seen is not None:
        for attribute in ("sqlstate", "pgcode"):
            code = getattr(seen, attribute, None)
            if isinstance(code, str) and code:
                return code
        seen = getattr(seen, "orig", None) or seen.__cause__
    return None


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
    """The network-level cause of ``exc``, if that is what it is."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return None
        if isinstance(seen, OSError | socket.gaierror | TimeoutError) or type(seen).__name__ in {
            "ConnectionDoesNotExistError",
            "CannotConnectNowError",
        }:
            return seen
        seen = getattr(seen, "orig", None) or seen.__cause__ or seen.__context__
    return None


def translated(exc: BaseException) -> EmailDeliveryError | None:
    """The package error for a driver or SQLAlchemy exception, or None when it is not one
    users meet (a bug: let it propagate as it is)."""
    if isinstance(exc, EmailDeliveryError):
        return exc
    state = _sqlstate(exc)
    message = _first_line(exc)
    known = SQLSTATES.get(state or "")
    if known is SecretInInput:
        return SecretInInput(getattr(_driver_error(exc), "column_name", None) or "input", message)
    if known is not None:
        return known(message)
    if state == _INVALID_PARAMETER:
        # The SQL functions name the argument in the error's COLUMN field where they can.
        field = getattr(_driver_error(exc), "column_name", None) or "argument"
        return InvalidInput(field, message)
    if state == "42501":
        return PermissionDenied(
            message if "permission denied" in message else f"permission denied: {message}"
        )
    if state in _NOT_MIGRATED:
        return NotMigrated(f"schema email is not migrated in this database ({message})")
    if state in _LOGIN_REFUSED:
        return DatabaseUnavailable(f"the database refused the connection: {message}")
    if state in _CANCELLED:
        return StatementTimeout(f"the statement was cancelled: {message}")
    cause = _unreachable(exc)
    if cause is not None:
        reason = str(cause).strip() or type(cause).__name__
        return DatabaseUnavailable(f"cannot reach the database: {reason}")
    return None


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Raise the package's error for a database error users meet; anything else (a bug)
    propagates unchanged. The original exception is kept as ``__cause__``."""
    try:
        yield
    except EmailDeliveryError:
        raise
    except Exception as exc:
        error = translated(exc)
        if error is None:
            raise
        raise error from exc
