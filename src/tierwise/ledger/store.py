"""The ledger: every task and attempt with its exact cost, budgets, and gateway keys.

Each public write is one transaction, committed before the method returns, so an attempt is
committed — on disk on SQLite, flushed to the server's WAL on PostgreSQL — before the cascade
takes its next hop and before the caller sees a result.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from tierwise.errors import BudgetExceededError, LedgerError
from tierwise.ledger import budgets as _budgets
from tierwise.ledger import rollups as _rollups
from tierwise.ledger import rows as _rows
from tierwise.ledger.budgets import BudgetState, Reservation
from tierwise.ledger.core import LedgerCore, Tx, _utcnow
from tierwise.ledger.engine import (
    LedgerSettings,
    build_engine,
    display_url,
    ledger_url,
    parse_ledger_url,
    reason,
)
from tierwise.ledger.migrate import migrate
from tierwise.ledger.redact import Redactor, secret_values, storable
from tierwise.ledger.rows import Row, RowOp
from tierwise.ledger.schema import from_pico, policy_revisions, tasks
from tierwise.ledger.shadow import ShadowBook
from tierwise.ledger.sql import insert_ignore
from tierwise.ledger.statements import WriteStatements

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from tierwise.ledger.rollups import PruneProgress, PruneResult
    from tierwise.records import AttemptRecord
    from tierwise.task import Decision, Task

TASK_OUTCOMES = ("running", "accepted", "exhausted", "budget", "error")

log = logging.getLogger("tierwise.ledger")

#: How many expired reservations one sweep transaction releases.
_SWEEP_BATCH = 500


def open_ledger(
    url: str | Path,
    *,
    create: bool = True,
    now: Callable[[], datetime] | None = None,
    env: Mapping[str, str] | None = None,
) -> Ledger:
    """Open (and create and migrate, when needed) the ledger at *url*.

    Opening also releases budget reservations held past their time to live (left by a process
    that died mid-attempt; see :meth:`Ledger.release_expired`).

    Args:
        url: a file path or a SQLAlchemy URL (``sqlite:///path/ledger.db``,
            ``postgresql+psycopg://user@host/db?pool_size=10``); the options a URL may carry
            are listed in :mod:`tierwise.ledger.engine`.
        create: create a missing SQLite file; with ``False`` a missing file is an error.
        now: the clock for timestamps (aware UTC datetimes); tests inject one.
        env: environment whose secret-looking values are masked out of stored text
            (default ``os.environ`` at opening time).

    Raises:
        MissingDriverError: a Postgres URL without psycopg installed (also an ImportError).
        LedgerError: the ledger cannot be opened or migrated, or its schema is newer than
            this tierwise (the message names both revisions).
    """
    parsed, settings = parse_ledger_url(ledger_url(url))
    engine = build_engine(parsed, settings, create=create)
    try:
        migrate(engine, auto=settings.migrate == "auto")
        redactor = Redactor(secret_values(os.environ if env is None else env))
        ledger = Ledger(engine, now=now or _utcnow, redactor=redactor, settings=settings)
        try:
            ledger.release_expired()
        except LedgerError as exc:  # a read-only file or standby: reads still work
            log.warning("could not release expired reservations in %s: %s", ledger.url, exc)
    except LedgerError:
        engine.dispose()
        raise
    except sa.exc.SQLAlchemyError as exc:
        engine.dispose()
        where = display_url(engine.url)
        raise LedgerError(f"cannot open the ledger {where}: {reason(exc)}") from None
    return ledger


def _hour(now: datetime) -> datetime:
    return now.replace(minute=0, second=0, microsecond=0)


class Ledger(LedgerCore, ShadowBook):
    """A durable record of tasks and attempts, budget counters and gateway keys.

    Build it with :func:`open_ledger`. Thread-safe (each call takes its own pooled
    connection); several processes may share one SQLite file, and several hosts one
    PostgreSQL database. Close it, or use it as a context manager.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        now: Callable[[], datetime] = _utcnow,
        redactor: Redactor | None = None,
        settings: LedgerSettings | None = None,
    ) -> None:
        super().__init__(engine, now=now, redactor=redactor, settings=settings)
        self._revisions: set[str] = set()  # policy revisions known committed
        # sessions whose row this process committed during the hour _session_hour
        self._session_hour: datetime | None = None
        self._sessions: set[str] = set()
        self._sql: WriteStatements | None = None
        ttl = self._settings.reservation_ttl.total_seconds()
        #: how often reserve() sweeps expired reservations on its own (monotonic seconds)
        self._sweep_every = max(1.0, min(60.0, ttl / 10))
        self._next_sweep = time.monotonic() + self._sweep_every

    def _fit(self, values: dict[str, Any]) -> dict[str, Any]:
        """*values* as this backend can store them: PostgreSQL text cannot hold NUL, so a NUL in
        a text value is stored as U+FFFD (hashes and sizes are of the original text)."""
        if self._postgres:
            for key, value in values.items():
                if isinstance(value, str) and "\x00" in value:
                    values[key] = value.replace("\x00", "\ufffd")
        return values

    def _statements(self) -> WriteStatements:
        if self._sql is None:  # a race builds it twice, harmlessly
            self._sql = WriteStatements.build(self._engine.dialect)
        return self._sql

    # -- policy revisions, tasks, attempts -------------------------------------------------------

    def record_policy_revision(self, revision: str, policy_json: str, source: str | None) -> None:
        """Record the effective policy in force under *revision* (idempotent)."""
        with self._write() as tx:
            self._ensure_revision(tx, revision)
            c = policy_revisions.c
            tx.conn.execute(
                sa.update(policy_revisions)
                .where(c.revision == revision, c.policy_json.is_(None))
                .values(policy_json=policy_json, source=source)
            )

    def latest_policy(self, source: str) -> tuple[str, str] | None:
        """(revision, policy JSON) last recorded for the policy file at *source*, if any.

        What a gateway falls back to when that file has become unreadable.
        """
        c = policy_revisions.c
        with self._read() as conn:
            row = conn.execute(
                sa.select(c.revision, c.policy_json)
                .where(c.source == source, c.policy_json.is_not(None))
                .order_by(c.created_at.desc())
                .limit(1)
            ).first()
        return None if row is None else (str(row[0]), str(row[1]))

    def _ensure_revision(self, tx: Tx, revision: str) -> None:
        if revision in self._revisions:  # written and committed by this process already
            return
        insert_ignore(
            tx.conn,
            policy_revisions,
            ["revision"],
            {"revision": revision, "created_at": self._now()},
        )
        tx.on_commit.append(lambda: self._revisions.add(revision))

    def _touch_session(self, tx: Tx, session: str, now: datetime) -> None:
        """Upsert the session's row, unless this process committed it earlier this hour.

        ``sessions.last_seen_at`` is therefore exact to the hour, not to the task.
        """
        hour = _hour(now)
        if hour == self._session_hour and session in self._sessions:
            return
        values = self._fit({"id": session, "created_at": now, "last_seen_at": now})
        self._statements().touch_session.run(tx.cursor, values)

        def committed() -> None:
            if hour != self._session_hour:
                if self._session_hour is not None and hour < self._session_hour:
                    return  # a late commit from the previous hour
                self._session_hour, self._sessions = hour, set()
            self._sessions.add(session)

        tx.on_commit.append(committed)

    def begin_task(
        self,
        task: Task,
        decision: Decision,
        *,
        policy_revision: str,
        role: str,
        store_content: bool,
    ) -> None:
        """Record that *task* starts, with the routing decision and the policy in force.

        The prompt is kept as a SHA-256 and a size; its text only with *store_content*. The
        task's session row is written the first time this process sees the session in a given
        hour, so ``sessions.last_seen_at`` is exact to the hour.

        Raises:
            LedgerError: a task with this id is already in the ledger (give each run its own
                ``Task.id``), or the write failed.
        """
        now = self._now()
        values = self._task_values(task, decision, policy_revision, role, store_content, now)
        duplicate = LedgerError(
            f"task {task.id} is already in the ledger; each run needs its own task "
            "id, e.g. task.with_(id=uuid.uuid4().hex)"
        )
        try:
            self._insert_task(values)
        except LedgerError as failed:
            # The primary key refused the row (the only way this insert fails once the policy
            # revision is known); say so plainly instead of the driver's words.
            try:
                exists = self.task(task.id) is not None
            except LedgerError:  # the database is unreachable: report the write's own failure
                raise failed from None
            if exists:
                raise duplicate from None
            raise

    def _task_values(
        self,
        task: Task,
        decision: Decision,
        policy_revision: str,
        role: str,
        store_content: bool,
        now: datetime,
    ) -> dict[str, Any]:
        return _rows.task_values(
            task,
            decision,
            policy_revision=policy_revision,
            role=role,
            store_content=store_content,
            now=now,
            redact=self._redact,
        )

    def _insert_task(self, values: Mapping[str, Any], *, replay: bool = False) -> None:
        now: datetime = values["created_at"]
        policy_revision: str = values["policy_revision"]
        session: str | None = values["session_id"]
        row = self._fit(dict(values))
        # Only the task row itself, when the revision and session are known committed: a
        # single statement needs no savepoint.
        single = policy_revision in self._revisions and (
            not session or (session in self._sessions and self._session_hour == _hour(now))
        )
        with self._write(single=single and not replay) as tx:
            self._ensure_revision(tx, policy_revision)
            if session:
                self._touch_session(tx, session, now)
            if replay:  # written before, perhaps: keep what is there
                insert_ignore(tx.conn, tasks, ["id"], row)
            else:
                self._statements().insert_task.run(tx.cursor, row)

    def record_attempt(self, attempt: AttemptRecord, *, store_content: bool) -> int:
        """Write one attempt, replacing any earlier row for (task_id, attempt_no); return its id.

        Usage buckets, cost, verdicts and failure go in every row; the output as a SHA-256 and a
        size, its text only with *store_content*. Committed before returning.
        """
        row = self.row_of_attempt(attempt, store_content=store_content)
        return self._upsert_attempt(row.values)

    def _upsert_attempt(self, values: Mapping[str, Any]) -> int:
        statement = self._statements().upsert_attempt
        with self._write(single=True) as tx:
            row = statement.run(tx.cursor, self._fit(dict(values))).fetchone()
        return int(row[0])

    def finish_task(
        self,
        task_id: str,
        *,
        outcome: str,
        final_tier: str | None,
        cost_usd: Decimal,
        latency_s: float,
        attempts: int,
        output: str | None,
        store_content: bool,
    ) -> None:
        """Record how a task ended: ``accepted``, ``exhausted``, ``budget`` or ``error``.

        Raises:
            LedgerError: the task was never begun, or the write failed.
        """
        row = self.row_of_finish(
            task_id,
            outcome=outcome,
            final_tier=final_tier,
            cost_usd=cost_usd,
            latency_s=latency_s,
            attempts=attempts,
            output=output,
            store_content=store_content,
        )
        self._finish_task(row.values)

    def _finish_task(self, values: Mapping[str, Any]) -> None:
        statement = self._statements().finish_task
        with self._write(single=True) as tx:
            updated = statement.run(tx.cursor, self._fit(dict(values))).rowcount
        if updated != 1:
            raise LedgerError(f"task {values['b_id']} is not in the ledger; call begin_task first")

    # -- rows: writes as data (group commits and spool files) --------------------------------------

    def row_of_task(
        self,
        task: Task,
        decision: Decision,
        *,
        policy_revision: str,
        role: str,
        store_content: bool,
    ) -> Row:
        """What :meth:`begin_task` would write, as a :class:`Row` for :meth:`write_rows`."""
        values = self._task_values(
            task, decision, policy_revision, role, store_content, self._now()
        )
        return Row("task", task.id, values)

    def row_of_attempt(self, attempt: AttemptRecord, *, store_content: bool) -> Row:
        """What :meth:`record_attempt` would write, as a :class:`Row`."""
        values = _rows.attempt_values(
            attempt,
            store_content=store_content,
            now=self._now(),
            redact=self._redact,
            storable=storable,
        )
        return Row("attempt", attempt.task_id, values)

    def row_of_finish(
        self,
        task_id: str,
        *,
        outcome: str,
        final_tier: str | None,
        cost_usd: Decimal,
        latency_s: float,
        attempts: int,
        output: str | None,
        store_content: bool,
    ) -> Row:
        """What :meth:`finish_task` would write, as a :class:`Row`.

        Raises:
            ValueError: *outcome* is not one of :data:`TASK_OUTCOMES`.
        """
        if outcome not in TASK_OUTCOMES:
            raise ValueError(f"task outcome must be one of {TASK_OUTCOMES}, got {outcome!r}")
        values = _rows.finish_values(
            task_id,
            outcome=outcome,
            final_tier=final_tier,
            cost_usd=cost_usd,
            latency_s=latency_s,
            attempts=attempts,
            output=output,
            store_content=store_content,
            now=self._now(),
            redact=self._redact,
        )
        return Row("finish", task_id, values)

    @staticmethod
    def row_of_closing(reservation: Reservation, actual_usd: Decimal | None) -> Row:
        """Settling *reservation* at *actual_usd* (``None``: releasing it), as a :class:`Row`."""
        op: RowOp = "release" if actual_usd is None else "settle"
        values = _rows.closing_values(reservation, actual_usd or Decimal(0))
        return Row(op, reservation.task_id, values)

    def write_rows(self, rows: Iterable[Row], *, replay: bool = False) -> None:
        """Write *rows* in one transaction (joining an open :meth:`batch`), in order.

        With *replay* the rows may have been written before — a spool file replayed after a
        crash between the commit and the spool's truncation — and writing them again changes
        nothing: a task already in the ledger keeps its row (its end is written again, the
        same), attempts are upserted by (task, attempt number), a shadow agreement verdict by
        (task, the pair's attempt numbers) is written once, and a reservation already settled or
        released is left as it is.

        Raises:
            LedgerUnavailableError: the database cannot be reached; nothing was written.
            LedgerError: a row was refused (without *replay*: a task already in the ledger);
                nothing was written.
        """
        with self.batch():
            for row in rows:
                values = row.values
                if row.op == "task":
                    self._insert_task(values, replay=replay)
                elif row.op == "attempt":
                    self._upsert_attempt(values)
                elif row.op == "finish":
                    self._finish_task(values)
                elif row.op == "agreement":
                    self._insert_agreement(dict(values), replay=replay)
                else:
                    self._close_row(row, replay=replay)

    def _close_row(self, row: Row, *, replay: bool) -> None:
        values = row.values
        reservation = Reservation(
            int(values["id"]),
            row.task_id,
            tuple(values["scopes"]),
            from_pico(int(values["amount_pusd"])),
        )
        actual = from_pico(int(values["actual_pusd"]))
        state = "settled" if row.op == "settle" else "released"
        with self._write(single=True) as tx:
            _budgets.close(
                tx.conn, reservation, actual, state, self._now(), tx.deltas, replay=replay
            )

    # -- budgets -------------------------------------------------------------------------------

    def reserve(
        self, task_id: str, limits: Mapping[str, Decimal], amount_usd: Decimal
    ) -> Reservation:
        """Hold *amount_usd* against every scope in *limits*, atomically across processes.

        For each scope, spent + held + amount must stay within its limit; otherwise nothing
        changes. Holds left by dead processes never cause a refusal: when a scope would
        overrun, reservations past their time to live are released and the check runs again.
        Once a tenth of the TTL (at most a minute) has passed since the last sweep, a
        reservation also sweeps expired ones first.

        Raises:
            BudgetExceededError: some scope would overrun (the first one, in scope order).
        """
        if limits and self._shared_tx() is None and time.monotonic() >= self._next_sweep:
            self.release_expired()
        try:
            return self._reserve(task_id, limits, amount_usd)
        except BudgetExceededError:
            if self._shared_tx() is not None or not self.release_expired():
                raise
            return self._reserve(task_id, limits, amount_usd)

    def _reserve(
        self, task_id: str, limits: Mapping[str, Decimal], amount_usd: Decimal
    ) -> Reservation:
        shared = self._shared_tx()
        if shared is not None and shared.deltas:
            # Settlements earlier in this batch count before the check (outside the
            # reservation's savepoint, which may roll back).
            self._apply_deltas(shared)
        with self._write() as tx:
            return _budgets.reserve(tx.conn, task_id, limits, amount_usd, self._now())

    def _apply_deltas(self, tx: Tx) -> None:
        try:
            _budgets.apply(tx.conn, tx.deltas, self._now())
        except (sa.exc.SQLAlchemyError, self._driver_error) as exc:
            raise self.failure("ledger write failed", exc) from None
        tx.deltas.clear()

    def settle(self, reservation: Reservation, actual_usd: Decimal) -> None:
        """Replace a held reservation by the actual cost of the attempt.

        A reservation released meanwhile as expired is settled all the same: the cost is
        added to what its scopes spent.

        Raises:
            LedgerError: the reservation was already settled or released.
        """
        # one UPDATE (the counters change at commit): no savepoint needed inside a batch
        with self._write(single=True) as tx:
            _budgets.close(tx.conn, reservation, actual_usd, "settled", self._now(), tx.deltas)

    def release(self, reservation: Reservation) -> None:
        """Drop a held reservation without spending (the attempt cost nothing)."""
        with self._write(single=True) as tx:
            _budgets.close(tx.conn, reservation, Decimal(0), "released", self._now(), tx.deltas)

    def spent(self, scope: str) -> Decimal:
        """Spent plus held in *scope* (what the next reservation is checked against)."""
        state = self.budget(scope)
        return Decimal(0) if state is None else state.used_usd

    def budget(self, scope: str) -> BudgetState | None:
        """The counters of *scope*, ``None`` when nothing was reserved against it."""
        with self._read() as conn:
            return _budgets.state(conn, scope)

    def release_expired(self) -> int:
        """Release reservations held longer than the ledger's reservation TTL; return how many.

        A reservation lives for one attempt (seconds to minutes); one held past the TTL
        (``reservation_ttl`` on the URL, default 15 minutes) was left by a process that died.
        Called when the ledger opens and, once a tenth of the TTL has passed (at most a minute),
        by :meth:`reserve`; a long-running process (the gateway) may also call it on a timer.
        Safe to run from several processes at once: each reservation is released once.
        """
        return self.release_stale(self._settings.reservation_ttl)

    def release_stale(self, older_than: timedelta) -> int:
        """Release reservations held longer than *older_than*; return how many.

        Their state becomes ``expired``; a late settlement by their owner still counts.
        """
        self._next_sweep = time.monotonic() + self._sweep_every
        now = self._now()
        with self._read() as conn:  # usually none: then no write lock, no write at all
            if not _budgets.any_held_before(conn, now - older_than):
                return 0
        released = 0
        while True:
            with self._write() as tx:
                n = _budgets.expire(tx.conn, now - older_than, now, _SWEEP_BATCH, tx.deltas)
            released += n
            if n < _SWEEP_BATCH:
                return released

    # -- growth --------------------------------------------------------------------------------

    def prune(
        self,
        before: date,
        *,
        batch_size: int = 1000,
        dry_run: bool = False,
        progress: PruneProgress | None = None,
    ) -> PruneResult:
        """Delete tasks created before the UTC day *before*, keeping exact daily rollups.

        Each batch of up to *batch_size* tasks is added to ``daily_rollups`` and deleted, with
        its attempts, in one transaction: at any moment rollups plus remaining rows are the
        exact totals, even if pruning is interrupted. Then each pruned day's rollup rows are
        compacted, and closed reservations, budget counters of past days and tasks, and
        sessions without tasks, all older than *before*, are deleted. Tasks still running
        within the reservation TTL are kept.

        Args:
            before: the first UTC day to keep; not after today.
            batch_size: tasks per transaction.
            dry_run: count what would be pruned, change nothing.
            progress: called after each batch with (tasks done, tasks to do).

        Raises:
            ValueError: *before* is after today (UTC) or *batch_size* < 1.
        """
        now = self._now()
        if before > now.date():
            raise ValueError(f"--before must not be after today ({now.date()} UTC), got {before}")
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        keep_running_after = now - self._settings.reservation_ttl
        return _rollups.prune(
            self._write,
            self._read,
            before,
            keep_running_after=keep_running_after,
            batch_size=batch_size,
            dry_run=dry_run,
            progress=progress,
        )
