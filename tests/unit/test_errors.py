"""The one exception hierarchy: what each error also is, and what the package exports."""

from __future__ import annotations

import pytest

import email_delivery
from email_delivery import errors
from email_delivery.errors import (
    SQLSTATES,
    AttemptsDecreased,
    DatabaseUnavailable,
    DatabaseUrlError,
    DeliveryNotFound,
    EmailDeliveryError,
    IllegalTransition,
    InvalidInput,
    OwnerOnly,
    PermissionDenied,
    ProtectedColumn,
    SecretInInput,
    StatementTimeout,
)

ERROR_CLASSES = [
    getattr(errors, name)
    for name in errors.__all__
    if isinstance(getattr(errors, name), type) and issubclass(getattr(errors, name), Exception)
]


def test_every_error_is_an_email_delivery_error_and_exported_by_the_package() -> None:
    assert len(ERROR_CLASSES) >= 12
    for cls in ERROR_CLASSES:
        assert issubclass(cls, EmailDeliveryError), cls
        assert getattr(email_delivery, cls.__name__) is cls, cls


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (InvalidInput("limit", "must be positive"), ValueError),
        (SecretInInput("metadata.token", "looks like a secret"), InvalidInput),
        (DatabaseUrlError("DATABASE_URL is not set"), ValueError),
        (DeliveryNotFound("d1"), LookupError),
        (PermissionDenied("permission denied for table deliveries"), PermissionError),
        (DatabaseUnavailable("cannot connect"), ConnectionError),
        (StatementTimeout("canceling statement"), TimeoutError),
    ],
)
def test_errors_are_also_the_builtin_a_caller_would_expect(
    error: EmailDeliveryError, builtin: type[Exception]
) -> None:
    assert isinstance(error, builtin)


def test_invalid_input_names_its_field() -> None:
    error = SecretInInput("metadata.invite.token", "looks like a secret")
    assert error.field == "metadata.invite.token"
    assert error.reason == "looks like a secret"
    assert str(error) == "metadata.invite.token: looks like a secret"


def test_a_hint_is_the_classs_unless_the_instance_gives_one() -> None:
    assert DeliveryNotFound("d1").hint == DeliveryNotFound.hint != ""
    assert str(DeliveryNotFound("d1")) == "no delivery with id 'd1'"
    precise = PermissionDenied("permission denied", hint="run it as the owner")
    assert precise.hint == "run it as the owner"
    assert PermissionDenied("permission denied").hint == PermissionDenied.hint
    assert InvalidInput("x", "y").hint == ""  # the CLI falls back to the command's --help


def test_the_packages_own_sqlstates() -> None:
    expected = {
        "ED001": IllegalTransition,
        "ED002": AttemptsDecreased,
        "ED003": SecretInInput,
        "ED004": ProtectedColumn,
        "ED005": OwnerOnly,
    }
    assert expected == SQLSTATES
