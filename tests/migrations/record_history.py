"""The frozen history in ``tests/migrations/history/``: what each revision produces, recorded
once and compared forever.

- ``<revision>_pg<major>.fingerprint.json``: the catalog fingerprint (see
  ``tests/migrations/fingerprint.py``) of a database upgraded to that revision, recorded on
  2026-12-01 from the code as it was BEFORE revisions 0001-0003 were rewritten to run
  frozen SQL files: the proof that the rewrite creates exactly the same objects.
- ``<revision>.up.sql`` / ``<revision>.down.sql``: ``alembic upgrade <previous>:<revision>
  --sql`` and ``alembic downgrade <revision>:<previous> --sql``, byte for byte. A landed
  revision (or a helper it uses) that changes what it emits fails the test; a new revision
  records its scripts with ``python -m tests.migrations.record_history --write <revision>``.
"""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

from alembic import command
from alembic.script import ScriptDirectory

from email_delivery.migrate import alembic_config

HERE = Path(__file__).parent / "history"


def revisions() -> list[tuple[str, str]]:
    """``(previous, revision)`` for every revision, oldest first (``base`` before the first)."""
    script = ScriptDirectory.from_config(alembic_config())
    steps = []
    for revision in reversed(list(script.walk_revisions())):
        previous = revision.down_revision
        assert previous is None or isinstance(previous, str), "no merge revisions here"
        steps.append((previous or "base", revision.revision))
    return steps


def offline(previous: str, revision: str, *, down: bool) -> str:
    """The statements the revision itself emits offline: from Alembic's ``-- Running …``
    line to its version-table bookkeeping, without env.py's preamble (schema, version
    table, BEGIN) or the bookkeeping, which are not the revision's."""
    buffer = io.StringIO()
    config = alembic_config()
    config.output_buffer = buffer
    if down:
        command.downgrade(config, f"{revision}:{previous}", sql=True)
    else:
        command.upgrade(config, f"{previous}:{revision}", sql=True)
    lines = buffer.getvalue().splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith("-- Running "))
    end = next(
        i
        for i, line in enumerate(lines)
        if i > start
        and re.match(r"(UPDATE|INSERT INTO|DELETE FROM|DROP TABLE) email\.alembic_version", line)
    )
    return "".join(lines[start + 1 : end]).strip() + "\n"


def snapshot(revision: str, direction: str) -> Path:
    return HERE / f"{revision}.{direction}.sql"


def write(revision: str) -> None:
    for previous, current in revisions():
        if current == revision:
            snapshot(revision, "up").write_text(offline(previous, current, down=False))
            snapshot(revision, "down").write_text(offline(previous, current, down=True))
            return
    raise SystemExit(f"no revision {revision}")


if __name__ == "__main__":
    if sys.argv[1:2] != ["--write"] or len(sys.argv) != 3:
        raise SystemExit("usage: python -m tests.migrations.record_history --write REVISION")
    write(sys.argv[2])
