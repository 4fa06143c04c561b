"""The change feed (``email.delivery_feed``, ``email_delivery.feed``, ``email-delivery feed``).

The gap race (``tests/support/feed_race.py``) is the guarantee: concurrent writers, one
transaction held open across their commits, a consumer paging meanwhile; the union of the
feed's pages is every event, once. The same race against the naive ``id > last_seen``
reader loses the held transaction's events: the test has teeth.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from email_delivery import feed, make_engine
from email_delivery.errors import InvalidInput, PermissionDenied
from tests.support.cluster import DASHBOARD_LOGIN, NOBODY_LOGIN, WORKER_LOGIN, Cluster
from tests.support.db import connect
from tests.support.feed_race import race

_ENQUEUE = "SELECT * FROM email.enqueue_delivery($1, 'welcome', 'a@example.com', '{}', NULL)"


@pytest.fixture
async def reader_engine(cluster: Cluster, database: str) -> AsyncIterator[AsyncEngine]:
    """The dashboard login (email_reader only)."""
    engine = make_engine(cluster.url(database, DASHBOARD_LOGIN), pool_size=3)
    yield engine
    await engine.dispose()


async def _read_all(
    engine: AsyncEngine, after: feed.Cursor | str, count: int, *, limit: int = 1000
) -> tuple[list[feed.FeedEvent], feed.Cursor]:
    """Page until ``count`` events were read. The server is shared: another session's open
    transaction may hold the feed back for a while (that is the feed's rule), so this waits
    for it, within a bound."""
    events: list[feed.FeedEvent] = []
    cursor = feed.Cursor.parse(after)
    async with asyncio.timeout(60):
        while len(events) < count:
            page = await feed.page(engine, after=str(cursor), limit=limit)
            events += page.events
            cursor = page.cursor
            if not page.events:
                await asyncio.sleep(0.05)
    return events, cursor


async def _enqueue(cluster: Cluster, database: str, *ids: str) -> None:
    async with connect(cluster, database, WORKER_LOGIN) as conn:
        for delivery_id in ids:
            await conn.fetch(_ENQUEUE, delivery_id)


@pytest.mark.parametrize("seed", [0, 1, 2])
async def test_the_feed_has_no_gaps_under_concurrent_writers(
    cluster: Cluster, database: str, seed: int
) -> None:
    result = await race(
        writer_dsn=cluster.dsn(database, WORKER_LOGIN),
        reader_dsn=cluster.dsn(database, DASHBOARD_LOGIN),
        reader="feed",
        seed=seed,
    )
    assert result.expected, "the race wrote nothing"
    assert result.held <= result.expected
    assert result.missing == set(), result.summary()
    assert result.duplicates == 0, result.summary()
    assert result.pages > 3


async def test_the_naive_id_reader_loses_the_late_commit(cluster: Cluster, database: str) -> None:
    """The same race, read by ``WHERE id > last_seen``: the held transaction's events were
    numbered first and committed last, behind the cursor. This is what the feed prevents."""
    result = await race(
        writer_dsn=cluster.dsn(database, WORKER_LOGIN),
        reader_dsn=cluster.dsn(database, DASHBOARD_LOGIN),
        reader="naive",
    )
    assert result.held and result.held <= result.missing, result.summary()
    assert result.duplicates == 0


async def test_pages_follow_each_other_in_commit_order(
    cluster: Cluster, database: str, reader_engine: AsyncEngine
) -> None:
    start = await feed.head(reader_engine)
    await _enqueue(cluster, database, "d-1", "d-2", "d-3")
    events, cursor = await _read_all(reader_engine, start, 3, limit=2)
    # one transaction each, committed in this order; pages of at most 2
    assert [event.delivery_id for event in events] == ["d-1", "d-2", "d-3"]
    assert [e.cursor for e in events] == sorted(e.cursor for e in events)
    again = await feed.page(reader_engine, after=cursor)
    assert again.events == () and again.cursor == cursor


async def test_an_open_transaction_holds_back_later_commits_and_a_rollback_never_shows(
    cluster: Cluster, database: str, reader_engine: AsyncEngine
) -> None:
    start = await feed.head(reader_engine)
    async with connect(cluster, database, WORKER_LOGIN) as held:
        transaction = held.transaction()
        await transaction.start()
        await held.fetch(_ENQUEUE, "held")
        await _enqueue(cluster, database, "later")
        # "later" is committed, but an older transaction is open: not readable yet.
        assert (await feed.page(reader_engine, after=start)).events == ()
        async with connect(cluster, database, WORKER_LOGIN) as doomed, doomed.transaction():
            await doomed.fetch(_ENQUEUE, "rolled-back")
            with pytest.raises(asyncpg.RaiseError):
                await doomed.execute("DO $$ BEGIN RAISE 'roll back'; END $$")
        await transaction.rollback()
    events, cursor = await _read_all(reader_engine, start, 1)
    assert [event.delivery_id for event in events] == ["later"]
    # Once every older transaction has ended, the rolled-back ones have nothing to show.
    await _enqueue(cluster, database, "marker")
    events, _ = await _read_all(reader_engine, cursor, 1)
    assert [event.delivery_id for event in events] == ["marker"]


async def test_bad_cursors_and_limits_are_refused_before_the_database(
    reader_engine: AsyncEngine,
) -> None:
    with pytest.raises(InvalidInput) as bad:
        await feed.page(reader_engine, after="12;DROP")
    assert bad.value.field == "after"
    with pytest.raises(InvalidInput) as big:
        await feed.page(reader_engine, limit=feed.MAX_LIMIT + 1)
    assert big.value.field == "limit"


async def test_a_login_without_email_reader_cannot_read_the_feed(
    cluster: Cluster, database: str
) -> None:
    engine = make_engine(cluster.url(database, NOBODY_LOGIN))
    try:
        with pytest.raises(PermissionDenied):
            await feed.page(engine)
    finally:
        await engine.dispose()
    async with connect(cluster, database, NOBODY_LOGIN) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT * FROM email.delivery_feed(0, 0, 10)")


async def _first(events: AsyncIterator[feed.FeedEvent]) -> feed.FeedEvent:
    async for event in events:
        return event
    raise AssertionError("the feed ended")


async def test_follow_wakes_on_notify(
    cluster: Cluster, database: str, reader_engine: AsyncEngine
) -> None:
    """Polling once an hour: only the NOTIFY of the commit can wake it within the bound."""
    start = await feed.head(reader_engine)
    follower = feed.follow(reader_engine, after=start, poll_interval=3600, listen=True)
    waiting = asyncio.create_task(_first(follower))
    await asyncio.sleep(0.3)  # the first (empty) read is done; it now waits
    await _enqueue(cluster, database, "woken")
    event = await asyncio.wait_for(waiting, 60)
    assert event.delivery_id == "woken"
    await follower.aclose()


async def test_follow_polls_where_listen_is_unavailable(
    cluster: Cluster, database: str, reader_engine: AsyncEngine
) -> None:
    start = await feed.head(reader_engine)
    follower = feed.follow(reader_engine, after=start, poll_interval=0.05, listen=False)
    waiting = asyncio.create_task(_first(follower))
    await _enqueue(cluster, database, "polled")
    event = await asyncio.wait_for(waiting, 60)
    assert event.delivery_id == "polled"
    await follower.aclose()


def test_the_cli_prints_events_and_the_next_cursor(
    cli: object, cluster: Cluster, database: str
) -> None:
    code, out, err = cli(database, "feed", "--since", "now", user=DASHBOARD_LOGIN)  # type: ignore[operator]
    assert code == 0 and out == ""
    cursor = err.split("next cursor: ")[1].split()[0]
    asyncio.run(_enqueue(cluster, database, "cli-1", "cli-2"))
    asyncio.run(_wait_readable(cluster, database, cursor, 2))
    code, out, err = cli(database, "feed", "--since", cursor, "--json", user=DASHBOARD_LOGIN)  # type: ignore[operator]
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["delivery_id"] for line in lines] == ["cli-1", "cli-2"]
    assert [line["status"] for line in lines] == ["queued", "queued"]
    code, out, err = cli(database, "feed", "--since", lines[0]["cursor"], user=DASHBOARD_LOGIN)  # type: ignore[operator]
    assert code == 0 and "cli-2" in out and "cli-1" not in out
    code, _, err = cli(database, "feed", "--since", "nonsense", user=DASHBOARD_LOGIN)  # type: ignore[operator]
    assert code == 2 and "--since" in err


async def _wait_readable(cluster: Cluster, database: str, cursor: str, count: int) -> None:
    engine = make_engine(cluster.url(database, DASHBOARD_LOGIN))
    try:
        await _read_all(engine, cursor, count)
    finally:
        await engine.dispose()


async def test_writers_notify_only_while_a_reader_is_registered(
    cluster: Cluster, database: str
) -> None:
    """A NOTIFY serialises commits cluster-wide: nobody pays for it while nobody listens."""
    heard: asyncio.Queue[str] = asyncio.Queue()
    async with connect(cluster, database, DASHBOARD_LOGIN) as listener:
        await listener.add_listener(feed.CHANNEL, lambda *args: heard.put_nowait(args[1]))
        await _enqueue(cluster, database, "unheard")
        await listener.execute("SELECT 1")  # a round trip: a pending notification arrives
        assert heard.empty()
        await listener.fetchval("SELECT email.feed_listener_heartbeat('1 minute')")
        await _enqueue(cluster, database, "heard")
        await asyncio.wait_for(heard.get(), 60)
        await listener.fetchval("SELECT email.feed_listener_stop()")
        async with connect(cluster, database) as owner:
            assert await owner.fetchval("SELECT count(*) FROM email.feed_listeners") == 0
        with pytest.raises(asyncpg.InvalidParameterValueError):
            await listener.fetchval("SELECT email.feed_listener_heartbeat('2 hours')")
    async with connect(cluster, database, DASHBOARD_LOGIN) as reader:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await reader.fetch("SELECT * FROM email.feed_listeners")
