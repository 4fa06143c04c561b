"""``python -m email_delivery.revision -m MESSAGE``: write the revision for changed SQL files.

Compares the head SQL objects (``email_delivery/sql``) with what the history creates — the
frozen files the revisions run, found by replaying ``alembic upgrade head --sql`` offline,
so no database is needed — and writes a new revision that carries the difference:

- ``alembic/versions/<rev>/<kind>/<name>.sql``: a rendered copy of every new or changed
  object (frozen: placeholders already replaced);
- ``alembic/versions/<date>_<rev>_<slug>.py``: ``op.create_sql_object`` for a new object
  (with its EXECUTE grants from ``catalog.FUNCTION_EXECUTE`` for a function),
  ``op.replace_sql_object(new, previous=…)`` for a changed one — the previous definition is
  the file of the revision that last created or replaced it, never a copy from memory —
  and ``op.drop_sql_object(previous)`` for one that is gone; the downgrade does the
  reverse, in reverse order.

A function whose result type changed cannot be replaced in place: it is dropped and
created again (and granted again). Tables, columns and indexes are not SQL files: write
their revision first with ``alembic -x entities=off revision --autogenerate``, then run
this command for the objects.
"""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.script import ScriptDirectory

from email_delivery import catalog, sql
from email_delivery.migrate import alembic_config
from email_delivery.migration_ops import frozen_object, recording_sql_objects

_KIND_ORDER = list(sql.KINDS.values())
_DIRECTORY = {kind: directory for directory, kind in sql.KINDS.items()}


@dataclass(frozen=True)
class Change:
    action: str  # "create", "replace", "recreate" (drop + create) or "drop"
    obj: sql.SqlObject
    previous: Path | None


def history_state() -> dict[tuple[str, str], Path]:
    """``(kind, name)`` → the frozen file that defines the object at the head revision."""
    config = alembic_config()
    config.output_buffer = io.StringIO()
    with recording_sql_objects() as recorded:
        command.upgrade(config, "head", sql=True)
    state: dict[tuple[str, str], Path] = {}
    for action, path in recorded:
        obj = frozen_object(path)
        if action == "drop":
            state.pop((obj.kind, obj.name), None)
        else:
            state[(obj.kind, obj.name)] = path
    return state


def _returns(obj: sql.SqlObject) -> str:
    match = re.match(r"RETURNS\s+(.*?)\s+LANGUAGE\b", obj.definition, re.IGNORECASE | re.DOTALL)
    return " ".join((match[1] if match else "").lower().split())


def changes() -> list[Change]:
    """What the head has that the history does not, in the order an upgrade applies it."""
    state = history_state()
    head: dict[tuple[str, str], sql.SqlObject] = {
        (obj.kind, obj.name): obj for obj in sql.head_objects()
    }
    found: list[Change] = []
    for key, obj in head.items():
        previous = state.get(key)
        if previous is None:
            found.append(Change("create", obj, None))
            continue
        old = frozen_object(previous)
        if old.statement == obj.statement:
            continue
        # CREATE OR REPLACE can change neither a function's result type nor its arguments
        # (a new argument list is another function): drop and create it instead.
        retyped = obj.kind == "function" and (
            _returns(old) != _returns(obj) or old.identity != obj.identity
        )
        found.append(Change("recreate" if retyped else "replace", obj, previous))
    for gone, path in state.items():
        if gone not in head:
            found.append(Change("drop", frozen_object(path), path))
    creating = [c for c in found if c.action != "drop"]
    dropping = [c for c in found if c.action == "drop"]
    creating.sort(key=lambda c: _KIND_ORDER.index(c.obj.kind))
    dropping.sort(key=lambda c: _KIND_ORDER.index(c.obj.kind), reverse=True)
    return creating + dropping


def _versions() -> Path:
    location = Path(alembic_config().get_main_option("script_location") or "")
    return location / "versions"


def _next_revision(script: ScriptDirectory) -> tuple[str, str]:
    head = script.get_current_head()
    if head is None:
        raise SystemExit("no revisions yet")
    if not head.isdigit():
        raise SystemExit(f"head revision {head!r} is not numbered; pass --rev-id")
    return str(int(head) + 1).zfill(len(head)), head


def _relative(path: Path, versions: Path) -> str:
    return path.relative_to(versions).as_posix()


def _names(roles: Sequence[str]) -> str:
    return ", ".join(f'"{role}"' for role in roles)


def _grants(obj: sql.SqlObject, indent: str, *, dropped: bool = False) -> list[str]:
    roles = catalog.FUNCTION_EXECUTE.get(obj.name)
    if roles is None and dropped:
        # Re-created by a downgrade: its grants were an earlier revision's op calls.
        print(
            f"note: the downgrade re-creates {obj.name} executable by nobody but its owner; "
            "add the grants it had, if any",
            file=sys.stderr,
        )
        roles = ()
    if roles is None:
        raise SystemExit(f"add {obj.name} to catalog.FUNCTION_EXECUTE (who may execute it)")
    target = f"FUNCTION email.{obj.identity}"
    lines = [
        f"{indent}op.revoke_privileges(",
        f'{indent}    privileges=["EXECUTE"], target="{target}", roles=["PUBLIC"]',
        f"{indent})",
    ]
    if roles:
        lines += [
            f"{indent}op.grant_privileges(",
            f'{indent}    privileges=["EXECUTE"], target="{target}", roles=[{_names(roles)}]',
            f"{indent})",
        ]
    return lines


def render_module(
    *, revision: str, down_revision: str, message: str, found: Sequence[Change], versions: Path
) -> str:
    indent = "    "
    upgrade: list[str] = []
    downgrade: list[str] = []
    for change in found:
        new = f'HERE / "{revision}/{_DIRECTORY[change.obj.kind]}/{change.obj.name}.sql"'
        old = f'HERE / "{_relative(change.previous, versions)}"' if change.previous else ""
        if change.action == "create":
            upgrade.append(f"{indent}op.create_sql_object({new})")
            if change.obj.kind == "function":
                upgrade += _grants(change.obj, indent)
            downgrade.append(f"{indent}op.drop_sql_object({new})")
        elif change.action == "replace":
            upgrade.append(f"{indent}op.replace_sql_object({new}, previous={old})")
            downgrade.append(f"{indent}op.replace_sql_object({old}, previous={new})")
        elif change.action == "recreate":
            upgrade.append(f"{indent}op.drop_sql_object({old})")
            upgrade.append(f"{indent}op.create_sql_object({new})")
            upgrade += _grants(change.obj, indent)
            # Listed in upgrade order and undone in reverse: the downgrade drops the new
            # function first, then creates the old one (its result type may differ).
            downgrade.append(f"{indent}op.create_sql_object({old})")
            downgrade += _grants(frozen_object(change.previous or ""), indent, dropped=True)
            downgrade.append(f"{indent}op.drop_sql_object({new})")
        else:
            upgrade.append(f"{indent}op.drop_sql_object({old})")
            downgrade.append(f"{indent}op.create_sql_object({old})")
            if change.obj.kind == "function":
                downgrade += _grants(change.obj, indent, dropped=True)
    # Undo in reverse order: what the upgrade created last goes first.
    undo: list[str] = []
    for block in _blocks(downgrade):
        undo = block + undo
    return f'''"""{message}

Revision ID: {revision}
Revises: {down_revision}
Create Date: {datetime.now(UTC).isoformat(sep=" ")}

Written by `python -m email_delivery.revision`: the SQL objects it creates or replaces are
frozen in {revision}/ beside it; the previous definitions are the earlier revisions' files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from alembic import op

import email_delivery.migration_ops  # noqa: F401 - registers the grant and SQL object ops

revision: str = "{revision}"
down_revision: str | Sequence[str] | None = "{down_revision}"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HERE = Path(__file__).parent


def upgrade() -> None:
{_TIMEOUTS}
{chr(10).join(upgrade)}


def downgrade() -> None:
{_TIMEOUTS}
{chr(10).join(undo)}
'''


_TIMEOUTS = """\
    # Busy production tables: wait at most 5 s for a lock (then fail, and retry later)
    # rather than queue every writer behind this revision.
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("SET LOCAL statement_timeout = '60s'")"""
"""The first statements of every generated upgrade and downgrade (squawk requires them)."""


def _blocks(lines: list[str]) -> list[list[str]]:
    """Group each op call with the grant calls that follow it (they move together)."""
    blocks: list[list[str]] = []
    for line in lines:
        starts_op = line.startswith("    op.") and not line.startswith(
            ("    op.revoke_privileges", "    op.grant_privileges")
        )
        if starts_op or not blocks:
            blocks.append([line])
        else:
            blocks[-1].append(line)
    return blocks


def _slug(message: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", message.lower()).strip("_")[:40] or "sql_objects"


def write_revision(message: str, *, rev_id: str | None = None) -> Path | None:
    """Write the revision; return its module's path, or None when nothing changed."""
    found = changes()
    if not found:
        return None
    config = alembic_config()
    script = ScriptDirectory.from_config(config)
    revision, down_revision = _next_revision(script)
    if rev_id:
        revision = rev_id
    versions = _versions()
    for change in found:
        if change.action == "drop":
            continue
        target = versions / revision / _DIRECTORY[change.obj.kind] / f"{change.obj.name}.sql"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(change.obj.statement, encoding="utf-8")
    module = versions / f"{datetime.now(UTC):%Y%m%d}_{revision}_{_slug(message)}.py"
    module.write_text(
        render_module(
            revision=revision,
            down_revision=down_revision,
            message=message,
            found=found,
            versions=versions,
        ),
        encoding="utf-8",
    )
    # Formatted like the rest of the tree when ruff is at hand (the dev extra has it).
    subprocess.run([sys.executable, "-m", "ruff", "format", "--quiet", str(module)], check=False)
    return module


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m email_delivery.revision",
        description="Write the Alembic revision that brings the history to the head SQL files.",
    )
    parser.add_argument("-m", "--message")
    parser.add_argument("--rev-id", help="the new revision's id (default: the next number)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a revision is needed")
    args = parser.parse_args(argv)
    if args.check:
        found = changes()
        for change in found:
            print(f"{change.action} {change.obj.kind} {change.obj.name}")
        return 1 if found else 0
    if not args.message:
        parser.error("-m MESSAGE is required to write a revision")
    module = write_revision(args.message, rev_id=args.rev_id)
    if module is None:
        print("the history already creates every head SQL object as it is: nothing to write")
        return 0
    print(module)
    return 0


if __name__ == "__main__":
    sys.exit(main())
