"""The SQL files: one object per file, placeholders from ``rules`` only, nothing stale.

No database here: these check the files as text. The database-side agreement (the rendered
SQL behaves like the Python rules) is in the integration tests.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import pytest

from email_delivery import rules, sql
from email_delivery.migrate import script_location
from email_delivery.migration_ops import frozen_object

SQL_ROOT = Path(str(resources.files("email_delivery.sql")))
SQL_FILES = sorted(SQL_ROOT.rglob("*.sql"))
FROZEN_FILES = sorted((script_location() / "versions").glob("*/*/*.sql"))


def _relative(path: Path) -> str:
    return path.relative_to(SQL_ROOT).as_posix()


def test_every_object_file_defines_the_object_it_is_named_after() -> None:
    objects = sql.head_objects()
    files = [p for p in SQL_FILES if p.parent.name in sql.KINDS]
    assert len(objects) == len(files) > 20
    for obj in objects:
        assert obj.statement.startswith("CREATE")
        assert obj.statement.rstrip().endswith(";")


@pytest.mark.parametrize("path", SQL_FILES, ids=_relative)
def test_no_unknown_placeholder(path: Path) -> None:
    used = sql.placeholders_in(path.read_text())
    assert used <= rules.PLACEHOLDER_NAMES, f"unknown: {sorted(used - rules.PLACEHOLDER_NAMES)}"


def test_every_placeholder_is_used() -> None:
    used: set[str] = set()
    for path in SQL_FILES:
        used |= sql.placeholders_in(path.read_text())
    assert rules.PLACEHOLDER_NAMES - used == set(), "rules renders placeholders nobody uses"


@pytest.mark.parametrize("path", SQL_FILES, ids=_relative)
def test_inline_renderings_are_current(path: Path) -> None:
    """Each file runs in psql as it stands, so its inline renderings must be the rules'
    current ones (``python -m email_delivery.sql --write`` refreshes them)."""
    assert sql.stale_regions(path.read_text()) == []


def test_unknown_and_unclosed_placeholders_are_errors() -> None:
    with pytest.raises(sql.SqlFileError, match="unknown placeholder"):
        sql.render("SELECT /*{no_such_rule}*/1/*{end}*/", where="x.sql")
    with pytest.raises(sql.SqlFileError, match="without its"):
        sql.render("SELECT /*{active_statuses}*/('queued')", where="x.sql")


def test_a_stale_rendering_is_found_and_refreshed() -> None:
    stale = "WHERE status IN /*{active_statuses}*/('queued')/*{end}*/"
    assert sql.stale_regions(stale) == ["active_statuses"]
    fresh = sql.refresh(stale)
    assert sql.stale_regions(fresh) == []
    assert "('queued', 'in_progress', 'retrying')" in sql.render(fresh)


def test_markers_never_sit_inside_a_literal() -> None:
    """A marker inside '…' would be part of the string when psql runs the file."""
    for path in SQL_FILES:
        text = re.sub(r"--[^\n]*", "", path.read_text())
        for match in sql.PLACEHOLDER.finditer(text):
            assert text[: match.start()].count("'") % 2 == 0, (_relative(path), match["name"])


@pytest.mark.parametrize("path", FROZEN_FILES, ids=lambda p: p.relative_to(p.parents[2]).as_posix())
def test_frozen_files_are_rendered_objects(path: Path) -> None:
    obj = frozen_object(path)  # refuses placeholders
    assert obj.name == path.stem


def test_function_identity_drops_defaults() -> None:
    stats = next(obj for obj in sql.head_objects() if obj.name == "delivery_stats")
    assert "DEFAULT" in stats.signature
    assert stats.identity == (
        "delivery_stats(p_since timestamp with time zone, p_until timestamp with time zone, "
        "p_bucket text, p_workflow text, p_top_errors integer)"
    )
    assert stats.drop_statement == f"DROP FUNCTION email.{stats.identity}"


def test_named_blocks_and_includes() -> None:
    retention = sql.blocks("retention.sql")
    # The shared batch walk of deliveries is written once and included where it is used
    # (the webhook outbox's and the unmatched outcome events' prunes walk their own tables).
    text = sql.read("retention.sql")
    assert text.count("FOR UPDATE SKIP LOCKED") == 3
    for own in ("prune_webhook_messages", "prune_unmatched_outcome_events"):
        assert "FOR UPDATE SKIP LOCKED" in retention[own]
    for name in ("prune_batch", "scrub_batch"):
        assert "FOR UPDATE SKIP LOCKED" in retention[name]
        assert "/*{block:" not in retention[name]
    queries = sql.blocks("queries.sql")
    assert queries["get_delivery"].startswith(
        "SELECT " + ", ".join(rules.DELIVERY_ROW_COLUMNS) + "\n"
    )


def test_python_regex_translates_posix_classes() -> None:
    assert rules.python_regex("[^[:space:]?#]") == r"[^\s?#]"
    assert rules.python_regex("[[:cntrl:]]") == r"[\x00-\x1f\x7f]"


def test_transitions_render_every_allowed_move_once() -> None:
    rendered = rules.placeholders()["transitions"]
    pairs = re.findall(r"\('([a-z_]+)', '([a-z_]+)'\)", rendered)
    expected = [(old, new) for old, news in rules.TRANSITIONS.items() for new in news]
    assert sorted(pairs) == sorted((o.value, n.value) for o, n in expected)
    assert len(pairs) == len(set(pairs))


def test_requeue_moves_exactly_the_failed_statuses() -> None:
    """requeue_delivery moves FAILED_STATUSES to queued: the transition table agrees."""
    from email_delivery.models import DeliveryStatus as S

    assert {s for s in S if S.QUEUED in rules.TRANSITIONS[s]} == set(rules.FAILED_STATUSES)
