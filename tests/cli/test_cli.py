"""Every ``email-delivery`` command against a real database, in-process: output, exit codes,
and the error paths a user meets (unreachable, not migrated, permission denied, unknown id)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from email_delivery import verify
from email_delivery.cli import main
from email_delivery.cli.common import parse_duration
from email_delivery.rules import LATENCY_RELATIVE_ERROR
from tests.support.cluster import NOBODY_LOGIN, OWNER, WORKER_LOGIN, Cluster
from tests.support.seed import ADA, D, M, Row, seed


@pytest.fixture(scope="module")
async def seeded_db(cluster: Cluster, template_database: str) -> AsyncIterator[str]:
    async with cluster.clone(template_database, "rc") as name:
        await seed(cluster, name)
        yield name


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert "(hint: " in lines[0]
    return lines[0]


async def test_status_table_and_json(cli, seeded_db: str) -> None:
    code, out, _ = cli(seeded_db, "status", "i2")
    assert code == 0
    assert "delivery_id" in out and "i2" in out and "sent" in out
    code, out, _ = cli(seeded_db, "status", "i2", "--json")
    document = json.loads(out)
    assert code == 0
    assert document["delivery_id"] == "i2"
    assert document["status"] == "sent" and document["attempts"] == 2
    assert document["sent_at"].endswith("+00:00")


async def test_history(cli, seeded_db: str) -> None:
    code, out, _ = cli(seeded_db, "history", "i2", "--json")
    assert code == 0
    events = json.loads(out)["events"]
    assert [e["status"] for e in events] == [
        "queued",
        "in_progress",
        "retrying",
        "in_progress",
        "sent",
    ]
    assert events[-1]["payload"] == {"smtp": "250 2.0.0 OK"}
    code, out, _ = cli(seeded_db, "history", "i2", "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [r["attempt"] for r in rows] == ["0", "1", "1", "2", "2"]
    code, out, _ = cli(seeded_db, "history", "i2")
    assert code == 0 and out.count("\n") == 2 + 5


async def test_find_pages_with_a_cursor(cli, seeded_db: str) -> None:
    code, out, _ = cli(
        seeded_db, "find", "--recipient", " ADA@example.com", "--limit", "4", "--json"
    )
    first = json.loads(out)
    assert code == 0
    assert [d["delivery_id"] for d in first["deliveries"]] == ["p1", "p5", "p3", "i1"]
    code, out, _ = cli(
        seeded_db,
        "find",
        "--recipient",
        ADA,
        "--limit",
        "4",
        "--cursor",
        first["next_cursor"],
        "--json",
    )
    second = json.loads(out)
    assert [d["delivery_id"] for d in second["deliveries"]] == ["i3", "i5"]
    assert second["next_cursor"] is None
    code, out, _ = cli(seeded_db, "find", "--recipient", ADA, "--limit", "4")
    assert code == 0 and "next_cursor: " in out and "p1" in out


async def test_stats_table_json_and_csv(cli, seeded_db: str) -> None:
    code, out, _ = cli(seeded_db, "stats", "--since", "24h", "--by", "workflow", "--json")
    document = json.loads(out)
    assert code == 0
    by = {w["workflow"]: w for w in document["workflows"]}
    assert by["invite"]["total"] == 4 and by["invite"]["latency_p50_s"] == pytest.approx(
        20.0, rel=LATENCY_RELATIVE_ERROR
    )
    assert by["password-reset"]["top_error_codes"] == [{"code": "SMTP_421", "count": 1}]
    assert document["bucket"] is None
    code, out, _ = cli(seeded_db, "stats", "--since", "2d", "--bucket", "day", "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0
    assert sum(int(r["total"]) for r in rows) == 10 and all(r["bucket"] for r in rows)
    code, out, _ = cli(seeded_db, "stats")
    assert code == 0
    assert out.splitlines()[0].split()[:3] == ["workflow", "total", "sent"]
    assert "SMTP_421:1, SMTP_550:1" in out


async def test_stuck_lists_idle_work(cli, seeded_db: str) -> None:
    code, out, _ = cli(seeded_db, "stuck", "--older-than", "10m", "--json")
    assert code == 0
    assert [d["delivery_id"] for d in json.loads(out)["deliveries"]] == ["i4", "p5", "p3"]
    code, out, _ = cli(seeded_db, "stuck", "--older-than", "1h")
    assert code == 0 and out.count("\n") == 2


async def test_stuck_reap_takes_back_an_expired_claim(
    cli, cluster: Cluster, database: str, caplog: pytest.LogCaptureFixture
) -> None:
    await seed(
        cluster,
        database,
        (
            Row("crashed", "invite", ADA, "in_progress", 1, 30 * M, 30 * M, attempted_ago=30 * M),
            Row("live", "invite", ADA, "in_progress", 1, M, M, attempted_ago=M),
        ),
    )
    code, out, _ = cli(database, "stuck", "--older-than", "10m", "--reap", "--json")
    document = json.loads(out)
    assert code == 0
    assert [d["delivery_id"] for d in document["deliveries"]] == ["crashed"]
    assert document["reaped"] == [{"delivery_id": "crashed", "status": "retrying", "attempts": 1}]
    code, out, _ = cli(database, "status", "live", "--json")
    assert json.loads(out)["status"] == "in_progress"
    assert not _logged_errors(caplog)


async def test_requeue(
    cli, cluster: Cluster, database: str, caplog: pytest.LogCaptureFixture
) -> None:
    await seed(cluster, database, (Row("dead", "invite", ADA, "dead_letter", 5, D, D),))
    code, out, _ = cli(database, "requeue", "dead", "--reason", "SMTP credentials fixed", "--json")
    assert code == 0
    assert json.loads(out) == {"delivery_id": "dead", "status": "queued", "changed": True}
    code, out, _ = cli(database, "requeue", "dead", "--reason", "again")
    assert code == 0 and out.startswith("not requeued dead: it is queued")
    code, _, err = cli(database, "requeue", "nope", "--reason", "x")
    assert code == 2 and "no delivery with id 'nope'" in _one_error_line(err)
    # The tracker's connections are closed before the command returns: no logged noise.
    assert not _logged_errors(caplog)


async def test_tracker_commands_fail_with_one_line(
    cli, database: str, empty_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    for args in (("requeue", "d1", "--reason", "x"), ("stuck", "--older-than", "10m", "--reap")):
        code, _, err = cli(empty_database, *args)
        assert code == 2 and "schema email is not migrated" in _one_error_line(err), args
    code, _, err = cli(database, "requeue", "d1", "--reason", "x", user=WORKER_LOGIN)
    assert code == 2 and "permission denied" in _one_error_line(err)
    code, _, err = cli(database, "stuck", "--older-than", "10m", "--reap", user=NOBODY_LOGIN)
    assert code == 2 and "permission denied" in _one_error_line(err)
    assert not _logged_errors(caplog)


def _logged_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname in {"ERROR", "CRITICAL"}]


async def test_prune_dry_run_then_for_real_with_a_progress_bar(
    cli, cluster: Cluster, database: str
) -> None:
    await seed(
        cluster,
        database,
        (
            *(
                Row(f"old{i}", "invite", ADA, "sent", 1, 100 * D, 100 * D, sent_after=M)
                for i in range(5)
            ),
            Row("young", "invite", ADA, "sent", 1, D, D, sent_after=M),
            Row("stuck", "invite", ADA, "queued", 0, 400 * D, 400 * D),
        ),
    )
    code, out, _ = cli(
        database, "prune", "--older-than", "90d", "--keep-failed", "365d", "--dry-run", "--json"
    )
    assert code == 0
    assert json.loads(out)["deleted_deliveries"] == 5
    code, out, err = cli(
        database, "prune", "--older-than", "90d", "--keep-failed", "365d", "--batch-size", "2"
    )
    assert code == 0
    assert "deleted deliveries   5" in out
    assert "pruning [" in err and "100% 5/5" in err
    code, out, _ = cli(database, "status", "stuck")
    assert code == 0
    code, _, err = cli(database, "prune", "--older-than", "90d", "--keep-failed", "30d")
    assert code == 2 and "keep_failed_for" in _one_error_line(err)


async def test_verify_passes_at_head_and_names_each_hand_made_drift(
    cli, cluster: Cluster, database: str
) -> None:
    code, out, _ = cli(database, "verify")
    assert (code, out) == (0, "ok: schema email is at head and as designed\n")
    owner = await asyncpg.connect(cluster.dsn(database))
    try:
        await owner.execute(
            "DROP POLICY delivery_events_email_reader_select ON email.delivery_events"
        )
        await owner.execute("ALTER TABLE email.deliveries DISABLE ROW LEVEL SECURITY")
        await owner.execute("GRANT SELECT ON email.delivery_stats_daily TO anon")
        await owner.execute("CREATE TABLE public.delivery_events (LIKE email.delivery_events)")
        # Another application's table of the same name is not ours.
        await owner.execute("CREATE TABLE public.deliveries (id int, address text)")
    finally:
        await owner.close()
    code, out, _ = cli(database, "verify")
    lines = out.strip().splitlines()
    assert code == 1
    assert len(lines) == 4, out
    assert "drift: create_entity 'PGPolicy: email.delivery_events_email_reader_select" in lines[0]
    assert "row level security is disabled on email.deliveries" in out
    assert "unexpected grant: SELECT on table/view email.delivery_stats_daily to anon" in out
    assert "object of ours in schema public: public.delivery_events" in out
    code, out, _ = cli(database, "verify", "--json")
    assert code == 1 and len(json.loads(out)["problems"]) == 4


async def test_migrate_upgrade_current_and_offline_sql(
    cli, empty_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    head = verify.head_revision()
    code, out, _ = cli(empty_database, "migrate", "current", "--json")
    assert code == 0 and json.loads(out) == {"current": None, "head": head, "at_head": False}
    code, _, err = cli(empty_database, "verify")
    assert code == 2 and "not migrated" in _one_error_line(err)
    code, out, _ = cli(empty_database, "migrate", "upgrade")
    assert code == 0
    code, out, _ = cli(empty_database, "migrate", "current")
    assert (code, out) == (0, f"{head} (head)\n")
    code, out, _ = cli(empty_database, "verify")
    assert code == 0
    code, out, _ = cli(empty_database, "migrate", "downgrade", "0002")
    code, out, _ = cli(empty_database, "migrate", "current")
    assert out == f"0002 (head is {head})\n"
    code, out, _ = cli(empty_database, "verify")
    assert code == 1 and "not at head" in out

    code, out, _ = cli(empty_database, "migrate", "upgrade", "--sql")
    assert code == 0 and "CREATE SCHEMA IF NOT EXISTS email" in out
    assert "WITH (security_invoker = true)" in out and out.rstrip().endswith("COMMIT;")
    code, out, _ = cli(empty_database, "migrate", "downgrade", "0002", "--sql")
    assert code == 0 and "DROP VIEW email.pending_deliveries" in out

    monkeypatch.chdir(tmp_path)
    code, out, _ = cli(empty_database, "export-sql")
    written = [Path(line) for line in out.strip().splitlines()]
    assert code == 0 and {path.parent for path in written} == {Path("supabase/migrations")}
    for index, path in enumerate(written, start=1):
        assert path.name.endswith(f"_email_delivery_{index:02d}.sql") and path.name[:14].isdigit()
    script = "".join((tmp_path / path).read_text() for path in written)
    assert "CREATE TABLE email.deliveries" in script
    assert not {"BEGIN;", "COMMIT;"} & {line.strip() for line in script.splitlines()}
    assert "INSERT INTO email.alembic_version (version_num) VALUES ('0001')" in script


async def test_errors_users_meet_are_one_line_with_exit_code_2(
    cli, seeded_db: str, empty_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = cli(seeded_db, "status", "no-such-id")
    assert code == 2 and "no delivery with id 'no-such-id'" in _one_error_line(err)
    code, _, err = cli(seeded_db, "history", "no-such-id")
    assert code == 2 and "no delivery" in _one_error_line(err)

    code, _, err = cli(empty_database, "stats")
    assert code == 2 and "schema email is not migrated" in _one_error_line(err)

    for args in (("stats",), ("status", "i1"), ("verify",)):
        code, _, err = cli(seeded_db, *args, user=NOBODY_LOGIN)
        assert code == 2 and "permission denied" in _one_error_line(err), args
    code, _, err = cli(seeded_db, "prune", user=WORKER_LOGIN)
    assert code == 2 and "permission denied" in _one_error_line(err)

    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/nothing")
    code = main(["stats"])
    assert code == 2
    monkeypatch.delenv("DATABASE_URL")
    code = main(["status", "x"])
    assert code == 2


def test_unreachable_and_missing_url_messages(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/nothing")
    assert main(["stats"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "cannot connect to 127.0.0.1:1/nothing" in line
    monkeypatch.delenv("DATABASE_URL")
    assert main(["find", "--recipient", ADA]) == 2
    assert "DATABASE_URL is not set" in _one_error_line(capsys.readouterr().err)
    with pytest.raises(SystemExit) as info:
        main(["stats", "--since", "yesterday"])
    assert info.value.code == 2
    assert "not a duration" in capsys.readouterr().err


def test_durations() -> None:
    assert parse_duration("10m").total_seconds() == 600
    assert parse_duration("1h30m").total_seconds() == 5400
    assert parse_duration("90d").days == 90
    assert parse_duration("2w").days == 14


async def test_exported_files_applied_as_the_supabase_cli_does_verify(
    cli, cluster: Cluster, empty_database: str, tmp_path: Path
) -> None:
    code, out, _ = cli(empty_database, "export-sql", "--directory", str(tmp_path))
    assert code == 0
    paths = [Path(line) for line in out.strip().splitlines()]
    assert [p.name for p in sorted(paths)] == [p.name for p in paths]  # applied in name order
    scripts = [p.read_text() for p in paths]
    assert any("CONCURRENTLY" in s for s in scripts)
    for script in scripts:
        statements = [line for line in script.splitlines() if line and not line.startswith("--")]
        if any("CONCURRENTLY" in line for line in statements):
            assert "".join(statements).count(";") == 1, script  # alone in its file
    owner = await asyncpg.connect(cluster.dsn(empty_database))
    try:
        for script in scripts:
            # One file, one implicit transaction: how the Supabase CLI applies it.
            await owner.execute(script)
    finally:
        await owner.close()
    code, out, _ = cli(empty_database, "verify")
    assert (code, out) == (0, "ok: schema email is at head and as designed\n")


async def test_verify_names_view_function_grant_and_type_drift(
    cli, cluster: Cluster, database: str
) -> None:
    owner = await asyncpg.connect(cluster.dsn(database))
    try:
        await owner.execute("ALTER VIEW email.pending_deliveries RESET (security_invoker)")
        await owner.execute(
            "CREATE OR REPLACE FUNCTION email.guard_delivery() RETURNS trigger "
            "LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$ BEGIN RETURN NEW; END $$"
        )
        await owner.execute("REVOKE SELECT ON email.delivery_events FROM email_reader")
        await owner.execute("GRANT EXECUTE ON FUNCTION email.guard_delivery() TO PUBLIC")
        await owner.execute(
            "ALTER TABLE email.delivery_events ALTER COLUMN error_code TYPE varchar(64)"
        )
        await owner.execute("CREATE VIEW email.extra AS SELECT 1 AS one")
    finally:
        await owner.close()
    code, out, _ = cli(database, "verify")
    lines = out.strip().splitlines()
    assert code == 1
    expected = [
        "drift: replace_or_revert_entity 'PGView: email.pending_deliveries'",
        "drift: replace_or_revert_entity 'PGFunction: email.guard_delivery()'",
        "drift: drop_entity 'PGView: email.extra'",
        "drift: modify_type 'email' 'delivery_events' 'error_code'",
        "grant missing: SELECT on table/view email.delivery_events to email_reader",
        "unexpected grant: EXECUTE on function email.guard_delivery() to PUBLIC",
        "view email.pending_deliveries lacks security_invoker = true",
    ]
    for fragment in expected:
        assert sum(fragment in line for line in lines) == 1, (fragment, out)
    assert len(lines) == len(expected), out


MARK_SENT_ARGS = "text, integer, jsonb, text, text, integer, integer"


async def test_verify_names_the_holes_of_a_weakened_security_design(
    cli, cluster: Cluster, database: str
) -> None:
    """What revision 0005 closed, reopened by hand, is reported one line each."""
    owner = await asyncpg.connect(cluster.dsn(database))
    superuser = await asyncpg.connect(
        cluster.dsn(database, make_url(cluster.server.admin_url).username or "postgres")
    )
    try:
        await owner.execute("GRANT INSERT ON email.delivery_events TO email_writer")
        await owner.execute("GRANT UPDATE (recipient) ON email.deliveries TO email_writer")
        await owner.execute("ALTER FUNCTION email.guard_delivery() SECURITY DEFINER")
        await owner.execute("ALTER FUNCTION email.claim_delivery(text, interval) RESET ALL")
        await superuser.execute("CREATE ROLE ed_verify_other NOLOGIN")
        await superuser.execute(
            f"ALTER FUNCTION email.mark_delivery_sent({MARK_SENT_ARGS}) OWNER TO ed_verify_other"
        )
        await superuser.execute(
            f'ALTER ROLE {WORKER_LOGIN} IN DATABASE "{database}" '
            "SET default_transaction_read_only = on"
        )
        code, out, _ = cli(database, "verify")
    finally:
        await superuser.execute(
            f"ALTER FUNCTION email.mark_delivery_sent({MARK_SENT_ARGS}) OWNER TO {OWNER}"
        )
        await superuser.execute("DROP ROLE ed_verify_other")
        await superuser.execute(f'ALTER ROLE {WORKER_LOGIN} IN DATABASE "{database}" RESET ALL')
        await owner.close()
        await superuser.close()
    assert code == 1
    for fragment in (
        "unexpected grant: INSERT on table/view email.delivery_events to email_writer",
        "unexpected grant: UPDATE (recipient) on table email.deliveries to email_writer",
        "function email.guard_delivery() runs as its owner (SECURITY DEFINER)",
        "function email.claim_delivery(p_delivery_id text, p_lease interval) lacks SET "
        "search_path=pg_catalog, pg_temp",
        "function email.mark_delivery_sent(p_delivery_id text, p_attempt integer, "
        "p_payload jsonb, p_provider text, p_provider_message_id text, p_reply_code integer, "
        "p_duration_ms integer) is owned by ed_verify_other",
        f"login {WORKER_LOGIN} has a default that breaks its connections",
    ):
        assert sum(fragment in line for line in out.splitlines()) == 1, (fragment, out)


async def test_maintain_rolls_up_and_silences_verify_warnings(cli, seeded_db: str) -> None:
    code, _, err = cli(seeded_db, "verify")
    assert code == 0 and "warning: the dashboards' rollups end" in err
    code, out, _ = cli(seeded_db, "maintain", "--json")
    report = json.loads(out)
    assert code == 0
    assert report["rollup_hours_added"] > 0 and report["default_partition_rows"] == 0
    assert set(report) == {
        "partitions_created",
        "rollup_hours_recomputed",
        "rollup_hours_added",
        "rolled_until",
        "covered_until",
        "default_partition_rows",
    }
    code, out, err = cli(seeded_db, "verify", "--json")
    assert code == 0 and json.loads(out)["warnings"] == [] and err == ""
    code, out, _ = cli(seeded_db, "maintain")
    assert code == 0 and "rollup hours added" in out
    code, _, err = cli(seeded_db, "maintain", "--partition-interval", "2 fortnights")
    assert code != 0 and "partition_interval" in _one_error_line(err)
