"""Group commit: concurrent lifecycle calls of one kind become one statement and one commit.

On a busy worker, every call being its own transaction means one WAL flush per call, and a
statement's fixed costs (parse, plan, trigger set-up, commit) paid per delivery. A
``Batcher`` collects the calls of one kind (claim, mark_sent, …) that arrive while an
earlier statement of that kind is in flight, and sends them together to the batch form of
the lifecycle function (``email.claim_deliveries`` …): one row per call, exactly what the
single function would have returned had the calls run one after another (those that change
the row first, in arrival order). A lone call goes through the batch form too, so group
commit has one code path whatever the load.

- **Nothing is acknowledged before it is committed.** A caller's future is resolved only
  from the rows of a statement that returned, i.e. whose implicit transaction committed
  (``synchronous_commit`` decides durability, as for a single call).
- **No waiting when idle.** A call that finds fewer than ``max_inflight`` statements of its
  kind in flight is sent at once (after one turn of the event loop, so calls ready in the
  same turn share it); only under load do calls wait, and then for at most one statement.
- **Same errors as before.** Input is checked before a call joins a batch. If the batch
  statement fails (one caller's row breaks a rule the database checks, the connection
  drops), every call of that batch is run again on its own, so each caller gets its own
  result or its own error, and a good call never fails because of a bad neighbour.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from email_delivery.connector import Record

__all__ = ["Batcher", "GroupCommit"]

Fetch = Callable[..., Awaitable[list[Record]]]


@dataclass(frozen=True, kw_only=True)
class GroupCommit:
    """Settings of the tracker's group commit (``DeliveryTracker(group_commit=…)``)."""

    max_batch: int = 256
    """The most calls in one statement."""
    max_inflight: int = 2
    """Statements of one kind in flight at once; more calls wait and join the next batch."""


@dataclass(slots=True)
class _Call:
    args: tuple[Any, ...]
    future: asyncio.Future[Record | None]


class Batcher:
    """Coalesces calls of one kind into the batch statement ``batch_sql``.

    ``args`` of a call are the single statement's arguments after the delivery id; the batch
    statement takes one array per argument, the ids first, and returns rows in input order
    (none for an unknown id). ``single_sql`` runs one call on its own (the fallback)."""

    def __init__(
        self,
        fetch: Fetch,
        *,
        batch_sql: str,
        single_sql: str,
        settings: GroupCommit,
        shared: Sequence[int] = (),
    ) -> None:
        """``shared``: positions of ``args`` that are one scalar for the whole batch (the
        claim's lease): only calls with equal values share a batch."""
        self._fetch = fetch
        self._batch_sql = batch_sql
        self._single_sql = single_sql
        self._settings = settings
        self._shared = tuple(shared)
        self._pending: deque[_Call] = deque()
        self._inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, *args: Any) -> Record | None:
        """The row for this call (``None``: no such delivery), once committed."""
        future: asyncio.Future[Record | None] = asyncio.get_running_loop().create_future()
        self._pending.append(_Call(args, future))
        if self._inflight < self._settings.max_inflight:
            self._start()
        return await future

    def _start(self) -> None:
        self._inflight += 1
        task = asyncio.get_running_loop().create_task(self._flush())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush(self) -> None:
        try:
            await asyncio.sleep(0)  # calls made ready in this turn of the loop join in
            while self._pending:
                batch = self._take()
                await self._run(batch)
        finally:
            self._inflight -= 1
            if self._pending and self._inflight < self._settings.max_inflight:
                self._start()

    def _take(self) -> list[_Call]:
        first = self._pending.popleft()
        batch = [first]
        if not self._shared:
            while self._pending and len(batch) < self._settings.max_batch:
                batch.append(self._pending.popleft())
            return batch
        key = tuple(first.args[i] for i in self._shared)
        rest: deque[_Call] = deque()
        while self._pending:
            call = self._pending.popleft()
            same = tuple(call.args[i] for i in self._shared) == key
            if same and len(batch) < self._settings.max_batch:
                batch.append(call)
            else:
                rest.append(call)
        self._pending = rest
        return batch

    async def _run(self, batch: list[_Call]) -> None:
        live = [call for call in batch if not call.future.done()]  # skip cancelled callers
        if not live:
            return
        columns: list[Any] = [[call.args[0] for call in live]]
        width = len(live[0].args)
        for i in range(1, width):
            if i in self._shared:
                columns.append(live[0].args[i])
            else:
                columns.append([call.args[i] for call in live])
        try:
            rows = await self._fetch(self._batch_sql, *columns)
        except Exception:
            # Nothing of the batch was committed: each call runs again on its own and meets
            # its own result or error.
            await asyncio.gather(*(self._run_alone(call) for call in live))
            return
        by_id: dict[str, deque[Record]] = {}
        for row in rows:
            by_id.setdefault(row[0], deque()).append(row)
        for call in live:
            queue = by_id.get(call.args[0])
            row = queue.popleft() if queue else None
            if not call.future.done():
                call.future.set_result(row)

    async def _run_alone(self, call: _Call) -> None:
        try:
            rows = await self._fetch(self._single_sql, *call.args)
        except BaseException as exc:
            if not call.future.done():
                call.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        if not call.future.done():
            call.future.set_result(rows[0] if rows else None)

    async def aclose(self) -> None:
        """Wait for the statements in flight."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
