"""A revision is history: it creates the same objects forever, and head == history.

- Revisions 0001-0003 build exactly the catalog they built before they were rewritten to run
  frozen SQL files (fingerprints recorded from the old code, per PostgreSQL major version),
  upgrading and downgrading.
- Every landed revision emits, byte for byte, the offline SQL recorded when it landed: an
  edit of a revision, of its frozen files or of a helper it uses changes history and fails.
- No revision imports a head definition.
- The head (models + SQL files + grants) built directly equals ``alembic upgrade head``
  from empty, and a head SQL object changed without a revision fails that comparison.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from email_delivery import catalog, revision, sql
from email_delivery.migrate import script_location
from tests.migrations import record_history
from tests.support.cluster import Cluster
from tests.support.db import connect
from tests.support.fingerprint import Fingerprint, fingerprint

WRITE_THE_REVISION = (
    "the head definitions (models, email_delivery/sql, catalog grants) differ from what the "
    "revisions build: write the revision (`python -m email_delivery.revision -m MESSAGE` for "
    "SQL objects; `alembic -x entities=off revision --autogenerate` for tables) — see README "
    "'Changing the schema'"
)


def _plain(print_: Fingerprint) -> dict[str, Any]:
    """The fingerprint as JSON would store it (timestamps and arrays as text)."""
    loaded: dict[str, Any] = json.loads(json.dumps(print_, default=str))
    return loaded


def _recorded(revision_id: str, version: int) -> dict[str, Any]:
    path = record_history.HERE / f"{revision_id}_pg{version}.fingerprint.json"
    if not path.exists():
        recorded = sorted(p.name.split("_pg")[1].split(".")[0] for p in path.parent.glob("*.json"))
        pytest.skip(
            f"no fingerprint of the pre-rewrite revisions was recorded for PostgreSQL {version} "
            f"(recorded: {', '.join(sorted(set(recorded)))}; CI runs those)"
        )
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


async def _fingerprint(cluster: Cluster, database: str) -> dict[str, Any]:
    async with connect(cluster, database) as conn:
        return _plain(await fingerprint(conn))


async def test_rewritten_revisions_build_what_they_built_before(
    cluster: Cluster, empty_database: str
) -> None:
    version = cluster.server.version
    for revision_id in ("0001", "0002", "0003"):
        cluster.migrate(empty_database, revision_id)
        assert await _fingerprint(cluster, empty_database) == _recorded(revision_id, version)
    # After head and back down, each revision is again exactly what it was.
    cluster.migrate(empty_database, "head")
    for revision_id in ("0003", "0002", "0001"):
        cluster.migrate(empty_database, revision_id, downgrade=True)
        assert await _fingerprint(cluster, empty_database) == _recorded(revision_id, version)


@pytest.mark.parametrize(("previous", "revision_id"), record_history.revisions())
@pytest.mark.parametrize("direction", ["up", "down"])
def test_landed_revision_emits_its_recorded_sql(
    previous: str, revision_id: str, direction: str
) -> None:
    path = record_history.snapshot(revision_id, direction)
    assert path.exists(), (
        f"revision {revision_id} has no recorded SQL: once it is final, record it with "
        f"`python -m tests.migrations.record_history --write {revision_id}`"
    )
    emitted = record_history.offline(previous, revision_id, down=direction == "down")
    assert emitted == path.read_text(), (
        f"revision {revision_id} ({direction}) no longer emits the SQL it emitted when it "
        "landed: a landed revision is history; change the schema in a new revision"
    )


_ALLOWED_IMPORTS = {
    "__future__",
    "collections.abc",
    "pathlib",
    "alembic",
    "sqlalchemy",
    "sqlalchemy.dialects",
    "sqlalchemy.dialects.postgresql",
    "email_delivery.migration_ops",  # the custom ops: stable helpers
    "email_delivery.base",  # the naming convention
}


@pytest.mark.parametrize(
    "module",
    sorted((script_location() / "versions").glob("*.py")),
    ids=lambda path: path.stem,
)
def test_no_revision_imports_head_definitions(module: Path) -> None:
    imported: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    assert imported <= _ALLOWED_IMPORTS, (
        f"{module.name} imports {sorted(imported - _ALLOWED_IMPORTS)}: a revision carries "
        "its own frozen SQL and may import only the custom ops and the naming convention"
    )


def test_every_head_sql_object_is_in_the_history() -> None:
    pending = [f"{c.action} {c.obj.kind} {c.obj.name}" for c in revision.changes()]
    assert not pending, f"{WRITE_THE_REVISION}; not yet in a revision: {pending}"


_NOT_SCHEMA = re.compile(r"alembic_version|(^|[._])delivery_events_(p\d{8}|default|legacy)")
"""Alembic's own table, and the audit log's partitions: maintenance creates and drops those,
the migrated database has the legacy one, and they are not schema (autogenerate and verify
leave them out too)."""


def _is_schema(kind: str, row: list[Any]) -> bool:
    if _NOT_SCHEMA.search(str(row[0])):
        return False
    # PostgreSQL 18 records NOT NULL as constraints it names itself (a name taken by the
    # legacy partition gets a suffix); the columns' attnotnull says the same.
    return not (kind == "constraints" and row[2] == "b'n'")


def _without_version_table(print_: dict[str, Any]) -> dict[str, Any]:
    return {kind: [row for row in rows if _is_schema(kind, row)] for kind, rows in print_.items()}


async def _build_head(cluster: Cluster, database: str) -> None:
    async with connect(cluster, database) as conn:
        for statement in catalog.head_ddl():
            await conn.execute(statement)


def _differences(head: dict[str, Any], history: dict[str, Any]) -> list[str]:
    lines = []
    for kind in history:
        only_head = [row for row in head[kind] if row not in history[kind]]
        only_history = [row for row in history[kind] if row not in head[kind]]
        lines += [f"{kind}: head has {str(row)[:160]}" for row in only_head]
        lines += [f"{kind}: history has {str(row)[:160]}" for row in only_history]
    return lines


async def test_head_equals_history(cluster: Cluster, empty_database: str, database: str) -> None:
    """One database built from the head definitions, one by `alembic upgrade head` from
    empty (the template the suite clones): identical catalogs."""
    await _build_head(cluster, empty_database)
    head = _without_version_table(await _fingerprint(cluster, empty_database))
    history = _without_version_table(await _fingerprint(cluster, database))
    differences = _differences(head, history)
    assert not differences, WRITE_THE_REVISION + ":\n" + "\n".join(differences)


async def test_head_vs_history_catches_an_edit_without_a_revision(
    cluster: Cluster, empty_database: str, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The comparison above is not vacuous: edit one head function body (as a developer
    editing sql/functions/is_allowed_transition.sql would) and it reports that function."""
    objects = []
    for obj in catalog.head().objects:
        if obj.name == "is_allowed_transition":
            obj = dataclasses.replace(
                obj, statement=obj.statement.replace("AS $$", "AS $$\n    -- edited by hand", 1)
            )
        objects.append(obj)
    monkeypatch.setattr(catalog, "head", lambda: catalog.Head(objects=tuple(objects)))
    await _build_head(cluster, empty_database)
    differences = _differences(
        _without_version_table(await _fingerprint(cluster, empty_database)),
        _without_version_table(await _fingerprint(cluster, database)),
    )
    assert differences
    assert all("is_allowed_transition" in line for line in differences), differences


async def test_history_holds_every_head_object(cluster: Cluster, database: str) -> None:
    """The equality above is not between two empty schemas: every head function and view
    is in the migrated database."""
    conn: asyncpg.Connection
    async with connect(cluster, database) as conn:
        print_ = await fingerprint(conn)
    names = {kind: {str(row[0]) for row in rows} for kind, rows in print_.items()}
    for obj in catalog.head().objects:
        kind = {"function": "functions", "view": "views"}.get(obj.kind)
        if kind == "functions":
            assert any(name.startswith(f"email.{obj.name}(") for name in names[kind]), obj.name
        elif kind == "views":
            assert obj.name in names[kind]
    assert len(sql.head_objects()) == len(catalog.head().objects)
