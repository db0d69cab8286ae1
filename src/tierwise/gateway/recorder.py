"""Group commit: the gateway's ledger writes, off the event loop, one transaction for many requests.

The cascade writes a task's rows (task start, each attempt, the finish, budget settlements) as
it goes. In the gateway each becomes a :class:`~tierwise.ledger.rows.Row` queued per task, and
when the request is about to be answered its rows are handed to one writer thread, which
commits the rows of every request waiting at that moment in a single transaction — one fsync
for all of them. The request awaits that commit before its response leaves, so nothing is
acknowledged that is not durable, and the event loop never blocks on the database.

Budget reservations are the exception: a reservation must be checked atomically against every
process's spend *before* the attempt starts, so a reservation with limits is written at once
(a reservation without limits writes nothing at all).

**When the database cannot be reached** (:class:`~tierwise.errors.LedgerUnavailableError`)
the calls of the tasks in that commit were already made and paid for, so their rows go to this
process's spool file (:mod:`tierwise.ledger.spool`: appended and fsynced before the callers
are answered) and are replayed — before any newer rows, so a task's rows keep their order —
once the database answers again. The writer thread retries at most every ``retry_s``; while
rows wait in the spool, newer ones join them there.

**Health.** Every commit, replay or ping tells whether the database is usable; :meth:`ready`
answers from the last of them while it is younger than ``health_ttl_s`` and otherwise asks the
writer thread to ping (one ping at a time, however many requests ask), so that a request is
refused with a 503 *before* its upstream call when the database is down, without a query per
request under load. The writer thread also replays spool files left by processes that died
(at start and every ``orphans_every_s``) and releases budget reservations held past their TTL
(a replica killed mid-request leaves one), on a timer, whether or not requests arrive.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from tierwise.errors import LedgerError, LedgerUnavailableError
from tierwise.ledger import Ledger, Reservation

if TYPE_CHECKING:
    from tierwise.ledger.rows import Row
    from tierwise.ledger.spool import Spool
    from tierwise.records import AgreementRecord, AttemptRecord
    from tierwise.task import Decision, Task

__all__ = ["GroupCommitLedger"]

log = logging.getLogger("tierwise.gateway")

#: How often the idle writer thread wakes for its timers (replay, orphans, expired holds).
_TICK_S = 1.0


@dataclass(slots=True)
class _Commit:
    """One task's rows; the future (when someone waits) resolves once they are durable."""

    rows: list[Row]
    future: asyncio.Future[None] | None
    loop: asyncio.AbstractEventLoop | None


@dataclass(slots=True)
class _Probe:
    """A request to find out whether the database is usable now."""

    future: asyncio.Future[bool]
    loop: asyncio.AbstractEventLoop


class GroupCommitLedger:
    """The subset of :class:`~tierwise.ledger.Ledger` the cascade uses, with writes deferred.

    Call :meth:`flush` (awaitable) with a task id before answering its request.

    Args:
        ledger: the ledger written to.
        spool: where a paid call's rows go while the database is unreachable (``None``: such
            a commit fails, and the request with it).
        health_ttl_s: how long the last commit's or ping's verdict is trusted by :meth:`ready`.
        retry_s: how often the writer thread tries the database again while rows are spooled.
        orphans_every_s: how often spool files of dead processes are looked for.
        max_batch: at most this many tasks per transaction.
    """

    def __init__(
        self,
        ledger: Ledger,
        *,
        spool: Spool | None = None,
        health_ttl_s: float = 1.0,
        retry_s: float = 1.0,
        orphans_every_s: float = 30.0,
        max_batch: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ledger = ledger
        self.spool = spool
        self.health_ttl_s = health_ttl_s
        self.retry_s = retry_s
        self.orphans_every_s = orphans_every_s
        self.max_batch = max_batch
        self._clock = clock
        self._pending: dict[str, list[Row]] = {}
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Commit | _Probe | None] = queue.SimpleQueue()
        #: (usable, when it was last found out): the ledger was just opened
        self._health = (True, clock())
        self._probing: asyncio.Future[bool] | None = None
        self._retry_at = 0.0
        self._next_orphans = 0.0  # at start
        ttl = ledger.settings.reservation_ttl.total_seconds()
        self._sweep_every = max(1.0, min(60.0, ttl / 10))
        self._next_sweep = clock() + self._sweep_every
        self._closed = False
        #: transactions committed and tasks they carried (for metrics and tests)
        self.commits = 0
        self.flushed_tasks = 0
        #: tasks whose rows went to the spool, and tasks replayed from spool files, ever
        self.spooled_tasks = 0
        self.replayed_tasks = 0
        self._thread = threading.Thread(
            target=self._run, name="tierwise-ledger-writer", daemon=True
        )
        self._thread.start()

    # -- the Ledger methods the cascade calls ----------------------------------------------------

    def _defer(self, task_id: str, row: Row) -> None:
        with self._lock:
            self._pending.setdefault(task_id, []).append(row)

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
        row = self.ledger.row_of_task(
            task,
            decision,
            policy_revision=policy_revision,
            role=role,
            store_content=store_content,
        )
        self._defer(task.id, row)

    def record_attempt(self, attempt: AttemptRecord, *, store_content: bool) -> int:
        """Deferred until :meth:`flush`; returns 0 (no row id yet)."""
        row = self.ledger.row_of_attempt(attempt, store_content=store_content)
        self._defer(attempt.task_id, row)
        return 0

    def record_agreements(self, agreements: Sequence[AgreementRecord]) -> None:
        """Deferred until :meth:`flush` (a shadowed task's verdicts, under its id)."""
        for agreement in agreements:
            self._defer(agreement.task_id, self.ledger.row_of_agreement(agreement))

    def finish_task(self, task_id: str, **kwargs: Any) -> None:
        """Deferred until :meth:`flush`."""
        self._defer(task_id, self.ledger.row_of_finish(task_id, **kwargs))

    def reserve(
        self, task_id: str, limits: Mapping[str, Decimal], amount_usd: Decimal
    ) -> Reservation:
        """Written at once when there are limits: the check must be atomic across processes.

        Raises:
            BudgetExceededError: a scope would overrun.
            LedgerUnavailableError: the database cannot be reached (nothing is held).
        """
        if not limits:
            return Reservation(None, task_id, (), Decimal(amount_usd))
        try:
            return self.ledger.reserve(task_id, limits, amount_usd)
        except LedgerUnavailableError:
            self._note(False)
            raise

    def settle(self, reservation: Reservation, actual_usd: Decimal) -> None:
        """Deferred until :meth:`flush`."""
        if reservation.id is not None:
            self._defer(reservation.task_id, self.ledger.row_of_closing(reservation, actual_usd))

    def release(self, reservation: Reservation) -> None:
        """Deferred until :meth:`flush`."""
        if reservation.id is not None:
            self._defer(reservation.task_id, self.ledger.row_of_closing(reservation, None))

    # -- health --------------------------------------------------------------------------------

    @property
    def spooled(self) -> int:
        """Tasks in this process's spool file not yet written to the ledger."""
        return 0 if self.spool is None else self.spool.tasks

    @property
    def reachable(self) -> bool:
        """The last verdict on the database, however old (while it is down, the writer thread
        asks again every ``retry_s``)."""
        return self._health[0]

    def usable(self) -> bool | None:
        """The last verdict on the database while it is fresh, else ``None`` (unknown)."""
        ok, at = self._health
        return ok if self._clock() - at < self.health_ttl_s else None

    async def ready(self) -> bool:
        """Whether the database can take this request's rows (and reservations) now.

        Answered from the last commit, replay or ping when it is fresh; otherwise the writer
        thread pings the database (replaying the spool first, when rows wait there).
        """
        known = self.usable()
        if known is not None:
            return known
        probe = self._probing
        if probe is None or probe.done():
            loop = asyncio.get_running_loop()
            probe = self._probing = loop.create_future()
            self._queue.put(_Probe(probe, loop))
        return await asyncio.shield(probe)

    def _note(self, ok: bool) -> None:
        if not ok and self._health[0]:
            log.error("the ledger %s is unreachable", self.ledger.url)
        elif ok and not self._health[0]:
            log.warning("the ledger %s is reachable again", self.ledger.url)
        self._health = (ok, self._clock())  # one assignment: read whole from the event loop

    # -- committing ------------------------------------------------------------------------------

    async def flush(self, task_id: str) -> None:
        """Commit *task_id*'s queued rows (with whatever else is waiting); wait until durable:
        committed to the ledger, or — when the database cannot be reached — in the spool file.

        Raises:
            LedgerError: the rows could be neither committed nor spooled.
        """
        with self._lock:
            rows = self._pending.pop(task_id, None)
        if not rows:
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue.put(_Commit(rows, future, loop))
        await asyncio.shield(future)

    def flush_later(self, task_id: str) -> None:
        """Queue *task_id*'s rows for the next commit without waiting (nobody is answered)."""
        with self._lock:
            rows = self._pending.pop(task_id, None)
        if rows:
            self._queue.put(_Commit(rows, None, None))

    def _run(self) -> None:
        self._maintain()
        while True:
            try:
                item = self._queue.get(timeout=_TICK_S)
            except queue.Empty:
                self._maintain()
                continue
            if item is None:
                break
            batch = [item]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            commits = [i for i in batch if isinstance(i, _Commit)]
            try:
                if commits:
                    self._commit(commits)
            except Exception as exc:  # a bug: fail these requests, keep the thread
                log.exception("ledger commit failed")
                for item in commits:
                    self._resolve(item, exc)
            for probe in (i for i in batch if isinstance(i, _Probe)):
                self._answer_probe(probe)
            if stop:
                break
            self._maintain()
        self._retry_at = 0.0  # one last try, so that a healthy shutdown leaves no spool file
        self._replay_spool()

    def _commit(self, batch: list[_Commit]) -> None:
        if self.spooled and not self._replay_spool():
            self._to_spool(batch, None)  # older rows wait there: these queue up behind them
            return
        try:
            self.ledger.write_rows([row for item in batch for row in item.rows])
        except LedgerUnavailableError as exc:
            self._note(False)
            self._retry_at = self._clock() + self.retry_s
            self._to_spool(batch, exc)
            return
        except Exception:
            if len(batch) == 1:
                self._resolve(batch[0], _current_exception())
                return
            # One bad task must not lose the others' rows: commit each on its own.
            for item in batch:
                self._commit([item])
            return
        self._note(True)
        self.commits += 1
        self.flushed_tasks += len(batch)
        for item in batch:
            self._resolve(item, None)

    def _to_spool(self, batch: list[_Commit], cause: LedgerError | None) -> None:
        """Durably append *batch* to the spool, then answer its requests (or fail them)."""
        error: BaseException | None = None
        if self.spool is None:
            error = cause or LedgerUnavailableError("the ledger is unreachable")
        else:
            try:
                self.spool.append([item.rows for item in batch])
            except OSError as exc:
                error = LedgerError(
                    f"the ledger is unreachable ({cause}) and the rows could not be spooled "
                    f"to {self.spool.directory}: {exc}"
                )
                log.critical("%s", error)
            else:
                self.spooled_tasks += len(batch)
        for item in batch:
            self._resolve(item, error)

    def _replay_spool(self) -> bool:
        """Write the spooled rows to the ledger (at most every ``retry_s``); True when none wait."""
        spool = self.spool
        if spool is None or not spool.tasks:
            return True
        now = self._clock()
        if now < self._retry_at:
            return False
        self._retry_at = now + self.retry_s
        try:
            result = spool.replay(self.ledger)
        except LedgerUnavailableError:
            self._note(False)
            return False
        except OSError as exc:
            log.error("cannot replay the spool file %s: %s", spool.path, exc)
            return False
        self._note(True)
        self.replayed_tasks += result.tasks
        return True

    def _answer_probe(self, probe: _Probe) -> None:
        known = self.usable()
        if known is None:
            try:
                known = self._replay_spool() if self.spooled else self._ping()
            except Exception:  # never leave a waiting request hanging
                log.exception("ledger health check failed")
                known = False
        _call_soon(probe.loop, probe.future, known, None)

    def _ping(self) -> bool:
        try:
            self.ledger.ping()
        except LedgerError:
            self._note(False)
            return False
        self._note(True)
        return True

    def _maintain(self) -> None:
        """The writer thread's timers: replay the spool (or, with none, ping a database found
        down, so that its return is noticed without waiting for a request), take over
        orphaned spool files, release reservations held past their TTL."""
        try:
            self._timers()
        except Exception:  # a bug here must not stop the thread every commit depends on
            log.exception("ledger maintenance failed")

    def _timers(self) -> None:
        now = self._clock()
        if self.spooled:
            self._replay_spool()
        elif not self._health[0] and now >= self._retry_at:
            self._retry_at = now + self.retry_s
            self._ping()
        if self.spool is not None and now >= self._next_orphans:
            self._next_orphans = now + self.orphans_every_s
            self._replay_orphans()
        if now >= self._next_sweep:
            self._next_sweep = now + self._sweep_every
            try:
                self.ledger.release_expired()
            except LedgerError as exc:
                log.warning("could not release expired reservations: %s", exc)

    def _replay_orphans(self) -> None:
        from tierwise.ledger.spool import replay_orphans

        assert self.spool is not None
        try:
            result = replay_orphans(self.spool.directory, self.ledger, skip=self.spool.path)
        except LedgerUnavailableError:
            self._next_orphans = self._clock() + self.retry_s  # soon, once it is back
            return
        except OSError as exc:
            log.error("cannot replay spool files in %s: %s", self.spool.directory, exc)
            return
        self.replayed_tasks += result.tasks

    @staticmethod
    def _resolve(item: _Commit, error: BaseException | None) -> None:
        if item.future is None or item.loop is None:
            if error is not None:
                log.error("ledger write failed: %s", error)
            return
        _call_soon(item.loop, item.future, None, error)

    def close(self) -> None:
        """Commit everything still queued (even tasks never flushed), stop the writer thread,
        and release the spool file (deleted when empty)."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            leftovers = list(self._pending.values())
            self._pending.clear()
        for rows in leftovers:
            self._queue.put(_Commit(rows, None, None))
        self._queue.put(None)
        self._thread.join(timeout=30)
        if self.spool is not None and not self._thread.is_alive():
            self.spool.close()


def _call_soon(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    value: object,
    error: BaseException | None,
) -> None:
    """Resolve *future* on its loop from the writer thread."""

    def resolve() -> None:
        if future.done():
            return
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)

    try:
        loop.call_soon_threadsafe(resolve)
    except RuntimeError:  # the loop is closed: nobody waits any more
        if error is not None:
            log.error("ledger write failed: %s", error)


def _current_exception() -> BaseException:
    import sys

    exc = sys.exc_info()[1]
    assert exc is not None
    return exc
