"""What Alembic's autogenerate compares, shared by ``alembic/env.py`` and ``verify``.

Autogenerate sees schema ``email`` and nothing else, for every object type (tables,
indexes, enums, and alembic_utils' functions, triggers, policies and views), so Supabase's
own schemas and anything else in the database are never proposed for change.
"""

from __future__ import annotations

from typing import Any

import alembic_postgresql_enum  # noqa: F401 - registers enum value comparison
from alembic_utils.replaceable_entity import register_entities

from email_delivery import catalog
from email_delivery.base import SCHEMA, Base
from email_delivery.models import EVENT_PARTITION_PREFIX

ENTITY_TYPES = catalog.ENTITY_TYPES


def register() -> None:
    """Register the head's SQL objects with alembic_utils (idempotent)."""
    register_entities(list(catalog.head().entities), entity_types=ENTITY_TYPES)


def include_name(name: str | None, type_: str, parent_names: dict[str, Any]) -> bool:
    if type_ == "schema":
        return name == SCHEMA
    if type_ == "table" and name is not None and name.startswith(EVENT_PARTITION_PREFIX):
        # The audit log's partitions come and go with maintenance; they are not schema.
        return False
    return parent_names.get("schema_name") == SCHEMA


COMPARE_OPTIONS: dict[str, Any] = {
    "target_metadata": Base.metadata,
    "version_table_schema": SCHEMA,
    "include_schemas": True,
    "include_name": include_name,
    "compare_type": True,
}
"""The comparison options of every Alembic context of this package."""
