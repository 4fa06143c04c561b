"""Peers benchmark: one unit of work through this package and through two Postgres job queues.

    .venv/bin/python benchmarks/peers.py [--n 30000] [--tasks 16] [--connections 8] [--rounds 10]
                                         [--variants tracker,tracker-group,raw,pgqueuer,...]
                                         [--json] [--check]

The unit of work is N jobs, each: an idempotent enqueue, a claim, and marking it done. All
variants run in this one process, in alternating rounds (the order rotates every round), on
the same PostgreSQL server and database, with --tasks concurrent tasks over --connections
server connections in all:

- ``tracker``: ``DeliveryTracker`` over ``make_engine(url, pool_size=connections)``; per
  job ``enqueue`` -> ``claim`` -> ``mark_sent`` (three calls, three commits).
- ``tracker-group``: the same with ``DeliveryTracker(group_commit=True)``: concurrent calls
  of one kind share one statement and one commit (the batch functions), each caller still
  awaiting its own committed row; the full audit trail is written as before.
- ``raw``: an asyncpg pool (its per-release reset query off) running ``lifecycle.py``'s
  hand-written single statements with the same effect on the same ``email`` tables.
- ``pgqueuer``: --tasks producers call ``Queries.enqueue(..., dedupe_key=key,
  on_conflict="skip")`` while one ``QueueManager`` (its defaults: ``batch_size`` 10)
  consumes with a no-op entrypoint. One asyncpg pool (reset query off, as for ``raw``)
  serves producers and consumer, whose LISTEN connection is one of its --connections.
  Done is pgqueuer's own: the row is deleted and a ``successful`` row goes to
  ``pgqueuer_log`` (buffered, one statement per batch). The QueueManager folds that log
  into ``pgqueuer_statistics`` every 30 s; a round is shorter, so each round ends with that
  one ``aggregate_logs()`` call inside the measured window.
- ``procrastinate``: --tasks producers ``defer_async`` with a ``queueing_lock`` while one
  ``Worker(concurrency=tasks)`` runs a no-op task. Its ``PsycopgConnector`` pool, configured
  as its docs do, has --connections - 1 connections: the worker LISTENs on one of its own.
  Done is its own: the row is updated to ``succeeded`` (and kept: ``delete_jobs`` is never
  by default). Not in the default list: ``procrastinate-autocommit``, the same with
  autocommit connections (no BEGIN/COMMIT round trips).

A peer's consumer is stopped by its own no-op handler: the N-th call sets
``QueueManager.shutdown`` or calls ``Worker.stop()``; both finish their in-flight jobs and
flush before returning, and the round's clock stops once they have returned.

After each round the database is checked: all N jobs done, none twice, none left over (a
round that did less fails the benchmark). Before each round the variant's tables are
truncated and a ``CHECKPOINT`` runs, so every round starts from empty tables.

Per variant: jobs/s (median over rounds), WAL bytes per job (``pg_current_wal_insert_lsn()``
before and after the round's work: the insert position, as the write position may lag what
was generated), server CPU µs per job (user + system time of the
postmaster and all its children from ``/proc``, children it has reaped included; "n/a"
unless the server runs on this machine and its ``data_directory`` is readable), client CPU
µs per job (``getrusage(RUSAGE_SELF)``: producers and consumers all run in this process).

Without ``DATABASE_URL`` it starts the embedded PostgreSQL 18 with fsync and synchronous
commit on; with it, it uses that server (its role needs CREATEDB and CREATEROLE, and
superuser for ``CHECKPOINT`` and the server CPU). Either way it works in a scratch database
dropped at the end. The peers are the ``bench`` extra: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import logging
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import asyncpg
from lifecycle import LEASE, RAW_CLAIM, RAW_ENQUEUE, RAW_SENT, _no_reset, database, drive
from sqlalchemy.engine import make_url

from email_delivery import DeliveryTracker, make_engine, migrate

WORKFLOW = "verification-code"
METADATA = {"team_id": 42, "template": "v3"}
ENTRYPOINT = "deliver"
DEFAULT_VARIANTS = "tracker,tracker-group,raw,pgqueuer,procrastinate"
RATIOS = (
    ("tracker", "pgqueuer"),
    ("tracker", "raw"),
    ("tracker", "procrastinate"),
    ("tracker-group", "pgqueuer"),
    ("tracker-group", "raw"),
    ("tracker-group", "tracker"),
)
"""(mine, peer): the jobs/s ratios reported (issue 9's targets: tracker-group >= 1.5x pgqueuer;
tracker >= 0.8x raw)."""


class BenchmarkError(RuntimeError):
    """A variant did not do the whole unit of work, or did some of it twice."""


def expect(what: str, got: object, want: object) -> None:
    if got != want:
        raise BenchmarkError(f"{what}: {got!r}, expected {want!r}")


def dsn_of(url: str) -> str:
    """The libpq/asyncpg form of a SQLAlchemy URL (a ``?host=`` socket directory is kept)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def recipient(i: int) -> str:
    return f"user{i}@example.com"


def job_fields(key: str, i: int) -> dict[str, Any]:
    """What a peer's job carries: the same fields the tracker stores."""
    return {
        "delivery_id": key,
        "workflow": WORKFLOW,
        "recipient": recipient(i),
        "metadata": METADATA,
    }


async def produce_and_consume(
    consumer: Awaitable[None], producers: Awaitable[float], n: int
) -> None:
    """Run the consumer while the producers enqueue; wait for it to stop by itself after N
    jobs (failing a round slower than 20 jobs/s as stalled)."""
    task = asyncio.ensure_future(consumer)
    try:
        await producers
        await asyncio.wait_for(asyncio.shield(task), timeout=60 + n / 20)
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


# -- variants ----------------------------------------------------------------------------


class Variant(abc.ABC):
    """One way of doing the unit of work.

    ``setup`` installs its tables (once, before the rounds); ``run`` does N fresh jobs with
    ``tasks`` concurrent tasks over ``connections`` connections (its pools are opened by
    the first call and kept for the next ones); ``verify`` checks that the last run did
    every job exactly once; ``reset`` empties its tables; ``close`` closes its pools.
    """

    name: ClassVar[str]
    #: Distributions reported with this variant; the first one labels it in the table.
    packages: ClassVar[tuple[str, ...]] = ("email-delivery",)

    def __init__(self, url: str) -> None:
        self.url = url
        self.dsn = dsn_of(url)
        self.rounds = 0
        self.prefix = ""

    def new_keys(self, n: int) -> list[str]:
        """N ids no earlier run used."""
        self.rounds += 1
        self.prefix = f"{self.name}-r{self.rounds}"
        return self.keys(n)

    def keys(self, n: int) -> list[str]:
        return [f"{self.prefix}-{i}" for i in range(n)]

    def versions(self) -> dict[str, str]:
        return {p: importlib.metadata.version(p) for p in self.packages}

    @abc.abstractmethod
    async def setup(self) -> None: ...

    @abc.abstractmethod
    async def run(self, n: int, tasks: int, connections: int) -> None: ...

    @abc.abstractmethod
    async def verify(self, conn: asyncpg.Connection, n: int) -> None: ...

    @abc.abstractmethod
    async def reset(self, conn: asyncpg.Connection) -> None: ...

    async def close(self) -> None:
        return None


class AsyncpgPool:
    """An asyncpg pool of exactly ``connections``, its per-release reset query off (nothing
    here leaves session state behind), reopened when the size asked for changes."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.pool: asyncpg.Pool | None = None

    async def get(self, connections: int) -> asyncpg.Pool:
        if self.pool is None or self.pool.get_max_size() != connections:
            await self.close()
            self.pool = await asyncpg.create_pool(
                self.dsn, min_size=connections, max_size=connections, reset=_no_reset
            )
        return self.pool

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
            self.pool = None


class EmailSchema(Variant):
    """The variants on the package's ``email`` tables."""

    async def setup(self) -> None:
        await migrate.upgrade(self.url)  # a no-op the second time: tracker and raw share it

    async def verify(self, conn: asyncpg.Connection, n: int) -> None:
        rows = await conn.fetchrow(
            "SELECT count(*), count(*) FILTER (WHERE status = 'sent' AND attempts = 1),"
            " count(*) FILTER (WHERE delivery_id NOT LIKE $1) FROM email.deliveries",
            f"{self.prefix}-%",
        )
        expect(
            f"{self.name}: deliveries (all, sent at attempt 1, not this round's)",
            tuple(rows),
            (n, n, 0),
        )
        events = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE status = 'queued'),"
            " count(*) FILTER (WHERE status = 'in_progress'),"
            " count(*) FILTER (WHERE status = 'sent'),"
            " count(DISTINCT delivery_id) FILTER (WHERE status = 'sent'),"
            " count(*) FROM email.delivery_events"
        )
        expect(
            f"{self.name}: audit events (queued, in_progress, sent, deliveries sent, all)",
            tuple(events),
            (n, n, n, n, 3 * n),
        )

    async def reset(self, conn: asyncpg.Connection) -> None:
        await conn.execute(
            "TRUNCATE email.deliveries, email.delivery_attempts, email.delivery_outcomes, "
            "email.outcome_events, email.delivery_events CASCADE"
        )


class Tracker(EmailSchema):
    name = "tracker"
    group_commit = False

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.engine: Any = None
        self.tracker: DeliveryTracker | None = None

    async def open(self, connections: int) -> DeliveryTracker:
        if self.tracker is None or self.engine.pool.size() != connections:
            await self.close()
            self.engine = make_engine(self.url, pool_size=connections, max_overflow=0)
            self.tracker = DeliveryTracker(self.engine, group_commit=self.group_commit)
        return self.tracker

    async def run(self, n: int, tasks: int, connections: int) -> None:
        tracker = await self.open(connections)
        keys = self.new_keys(n)

        async def one(i: int) -> None:
            did = keys[i]
            await tracker.enqueue(did, workflow=WORKFLOW, recipient=recipient(i), metadata=METADATA)
            claim = await tracker.claim(did, lease=LEASE)
            if claim is None:
                raise BenchmarkError(f"{self.name}: the claim of new delivery {did} lost")
            await tracker.mark_sent(did, attempt=claim.attempt)

        await drive(list(range(n)), tasks, one)  # type: ignore[arg-type]

    async def close(self) -> None:
        if self.tracker is not None:
            await self.tracker.aclose()
            await self.engine.dispose()
            self.tracker = self.engine = None


class Raw(EmailSchema):
    name = "raw"
    packages = ("asyncpg", "email-delivery")

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.pool = AsyncpgPool(self.dsn)

    async def run(self, n: int, tasks: int, connections: int) -> None:
        pool = await self.pool.get(connections)
        keys = self.new_keys(n)
        metadata = json.dumps(METADATA)

        async def one(i: int) -> None:
            did = keys[i]
            await pool.fetchrow(RAW_ENQUEUE, did, WORKFLOW, recipient(i), metadata)
            if await pool.fetchrow(RAW_CLAIM, did, LEASE) is None:
                raise BenchmarkError(f"{self.name}: the claim of new delivery {did} lost")
            await pool.fetchrow(RAW_SENT, did, "")  # '' is no payload, as in mark_sent

        await drive(list(range(n)), tasks, one)  # type: ignore[arg-type]

    async def close(self) -> None:
        await self.pool.close()


class PgQueuer(Variant):
    name = "pgqueuer"
    packages = ("pgqueuer", "asyncpg")

    def __init__(self, url: str) -> None:
        from pgqueuer.domain.settings import DBSettings

        super().__init__(url)
        self.pool = AsyncpgPool(self.dsn)
        self.handled: list[str] = []
        settings = DBSettings()
        self.queue = settings.queue_table
        self.log = settings.queue_table_log
        self.statistics = settings.statistics_table

    async def setup(self) -> None:
        from pgqueuer import Queries

        conn = await asyncpg.connect(self.dsn)
        try:
            queries = Queries.from_asyncpg_connection(conn)
            if not await queries.schema_is_installed():
                await queries.install()
        finally:
            await conn.close()

    async def run(self, n: int, tasks: int, connections: int) -> None:
        from pgqueuer import Job, Queries, QueueManager

        pool = await self.pool.get(connections)
        keys = self.new_keys(n)
        queries = Queries.from_asyncpg_pool(pool)
        manager = QueueManager(queries)
        handled: list[str] = []
        self.handled = handled

        @manager.entrypoint(ENTRYPOINT)
        async def deliver(job: Job) -> None:  # the "send": nothing
            handled.append(json.loads(job.payload or b"{}")["delivery_id"])
            if len(handled) == n:
                manager.shutdown.set()

        async def one(i: int) -> None:
            payload = json.dumps(job_fields(keys[i], i)).encode()
            ids = await queries.enqueue(ENTRYPOINT, payload, dedupe_key=keys[i], on_conflict="skip")
            if ids[0] is None:
                raise BenchmarkError(f"{self.name}: new job {keys[i]} was deduplicated")

        producers = drive(list(range(n)), tasks, one)  # type: ignore[arg-type]
        await produce_and_consume(manager.run(), producers, n)
        await queries.aggregate_logs()

    async def verify(self, conn: asyncpg.Connection, n: int) -> None:
        expect(f"{self.name}: handler calls", len(self.handled), n)
        expect(f"{self.name}: jobs handled", set(self.handled), set(self.keys(n)))
        left = await conn.fetchval(f"SELECT count(*) FROM {self.queue}")
        expect(f"{self.name}: jobs left in {self.queue}", left, 0)
        rows = await conn.fetch(
            f"SELECT status::text, count(*), count(DISTINCT job_id) FROM {self.log}"
            " GROUP BY 1 ORDER BY 1"
        )
        expect(
            f"{self.name}: {self.log} (status, rows, jobs)",
            [tuple(r) for r in rows],
            [("picked", n, n), ("queued", n, n), ("successful", n, n)],
        )
        counted = await conn.fetchval(
            f"SELECT sum(count) FROM {self.statistics} WHERE status = 'successful'"
        )
        expect(f"{self.name}: successful jobs in {self.statistics}", counted, n)

    async def reset(self, conn: asyncpg.Connection) -> None:
        await conn.execute(f"TRUNCATE {self.queue}, {self.log}, {self.statistics}")

    async def close(self) -> None:
        await self.pool.close()


class Procrastinate(Variant):
    name = "procrastinate"
    packages = ("procrastinate", "psycopg", "psycopg-pool")
    #: More ``AsyncConnectionPool`` arguments: none, as procrastinate's docs configure it
    #: (each statement then runs in its own BEGIN ... COMMIT).
    pool_args: ClassVar[dict[str, Any]] = {}

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.app: Any = None
        self.task: Any = None
        self.worker: Any = None
        self.pool_size = 0
        self.handled: list[str] = []
        self.target = 0

    def make_app(self, pool_size: int) -> Any:
        import procrastinate

        # It warns that an App defined in __main__ cannot be imported by a worker process;
        # this worker runs in this process and finds the task in the App's registry.
        logging.getLogger("procrastinate.blueprints").setLevel(logging.ERROR)
        app = procrastinate.App(
            connector=procrastinate.PsycopgConnector(
                conninfo=self.dsn, min_size=pool_size, max_size=pool_size, **self.pool_args
            )
        )

        @app.task(name=ENTRYPOINT)
        async def deliver(**fields: Any) -> None:  # the "send": nothing
            self.handled.append(fields["delivery_id"])
            if len(self.handled) == self.target:
                self.worker.stop()

        self.task = deliver
        return app

    async def setup(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            installed = await conn.fetchval("SELECT to_regclass('procrastinate_jobs')")
        finally:
            await conn.close()
        if installed is None:
            app = self.make_app(1)
            async with app.open_async():
                await app.schema_manager.apply_schema_async()

    async def open(self, connections: int) -> Any:
        pool_size = max(1, connections - 1)  # the worker's LISTEN connection is the last one
        if self.app is None or self.pool_size != pool_size:
            await self.close()
            self.app = self.make_app(pool_size)
            await self.app.open_async()
            self.pool_size = pool_size
        return self.app

    async def run(self, n: int, tasks: int, connections: int) -> None:
        from procrastinate.exceptions import AlreadyEnqueued
        from procrastinate.worker import Worker

        app = await self.open(connections)
        keys = self.new_keys(n)
        self.handled, self.target = [], n
        self.worker = Worker(app, concurrency=tasks, install_signal_handlers=False)

        async def one(i: int) -> None:
            deferrer = self.task.configure(queueing_lock=keys[i])
            try:
                await deferrer.defer_async(**job_fields(keys[i], i))
            except AlreadyEnqueued:
                raise BenchmarkError(f"{self.name}: new job {keys[i]} was refused") from None

        producers = drive(list(range(n)), tasks, one)  # type: ignore[arg-type]
        await produce_and_consume(self.worker.run(), producers, n)

    async def verify(self, conn: asyncpg.Connection, n: int) -> None:
        expect(f"{self.name}: task calls", len(self.handled), n)
        expect(f"{self.name}: jobs handled", set(self.handled), set(self.keys(n)))
        rows = await conn.fetch(
            "SELECT status::text, count(*), count(DISTINCT queueing_lock)"
            " FROM procrastinate_jobs GROUP BY 1"
        )
        expect(
            f"{self.name}: procrastinate_jobs (status, rows, locks)",
            [tuple(r) for r in rows],
            [("succeeded", n, n)],
        )
        rows = await conn.fetch(
            "SELECT type::text, count(*), count(DISTINCT job_id) FROM procrastinate_events"
            " GROUP BY 1 ORDER BY 1"
        )
        expect(
            f"{self.name}: procrastinate_events (type, rows, jobs)",
            [tuple(r) for r in rows],
            [("deferred", n, n), ("started", n, n), ("succeeded", n, n)],
        )

    async def reset(self, conn: asyncpg.Connection) -> None:
        await conn.execute(
            "TRUNCATE procrastinate_jobs, procrastinate_events, procrastinate_periodic_defers,"
            " procrastinate_workers"
        )

    async def close(self) -> None:
        if self.app is not None:
            await self.app.close_async()
            self.app = None


async def _autocommit(connection: Any) -> None:
    await connection.set_autocommit(True)


class ProcrastinateAutocommit(Procrastinate):
    """procrastinate on autocommit connections: its statements are single statements, so
    only the BEGIN and COMMIT round trips go."""

    name = "procrastinate-autocommit"
    pool_args: ClassVar[dict[str, Any]] = {"configure": _autocommit}


class TrackerGroup(Tracker):
    """The tracker with group commit: concurrent calls of a kind share one statement and one
    commit (the batch functions, email.claim_deliveries …), the full audit trail still written."""

    name = "tracker-group"
    group_commit = True


#: Name -> variant: a new one is one more class and one more entry.
VARIANTS: dict[str, type[Variant]] = {
    v.name: v
    for v in (Tracker, TrackerGroup, Raw, PgQueuer, Procrastinate, ProcrastinateAutocommit)
}


# -- measurement -------------------------------------------------------------------------


def _stat(pid: int | str) -> list[str]:
    """/proc/<pid>/stat from its third field on (the command name, which may hold spaces,
    cut off): [1] is the parent, [11:15] utime, stime, cutime, cstime in clock ticks."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


class ServerCpu:
    """User + system CPU seconds of a local PostgreSQL server: the postmaster, its live
    children, and (through the postmaster's cutime and cstime) the children it reaped."""

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, postmaster: int) -> None:
        self.postmaster = postmaster

    @classmethod
    async def find(cls, conn: asyncpg.Connection) -> ServerCpu | None:
        """The server's postmaster when it runs on this machine (its ``postmaster.pid``
        names the parent of our backend), else None."""
        try:
            backend = await conn.fetchval("SELECT pg_backend_pid()")
            data_directory = await conn.fetchval("SELECT current_setting('data_directory')")
            parent = int(_stat(backend)[1])
            pid_file = Path(data_directory, "postmaster.pid")
            recorded = int((await asyncio.to_thread(pid_file.read_text)).split()[0])
        except (asyncpg.PostgresError, OSError, ValueError, IndexError):
            return None
        return cls(parent) if parent == recorded else None

    def seconds(self) -> float:
        ticks = sum(int(x) for x in _stat(self.postmaster)[11:15])
        parent = str(self.postmaster)
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                fields = _stat(entry.name)
            except (OSError, ValueError):
                continue  # gone meanwhile: it is in the postmaster's cutime now
            if fields[1] == parent:
                ticks += int(fields[11]) + int(fields[12])
        return ticks / self.TICK


def client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Totals:
    jobs: int = 0
    rates: list[float] = field(default_factory=list)
    seconds: float = 0.0
    wal_bytes: int = 0
    server_cpu: float | None = 0.0
    client_cpu: float = 0.0

    def result(self, versions: dict[str, str]) -> dict[str, Any]:
        server = None if self.server_cpu is None else round(self.server_cpu / self.jobs * 1e6)
        return {
            "versions": versions,
            "jobs": self.jobs,
            "seconds": round(self.seconds, 3),
            "jobs_per_s": round(statistics.median(self.rates), 1),
            "jobs_per_s_rounds": [round(r, 1) for r in self.rates],
            "wal_bytes_per_job": round(self.wal_bytes / self.jobs),
            "server_cpu_us_per_job": server,
            "client_cpu_us_per_job": round(self.client_cpu / self.jobs * 1e6),
        }


async def one_round(
    variant: Variant,
    n: int,
    args: argparse.Namespace,
    monitor: asyncpg.Connection,
    server: ServerCpu | None,
    totals: Totals | None,
) -> None:
    """Reset, run and verify one round of ``variant``; add its measurements to ``totals``."""
    await variant.reset(monitor)
    with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
        await monitor.execute("CHECKPOINT")
    lsn = await monitor.fetchval("SELECT pg_current_wal_insert_lsn()::text")
    server_before = server.seconds() if server else 0.0
    client_before = client_cpu()
    started = time.perf_counter()
    await variant.run(n, args.tasks, args.connections)
    elapsed = time.perf_counter() - started
    client_used = client_cpu() - client_before
    server_used = server.seconds() - server_before if server else None
    wal_bytes = await monitor.fetchval(
        "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1::text::pg_lsn)::bigint", lsn
    )
    await variant.verify(monitor, n)
    if totals is None:
        return
    totals.jobs += n
    totals.rates.append(n / elapsed)
    totals.seconds += elapsed
    totals.wal_bytes += wal_bytes
    totals.client_cpu += client_used
    if server_used is None or totals.server_cpu is None:
        totals.server_cpu = None
    else:
        totals.server_cpu += server_used


@contextlib.asynccontextmanager
async def scratch_database() -> AsyncIterator[tuple[str, str]]:
    """A new database on the benchmark's server (embedded or ``DATABASE_URL``), dropped
    at the end: the rounds truncate tables, so they never touch a database in use."""
    async with database() as (url, source):
        admin = await asyncpg.connect(dsn_of(url))
        name = f"email_delivery_peers_{os.getpid()}"
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield make_url(url).set(database=name).render_as_string(hide_password=False), source
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()


def check_variants(names: list[str]) -> None:
    """Unknown names and missing peers fail before any server starts."""
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        raise SystemExit(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    for name in names:
        for package in VARIANTS[name].packages:
            try:
                importlib.metadata.version(package)
            except importlib.metadata.PackageNotFoundError:
                raise SystemExit(
                    f"{name} needs {package}: .venv/bin/pip install -e '.[bench]'"
                ) from None


async def run(args: argparse.Namespace) -> dict[str, Any]:
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    check_variants(names)
    per_round = max(1, args.n // args.rounds)
    async with scratch_database() as (url, source):
        variants = [VARIANTS[name](url) for name in names]
        monitor = await asyncpg.connect(dsn_of(url))
        try:
            info = await monitor.fetchrow(
                "SELECT current_setting('server_version') AS version, current_setting('fsync')"
                " AS fsync, current_setting('synchronous_commit') AS synchronous_commit,"
                " current_setting('full_page_writes') AS full_page_writes"
            )
            server = await ServerCpu.find(monitor)
            for variant in variants:
                await variant.setup()
            for variant in variants:  # warm-up: pools, prepared statements, plpgsql plans
                await one_round(variant, min(200, per_round), args, monitor, None, None)
            totals = {v.name: Totals() for v in variants}
            for r in range(args.rounds):
                k = r % len(variants)
                for variant in variants[k:] + variants[:k]:
                    await one_round(variant, per_round, args, monitor, server, totals[variant.name])
                if not args.json:
                    print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
        finally:
            for variant in variants:
                await variant.close()
            await monitor.close()
    results = {v.name: totals[v.name].result(v.versions()) for v in variants}
    report: dict[str, Any] = {
        "benchmark": "peers",
        "n": per_round * args.rounds,
        "per_round": per_round,
        "tasks": args.tasks,
        "connections": args.connections,
        "rounds": args.rounds,
        "server": f"PostgreSQL {info['version']} ({source}), fsync={info['fsync']}, "
        f"synchronous_commit={info['synchronous_commit']}, "
        f"full_page_writes={info['full_page_writes']}",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}",
        "variants": results,
    }
    for mine, other in RATIOS:
        ratio = None
        if mine in results and other in results:
            ratio = round(results[mine]["jobs_per_s"] / results[other]["jobs_per_s"], 3)
        report[f"{mine}_vs_{other}".replace("-", "_")] = ratio
    return report


def print_table(report: dict[str, Any]) -> None:
    print(
        f"peers benchmark: {report['n']} jobs per variant (enqueue -> claim -> done), "
        f"{report['tasks']} tasks over {report['connections']} connections, "
        f"{report['rounds']} alternating rounds of {report['per_round']}"
    )
    print(f"server:  {report['server']}")
    print(f"machine: {report['machine']}\n")
    header = (
        "variant",
        "package",
        "seconds",
        "jobs/s",
        "rounds min-max",
        "WAL B/job",
        "server CPU µs/job",
        "client CPU µs/job",
    )
    rows = []
    for name, r in report["variants"].items():
        package, version = next(iter(r["versions"].items()))
        server = r["server_cpu_us_per_job"]
        rows.append(
            (
                name,
                f"{package} {version}",
                f"{r['seconds']:.1f}",
                f"{r['jobs_per_s']:,.0f}",
                f"{min(r['jobs_per_s_rounds']):,.0f}-{max(r['jobs_per_s_rounds']):,.0f}",
                f"{r['wal_bytes_per_job']:,}",
                "n/a" if server is None else f"{server:,}",
                f"{r['client_cpu_us_per_job']:,}",
            )
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    keys = [f"{mine}_vs_{other}".replace("-", "_") for mine, other in RATIOS]
    ratios = [f"{key} {report[key]:.3f}" for key in keys if report[key] is not None]
    if ratios:
        print("\njobs/s ratios: " + ", ".join(ratios))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=30_000, help="jobs per variant, all rounds")
    parser.add_argument("--tasks", type=int, default=16, help="concurrent tasks")
    parser.add_argument("--connections", type=int, default=8, help="server connections")
    parser.add_argument("--rounds", type=int, default=10, help="alternating rounds")
    parser.add_argument(
        "--variants", default=DEFAULT_VARIANTS, help=f"comma-separated, of: {', '.join(VARIANTS)}"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--check",
        action="store_true",
        help="smoke test: 2 rounds of 40 jobs, each done exactly once",
    )
    args = parser.parse_args(argv)
    if args.connections < 2:
        parser.error("--connections must be at least 2 (a peer's consumer LISTENs on one)")
    if args.check:
        args.n, args.rounds = 80, 2
    report = asyncio.run(run(args))
    if args.json:
        json.dump(report, sys.stdout)
        print()
    else:
        print_table(report)
    if args.check:
        print(
            f"check passed: {', '.join(report['variants'])} did every job exactly once",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
