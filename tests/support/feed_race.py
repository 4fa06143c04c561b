"""The gap race: concurrent writers, one transaction held open across their commits, and a
consumer paging concurrently, with either the change feed or the naive ``id > last_seen``
reader. Used by ``tests/integration/test_feed.py``; run it alone to see both readers side by
side::

    DATABASE_URL=postgresql://… python -m tests.support.feed_race   # a database at head

(the writer and reader log in as the URL's user unless ``--writer``/``--reader`` say
otherwise; the race's deliveries are named ``gap-<run>-…``.)

What makes the naive reader lose, deterministically: the held transaction writes its events
first (so they get the lowest ids), then every other writer commits, the consumer pages
past them (its ``last_seen`` passes the held ids), and only then does the held transaction
commit. Its events land behind the cursor: the naive reader never sees them. The feed holds
every event of a transaction at or above its snapshot's xmin back until that transaction
has ended, so it reads the held events after their commit, in order.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import sys
import time
from dataclasses import dataclass, field

import asyncpg

READERS = ("feed", "naive")

_ENQUEUE = "SELECT * FROM email.enqueue_delivery($1, $2, $3, '{}'::jsonb, NULL)"
_XID = "SELECT pg_current_xact_id()::text::bigint"
_XMIN = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
_NAIVE = (
    "SELECT 0::bigint AS xact_id, id, delivery_id FROM email.delivery_events "
    "WHERE id > $2 AND $1::bigint IS NOT NULL ORDER BY id LIMIT $3"
)
_FEED = "SELECT xact_id, id, delivery_id FROM email.delivery_feed($1, $2, $3)"


@dataclass
class RaceResult:
    reader: str
    expected: set[int]
    seen: list[int] = field(default_factory=list)
    pages: int = 0
    held: set[int] = field(default_factory=set)

    @property
    def missing(self) -> set[int]:
        return self.expected - set(self.seen)

    @property
    def duplicates(self) -> int:
        return len(self.seen) - len(set(self.seen))

    def summary(self) -> str:
        lost_held = len(self.missing & self.held)
        return (
            f"{self.reader:>5} reader: {len(self.expected)} events written, "
            f"{len(set(self.seen))} read in {self.pages} pages, {len(self.missing)} missing "
            f"({lost_held} of the {len(self.held)} held-transaction events), "
            f"{self.duplicates} duplicates"
        )


async def race(
    *,
    writer_dsn: str,
    reader_dsn: str,
    reader: str,
    writers: int = 8,
    transactions: int = 20,
    page_size: int = 20,
    seed: int = 0,
    timeout: float = 120.0,  # noqa: ASYNC109 - a bound on the whole race, for the test
) -> RaceResult:
    if reader not in READERS:
        raise ValueError(f"reader must be one of {READERS}")
    prefix = f"gap-{secrets.token_hex(4)}-"
    rng = random.Random(seed)
    held_written = asyncio.Event()
    release_held = asyncio.Event()
    writers_done = asyncio.Event()
    paged_past = asyncio.Event()
    all_committed = asyncio.Event()
    xids: list[int] = []
    held_ids: set[int] = set()

    async def write(number: int) -> None:
        conn = await asyncpg.connect(writer_dsn)
        try:
            for t in range(transactions):
                async with conn.transaction():
                    xids.append(await conn.fetchval(_XID))
                    for step in range(rng.randint(1, 3)):
                        await conn.fetch(
                            _ENQUEUE, f"{prefix}w{number}-{t}-{step}", "gap-race", "r@example.com"
                        )
                        await asyncio.sleep(rng.random() * 0.004)
        finally:
            await conn.close()

    async def hold() -> None:
        conn = await asyncpg.connect(writer_dsn)
        try:
            async with conn.transaction():
                xids.append(await conn.fetchval(_XID))
                for step in range(3):
                    row = await conn.fetchrow(
                        _ENQUEUE, f"{prefix}held-{step}", "gap-race", "r@example.com"
                    )
                    assert row is not None
                held_ids.update(
                    r["id"]
                    for r in await conn.fetch(
                        "SELECT id FROM email.delivery_events WHERE delivery_id LIKE $1",
                        f"{prefix}held-%",
                    )
                )
                held_written.set()
                await release_held.wait()
        finally:
            await conn.close()

    result = RaceResult(reader=reader, expected=set())

    async def consume() -> None:
        conn = await asyncpg.connect(reader_dsn)
        try:
            if reader == "feed":
                head = await conn.fetchrow("SELECT xact_id, id FROM email.delivery_feed_head()")
                cursor = (head["xact_id"], head["id"])
            else:
                cursor = (
                    0,
                    await conn.fetchval("SELECT coalesce(max(id), 0) FROM email.delivery_events"),
                )
            pages_after_writers = 0
            while True:
                horizon_passed = all_committed.is_set() and (
                    reader == "naive" or await conn.fetchval(_XMIN) > max(xids)
                )
                rows = await conn.fetch(_FEED if reader == "feed" else _NAIVE, *cursor, page_size)
                result.pages += 1
                for row in rows:
                    if row["delivery_id"].startswith(prefix):
                        result.seen.append(row["id"])
                if rows:
                    cursor = (rows[-1]["xact_id"], rows[-1]["id"])
                if writers_done.is_set():
                    pages_after_writers += 1
                    if pages_after_writers >= 3:
                        paged_past.set()
                if horizon_passed and not rows:
                    return
                await asyncio.sleep(0.001)
        finally:
            await conn.close()

    async def orchestrate() -> None:
        consumer = asyncio.create_task(consume())
        holder = asyncio.create_task(hold())
        await held_written.wait()
        await asyncio.gather(*(write(n) for n in range(writers)))
        writers_done.set()
        await paged_past.wait()
        release_held.set()
        await holder
        all_committed.set()
        await consumer

    started = time.monotonic()
    await asyncio.wait_for(orchestrate(), timeout)
    conn = await asyncpg.connect(writer_dsn)
    try:
        rows = await conn.fetch(
            "SELECT id FROM email.delivery_events WHERE delivery_id LIKE $1", f"{prefix}%"
        )
    finally:
        await conn.close()
    result.expected = {row["id"] for row in rows}
    result.held = held_ids
    del started
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writer", help="DSN of a login in email_writer (default DATABASE_URL)")
    parser.add_argument("--reader", help="DSN of a login in email_reader (default DATABASE_URL)")
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--transactions", type=int, default=20)
    parser.add_argument("--page-size", type=int, default=20)
    args = parser.parse_args(argv)
    url = os.environ.get("DATABASE_URL", "")
    writer = args.writer or url
    reader = args.reader or url
    if not writer or not reader:
        parser.error("set DATABASE_URL or give --writer and --reader")
    for name in READERS[::-1]:
        result = asyncio.run(
            race(
                writer_dsn=writer,
                reader_dsn=reader,
                reader=name,
                writers=args.writers,
                transactions=args.transactions,
                page_size=args.page_size,
            )
        )
        print(result.summary())
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
