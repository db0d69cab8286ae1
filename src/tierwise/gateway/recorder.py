"""Group commit: the gateway's ledger writes, off the event loop, one transaction for many requests.

The cascade writes a task's rows (task start, each attempt, the finish, budget settlements) as
it goes. In the gateway those writes are queued per task instead, and when the request is about
to be answered its queue is handed to one writer thread, which commits the queues of every
request waiting at that moment in a single :meth:`~tierwise.ledger.Ledger.batch` transaction —
one fsync for all of them. The request awaits that commit before its response leaves, so
nothing is acknowledged that is not on disk, and the event loop never blocks on SQLite.

Budget reservations are the exception: a reservation must be checked atomically against every
process's spend *before* the attempt starts, so a reservation with limits is written at once
(a reservation without limits writes nothing at all).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from tierwise.ledger import Ledger, Reservation

if TYPE_CHECKING:
    from tierwise.cascade.result import AttemptRecord
    from tierwise.records import AgreementRecord
    from tierwise.task import Decision, Task

__all__ = ["GroupCommitLedger"]

log = logging.getLogger("tierwise.gateway")

_Op = Callable[[], None]
_Item = tuple[list[_Op], "asyncio.Future[None] | None", "asyncio.AbstractEventLoop | None"]


class GroupCommitLedger:
    """The subset of :class:`~tierwise.ledger.Ledger` the cascade uses, with writes deferred.

    Call :meth:`flush` (awaitable) with a task id before answering its request.
    """

    def __init__(self, ledger: Ledger, *, max_batch: int = 256) -> None:
        self.ledger = ledger
        self.max_batch = max_batch
        self._pending: dict[str, list[_Op]] = {}
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._run, name="tierwise-ledger-writer", daemon=True
        )
        self._thread.start()
        self._closed = False
        #: transactions committed and tasks they carried (for metrics and tests)
        self.commits = 0
        self.flushed_tasks = 0

    # -- the Ledger methods the cascade calls ----------------------------------------------------

    def _defer(self, task_id: str, op: _Op) -> None:
        with self._lock:
            self._pending.setdefault(task_id, []).append(op)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """What :meth:`Ledger.batch` promises — one commit — holds already: writes are deferred."""
        yield

    def record_policy_revision(self, revision: str, policy_json: str, source: str | None) -> None:
        """Written at once (rare: once per cascade)."""
        self.ledger.record_policy_revision(revision, policy_json, source)

    def begin_task(
        self,
        task: Task,
        decision: Decision,
        *,
        policy_revision: str,
        role: str,
        store_content: bool,
    ) -> None:
        """Deferred until :meth:`flush`."""
        self._defer(
            task.id,
            lambda: self.ledger.begin_task(
                task,
                decision,
                policy_revision=policy_revision,
                role=role,
                store_content=store_content,
            ),
        )

    def record_attempt(self, attempt: AttemptRecord, *, store_content: bool) -> int:
        """Deferred until :meth:`flush`; returns 0 (no row id yet)."""
        self._defer(
            attempt.task_id,
            lambda: _discard(self.ledger.record_attempt(attempt, store_content=store_content)),
        )
        return 0

    def record_agreements(self, agreements: Sequence[AgreementRecord]) -> None:
        """Deferred until :meth:`flush` (a shadowed task's verdicts, under its id)."""
        if agreements:
            rows = list(agreements)
            self._defer(rows[0].task_id, lambda: self.ledger.record_agreements(rows))

    def finish_task(self, task_id: str, **kwargs: Any) -> None:
        """Deferred until :meth:`flush`."""
        self._defer(task_id, lambda: self.ledger.finish_task(task_id, **kwargs))

    def reserve(
        self, task_id: str, limits: Mapping[str, Decimal], amount_usd: Decimal
    ) -> Reservation:
        """Written at once when there are limits: the check must be atomic across processes."""
        if not limits:
            return Reservation(None, task_id, (), Decimal(amount_usd))
        return self.ledger.reserve(task_id, limits, amount_usd)

    def settle(self, reservation: Reservation, actual_usd: Decimal) -> None:
        """Deferred until :meth:`flush`."""
        if reservation.id is not None:
            self._defer(reservation.task_id, lambda: self.ledger.settle(reservation, actual_usd))

    def release(self, reservation: Reservation) -> None:
        """Deferred until :meth:`flush`."""
        if reservation.id is not None:
            self._defer(reservation.task_id, lambda: self.ledger.release(reservation))

    # -- committing ------------------------------------------------------------------------------

    async def flush(self, task_id: str) -> None:
        """Commit *task_id*'s queued writes (with whatever else is waiting); wait until on disk.

        Raises:
            LedgerError: the commit failed.
        """
        with self._lock:
            ops = self._pending.pop(task_id, None)
        if not ops:
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue.put((ops, future, loop))
        await asyncio.shield(future)

    def flush_later(self, task_id: str) -> None:
        """Queue *task_id*'s writes for the next commit without waiting (nobody is answered)."""
        with self._lock:
            ops = self._pending.pop(task_id, None)
        if ops:
            self._queue.put((ops, None, None))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._commit(batch)
                    return
                batch.append(more)
            self._commit(batch)

    def _commit(self, batch: list[_Item]) -> None:
        try:
            with self.ledger.batch():
                for ops, _, _ in batch:
                    for op in ops:
                        op()
        except Exception:
            if len(batch) == 1:
                self._settle(batch[0], _current_exception())
                return
            # One bad task must not lose the others' rows: commit each on its own.
            for item in batch:
                self._commit([item])
            return
        self.commits += 1
        self.flushed_tasks += len(batch)
        for item in batch:
            self._settle(item, None)

    @staticmethod
    def _settle(item: _Item, error: BaseException | None) -> None:
        _, future, loop = item
        if future is None or loop is None:
            if error is not None:
                log.error("ledger write failed: %s", error)
            return

        def resolve() -> None:
            if future.done():
                return
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

        try:
            loop.call_soon_threadsafe(resolve)
        except RuntimeError:  # the loop is closed: nobody waits any more
            if error is not None:
                log.error("ledger write failed: %s", error)

    def close(self) -> None:
        """Commit everything still queued (even tasks never flushed), stop the writer thread."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            leftovers = list(self._pending.values())
            self._pending.clear()
        for ops in leftovers:
            self._queue.put((ops, None, None))
        self._queue.put(None)
        self._thread.join(timeout=30)


def _discard(_: object) -> None:
    return None


def _current_exception() -> BaseException:
    import sys

    exc = sys.exc_info()[1]
    assert exc is not None
    return exc
