"""pytest-alembic's built-in tests, run as the NOSUPERUSER migration owner on an empty database.

pytest-alembic hands env.py its connection in ``config.attributes["connection"]``, the same
channel ``email_delivery.migrate`` uses, so these exercise the real env.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic.config import Config
from pytest_alembic.tests import (
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)
from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool

from email_delivery.urls import sync_url
from tests.support.cluster import Cluster
from tests.support.cluster import alembic_config as project_alembic_config

__all__ = [
    "test_model_definitions_match_ddl",
    "test_single_head_revision",
    "test_up_down_consistency",
    "test_upgrade",
]


@pytest.fixture
def alembic_config() -> Config:
    return project_alembic_config()


@pytest.fixture
def alembic_engine(cluster: Cluster, empty_database: str) -> Iterator[Engine]:
    engine = create_engine(sync_url(cluster.url(empty_database)), poolclass=NullPool)
    yield engine
    engine.dispose()
