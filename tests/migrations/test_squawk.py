"""Every revision after 0003 passes squawk: safe to run on busy production tables.

squawk (the ``squawk-cli`` package of the dev extra) lints each revision's own offline SQL
(``tests/migrations/history/<rev>.up.sql``, the statements between env.py's preamble and the
version bookkeeping), so a revision must set ``lock_timeout`` and ``statement_timeout``
itself. What a revision may leave, and why, is listed here and nowhere else.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.migrations import record_history

FIRST_LINTED = "0004"

IGNORED: dict[str, dict[str, str]] = {
    "0005": {
        "ban-drop-function": (
            "guard_transition, touch_updated_at and record_delivery_event were trigger functions "
            "no client could execute (no EXECUTE grant); their triggers are replaced in the same "
            "transaction"
        ),
        "prefer-robust-stmts": (
            "ADD COLUMN runs inside the revision's transaction: a failure rolls it back whole, so "
            "the revision never runs twice over a half-applied state"
        ),
    },
    "0006": {
        "ban-alter-identity": (
            "the identity moves from the legacy table to the new partitioned one, its sequence "
            "continued past the highest id; only the owner's audit trigger inserts events"
        ),
        "ban-drop-constraint": (
            "the foreign key gives way to the statement-level purge trigger (same guarantee, "
            "set-based), and the primary key on id to one on (id, created_at) built "
            "concurrently beforehand and adopted with USING INDEX"
        ),
        "renaming-table": (
            "the swap itself: clients name email.delivery_events, which the new partitioned "
            "table takes in the same transaction"
        ),
        "renaming-object": "the legacy table's index takes the legacy name, freeing the head's",
        "prefer-bigint-over-int": (
            "attempt keeps the type of the column it continues (a partition's types must match)"
        ),
        "prefer-robust-stmts": (
            "the steps outside the transaction are idempotent (IF NOT EXISTS, and a DO block "
            "that adds the CHECK only once); squawk cannot see it through VALIDATE"
        ),
        "transaction-nesting": (
            "the COMMIT/BEGIN around the concurrent steps is Alembic's autocommit block"
        ),
        "ban-uncommitted-transaction": (
            "the revision's own statements end where Alembic commits its transaction"
        ),
    },
    "0008": {
        "ban-drop-function": (
            "the lifecycle functions return the delivery row, which gains two columns: each is "
            "dropped and created again with its grants in the same transaction, and the "
            "arguments of every call that worked before still work"
        ),
        "prefer-bigint-over-int": (
            "max_attempts and alert_dead_letters_per_hour count attempts and letters per hour "
            "(CHECKed to 1-100 and >= 0): a policy value, not a growing key"
        ),
        "prefer-robust-stmts": (
            "the columns, tables and constraints are added inside the revision's transaction "
            "(a failure rolls it back whole); the VALIDATE steps after it can be rerun as "
            "they are"
        ),
        "transaction-nesting": (
            "the COMMIT/BEGIN around the VALIDATE steps is Alembic's autocommit block"
        ),
        "ban-uncommitted-transaction": (
            "the revision's own statements end where Alembic commits its transaction"
        ),
    },
    "0009": {
        "require-concurrent-index-creation": (
            "only the offline script (alembic --sql, export-sql) builds the feed index with a "
            "plain CREATE INDEX: it cannot list the partitions to build each one concurrently. "
            "The online upgrade builds it ON ONLY the parent and CONCURRENTLY per partition"
        ),
        "require-concurrent-index-deletion": (
            "the BRIN on xact_id is an index of a partitioned table, which PostgreSQL cannot "
            "drop concurrently; dropping it is a catalog change under lock_timeout"
        ),
        "prefer-bigint-over-int": (
            "attempt counts (at most 8 per schedule) and HTTP status codes: never growing keys"
        ),
        "transaction-nesting": (
            "the COMMIT/BEGIN around the concurrent index steps is Alembic's autocommit block"
        ),
        "ban-uncommitted-transaction": (
            "the revision's own statements end where Alembic commits its transaction"
        ),
    },
    "0007": {
        "prefer-bigint-over-smallint": (
            "latency_bucket holds a histogram bucket number between -61 and 121 "
            "(rules.LATENCY_BUCKET_MIN/MAX): it can never outgrow 16 bits"
        ),
        "transaction-nesting": (
            "the COMMIT/BEGIN around the concurrent index steps is Alembic's autocommit block"
        ),
        "ban-uncommitted-transaction": (
            "the revision's own statements end where Alembic commits its transaction"
        ),
    },
    "0010": {
        "ban-drop-function": (
            "the four report functions gain optional provider facts (new parameters with "
            "defaults): each is dropped and created again with its grants in the same "
            "transaction, and every call that worked before still works"
        ),
        "prefer-bigint-over-int": (
            "attempt, reply_code (100-599), duration_ms, smtp_code (200-599) and the event "
            "count are CHECKed small values, never a growing key"
        ),
        "prefer-robust-stmts": (
            "the tables, indexes and column are added inside the revision's transaction (a "
            "failure rolls it back whole)"
        ),
        "require-concurrent-index-creation": (
            "every index is on a table created empty in the same transaction: nothing to "
            "scan, no writer to block"
        ),
    },
    "0011": {
        "require-enum-value-ordering": (
            "suppressed is appended last on purpose: the labels' order is DeliveryStatus's "
            "declared order, which autogenerate compares (op.add_enum_value appends)"
        ),
    },
    "0014": {
        "prefer-robust-stmts": (
            "the tables, columns and row level security are added inside the revision's "
            "transaction (a failure rolls it back whole); the concurrent index steps after it "
            "are IF NOT EXISTS and can be rerun as they are"
        ),
        "prefer-bigint-over-smallint": (
            "the histograms' bucket numbers lie between -61 and 121 "
            "(rules.LATENCY_BUCKET_MIN/MAX): they can never outgrow 16 bits"
        ),
        "transaction-nesting": (
            "the COMMIT/BEGIN around the concurrent index steps is Alembic's autocommit block"
        ),
        "ban-uncommitted-transaction": (
            "the revision's own statements end where Alembic commits its transaction"
        ),
    },
    "0016": {
        "prefer-bigint-over-smallint": (
            "the daily tier's latency_bucket holds the hourly rollups' bucket numbers, between "
            "-61 and 121 (rules.LATENCY_BUCKET_MIN/MAX): it can never outgrow 16 bits"
        ),
        "prefer-robust-stmts": (
            "the table, its row level security and the state's column are added inside the "
            "revision's transaction (a failure rolls it back whole)"
        ),
    },
    "0012": {
        "constraint-missing-not-valid": (
            "the two CHECKs are on email.workflow_policies, one row per configured workflow: "
            "validating them scans a handful of rows"
        ),
        "prefer-robust-stmts": (
            "the table, columns and constraints are added inside the revision's transaction "
            "(a failure rolls it back whole)"
        ),
    },
    "0015": {
        "ban-drop-constraint": (
            "the foreign keys of delivery_attempts, delivery_outcomes and outcome_events give "
            "way to the set-based reference check and purge triggers created before them in "
            "the same transaction (same guarantee both ways, one query per statement instead "
            "of one per deleted delivery)"
        ),
        "prefer-robust-stmts": (
            "the constraints are dropped inside the revision's transaction (a failure rolls "
            "it back whole, triggers included)"
        ),
    },
}
"""Per revision: squawk rules it may break, each with the reason it is safe."""


def _squawk() -> str:
    beside = Path(sys.executable).with_name("squawk")
    found = str(beside) if beside.exists() else shutil.which("squawk")
    if found is None:
        pytest.skip("squawk is not installed: pip install squawk-cli (the dev extra has it)")
    return found


@pytest.mark.parametrize(
    "revision_id",
    [rev for _, rev in record_history.revisions() if rev >= FIRST_LINTED],
)
def test_revision_passes_squawk(revision_id: str) -> None:
    script = record_history.snapshot(revision_id, "up")
    excluded = IGNORED.get(revision_id, {})
    command = [_squawk(), "--pg-version=15.0", str(script)]
    if excluded:
        command.append(f"--exclude={','.join(sorted(excluded))}")
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_ignored_rule_is_still_needed() -> None:
    """An entry of IGNORED that the revision no longer needs is removed, not kept."""
    squawk = _squawk()
    for revision_id, rules in IGNORED.items():
        script = record_history.snapshot(revision_id, "up")
        output = subprocess.run(
            [squawk, "--pg-version=15.0", str(script)], capture_output=True, text=True, check=False
        ).stdout
        for rule in rules:
            assert rule in output, f"{revision_id} no longer needs to ignore {rule}"
