"""The ledger's transactions, lifecycle, reads and gateway keys; :class:`~.store.Ledger` adds
the task, attempt and budget writes on top.

One write transaction per public write (or per :meth:`LedgerCore.batch`), committed before the
method returns. On SQLite it opens with ``BEGIN IMMEDIATE``; on PostgreSQL a failed statement
aborts the whole transaction, so inside a batch every write — even a single statement — runs
under its own SAVEPOINT there, and a failure rolls back that write only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import sqlalchemy as sa

from tierwise.errors import LedgerError, LedgerUnavailableError
from tierwise.ledger import budgets as _budgets
from tierwise.ledger import feedback as _feedback
from tierwise.ledger import keys as _keys
from tierwise.ledger import plans as _plans
from tierwise.ledger import queries as _queries
from tierwise.ledger import rollups as _rollups
from tierwise.ledger import sessions as _sessions
from tierwise.ledger.engine import READ_OPTION, LedgerSettings, display_url, reason, unavailable
from tierwise.ledger.feedback import Feedback
from tierwise.ledger.keys import ApiKey
from tierwise.ledger.prepared import savepoint
from tierwise.ledger.redact import Redactor

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.engine import Engine

    from tierwise.ledger.plans import PlannedSubtask, SubtaskEnd
    from tierwise.ledger.summary_store import SummaryProgress, WindowSummary


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class Tx:
    """One write transaction: its connection, a DBAPI cursor on it, what to do once committed.

    ``deltas`` are budget-counter changes applied (summed, in scope order) just before commit.
    ``aborted`` is set when a statement failed with no savepoint to roll back to (Postgres): the
    transaction can then only roll back, and the batch must not report a commit.
    """

    conn: sa.Connection
    cursor: Any
    on_commit: list[Callable[[], None]] = field(default_factory=list)
    deltas: list[_budgets.Delta] = field(default_factory=list)
    aborted: str | None = None


class LedgerCore:
    """Transactions, lifecycle, reads and keys of a :class:`~tierwise.ledger.Ledger`."""

    def __init__(
        self,
        engine: Engine,
        *,
        now: Callable[[], datetime] = _utcnow,
        redactor: Redactor | None = None,
        settings: LedgerSettings | None = None,
    ) -> None:
        self._engine = engine
        self._now = now
        self._redact = redactor or Redactor()
        self._settings = settings or LedgerSettings()
        self._closed = False
        self._local = threading.local()  # the open batch() transaction of each thread
        self._driver_error: type[Exception] = getattr(
            engine.dialect.loaded_dbapi, "Error", sa.exc.DBAPIError
        )
        self._postgres = engine.dialect.name == "postgresql"

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The ledger's URL, password masked."""
        return display_url(self._engine.url)

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for reports that run their own read queries)."""
        return self._engine

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return str(self._engine.dialect.name)

    @property
    def settings(self) -> LedgerSettings:
        """The options this ledger was opened with (pool size, reservation TTL, ...)."""
        return self._settings

    def close(self) -> None:
        """Close every pooled connection. Idempotent."""
        if not self._closed:
            self._closed = True
            self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({self.url!r})"

    # -- transactions --------------------------------------------------------------------------

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Run this thread's writes inside the block as one transaction: one commit, one fsync.

        Used by the gateway to group-commit the rows of many concurrent requests. The writes are
        committed when the block exits normally; if it raises, all of them are rolled back.
        Nested blocks join the outer one. Other threads' writes are not affected. Each write in
        the block is all-or-nothing. A write refused for a reason of the ledger's own (a budget
        overrun, a duplicate task, a settled reservation) changes nothing and the block may go
        on; a write the *database* refuses leaves the block usable on SQLite but aborts it on
        PostgreSQL (see :meth:`_write`): every later write raises, and so does the block's exit.
        Reads inside the block see only what was committed before it. On SQLite the block holds
        the write lock: keep it short. On Postgres it locks budget counters only while it
        commits (settlements apply last).
        """
        if getattr(self._local, "tx", None) is not None:
            yield
            return
        with self._write() as tx:
            self._local.tx = tx
            try:
                yield
            finally:
                self._local.tx = None

    def failure(self, what: str, exc: BaseException) -> LedgerError:
        """The :class:`LedgerError` for a driver error: :class:`LedgerUnavailableError` when the
        database cannot be used right now (see :func:`tierwise.ledger.engine.unavailable`)."""
        message = f"{what}: {reason(exc)}"
        if unavailable(exc, self._engine.dialect.loaded_dbapi):
            return LedgerUnavailableError(message)
        return LedgerError(message)

    def ping(self) -> None:
        """One round trip to the database (``SELECT 1``).

        Raises:
            LedgerUnavailableError: the database cannot be reached.
        """
        with self._read() as conn:
            conn.exec_driver_sql("SELECT 1").all()

    def _shared_tx(self) -> Tx | None:
        tx: Tx | None = getattr(self._local, "tx", None)
        return tx

    @contextmanager
    def _write(self, *, single: bool = False) -> Iterator[Tx]:
        """One write transaction, committed on exit (after applying its counter changes).

        Inside :meth:`batch` a write of several statements joins the batch's transaction under
        a SAVEPOINT, so that a write that fails (a reservation that would overrun, say) still
        changes nothing. A *single*-statement write skips the savepoint: one statement is atomic
        on its own. On SQLite its failure leaves the batch usable; on Postgres it aborts the
        batch's transaction, and every later write and the batch itself then fail — a savepoint
        per row would cost two round trips and a subtransaction each, and a group commit of
        hundreds of rows would overflow the server's subtransaction cache. The transaction's
        ``on_commit`` callbacks run once it is committed (those of a write rolled back are
        dropped, and so are its counter changes).
        """
        if self._closed:
            raise LedgerError("the ledger is closed")
        shared = self._shared_tx()
        if shared is not None:
            if shared.aborted is not None:
                raise LedgerError(
                    f"ledger write failed: an earlier write aborted this batch ({shared.aborted})"
                )
            try:
                if single:
                    try:
                        yield shared
                    except (sa.exc.SQLAlchemyError, self._driver_error) as exc:
                        if self._postgres:
                            shared.aborted = reason(exc)
                        raise
                else:
                    marks = len(shared.on_commit), len(shared.deltas)
                    try:
                        with savepoint(shared.cursor):
                            yield shared
                    except BaseException:
                        del shared.on_commit[marks[0] :]
                        del shared.deltas[marks[1] :]
                        raise
            except (sa.exc.SQLAlchemyError, self._driver_error) as exc:
                raise self.failure("ledger write failed", exc) from None
            return
        try:
            with self._engine.begin() as conn:
                tx = Tx(conn, conn.connection.cursor())
                try:
                    yield tx
                    if tx.aborted is not None:  # a caller went on past a failed write
                        raise LedgerError(
                            f"ledger write failed: the batch was aborted ({tx.aborted}); "
                            "nothing in it was committed"
                        )
                    if tx.deltas:
                        _budgets.apply(conn, tx.deltas, self._now())
                finally:
                    tx.cursor.close()
        except (sa.exc.SQLAlchemyError, self._driver_error) as exc:
            raise self.failure("ledger write failed", exc) from None
        for callback in tx.on_commit:
            callback()

    @contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        """One read transaction (on SQLite a deferred ``BEGIN``: it never waits for writers)."""
        if self._closed:
            raise LedgerError("the ledger is closed")
        try:
            with self._engine.connect() as raw:
                conn = raw.execution_options(**{READ_OPTION: True})
                with conn.begin():
                    yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise self.failure("ledger read failed", exc) from None

    @contextmanager
    def reading(self) -> Iterator[sa.Connection]:
        """One read transaction, for analytics and reports that run their own Core queries.

        Every query inside sees the same committed state; on SQLite it never waits for writers.
        """
        with self._read() as conn:
            yield conn

    # -- reads ---------------------------------------------------------------------------------

    def tail(
        self, n: int = 20, *, kind: str | None = None, since: datetime | None = None
    ) -> list[dict[str, Any]]:
        """The latest *n* attempts (optionally of one kind, since a time), oldest first."""
        with self._read() as conn:
            return _queries.tail(conn, n, kind=kind, since=since)

    def iter_attempts(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        kind: str | None = None,
        role: str | None = None,
        batch_size: int = 500,
    ) -> Iterator[dict[str, Any]]:
        """Every matching attempt in write order, fetched in batches (no long transaction)."""
        after = 0
        while True:
            with self._read() as conn:
                batch = _queries.attempts_after(
                    conn, after, batch_size, since=since, until=until, kind=kind, role=role
                )
            yield from batch
            if len(batch) < batch_size:
                return
            after = int(batch[-1]["id"])

    def task(self, task_id: str) -> dict[str, Any] | None:
        """One task's row as a dict, ``None`` when unknown."""
        with self._read() as conn:
            return _queries.task(conn, task_id)

    def task_ids(self, prefix: str, limit: int = 2) -> list[str]:
        """Ids of up to *limit* tasks whose id is or starts with *prefix* (as ``ledger tail``
        shows them), an exact match alone; used to resolve a short id."""
        with self._read() as conn:
            return _queries.task_ids(conn, prefix, limit)

    def policy_revision(self, revision: str) -> dict[str, Any] | None:
        """The policy recorded under *revision* (its JSON, source, when first seen), if any."""
        with self._read() as conn:
            return _queries.policy_revision(conn, revision)

    def attempts_of(self, task_id: str) -> list[dict[str, Any]]:
        """One task's attempts in order."""
        with self._read() as conn:
            return _queries.attempts_of(conn, task_id)

    def stats(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        kind: str | None = None,
        role: str | None = "live",
    ) -> dict[str, Any]:
        """Tasks, attempts, spend, wasted spend, escalation rates and latency percentiles.

        See :func:`tierwise.ledger.queries.stats` for the shape of the result. Two keys are
        added: ``held`` — the money open budget reservations hold right now (see
        :func:`tierwise.ledger.budgets.held_summary`; ``expired`` counts those past the
        reservation TTL) — and ``pruned_before``, the UTC day before which rows were pruned
        into daily rollups (``None`` when nothing was pruned): rows before it are not in these
        figures, :meth:`daily` has them.
        """
        expired_before = self._now() - self._settings.reservation_ttl
        with self._read() as conn:
            data = _queries.stats(conn, since=since, until=until, kind=kind, role=role)
            data["held"] = _budgets.held_summary(conn, expired_before)
            data["pruned_before"] = _rollups.pruned_before(conn)
        return data

    def daily(
        self,
        *,
        since: date | None = None,
        until: date | None = None,
        kind: str | None = None,
        role: str | None = None,
    ) -> list[dict[str, Any]]:
        """Exact totals per UTC day × kind × tier × role, pruned days included.

        Rolled-up days (see :meth:`~tierwise.ledger.Ledger.prune`) and rows still in the
        ledger are summed alike, so the figures do not change when rows are pruned. See
        :mod:`tierwise.ledger.rollups` for the columns. *since*/*until* are UTC days
        (``until`` exclusive).
        """
        with self._read() as conn:
            return _rollups.daily(conn, since=since, until=until, kind=kind, role=role)

    def report_summary(
        self,
        since: datetime,
        until: datetime,
        *,
        now: datetime | None = None,
        keep: bool = True,
        from_rows: bool = False,
        progress: SummaryProgress | None = None,
    ) -> WindowSummary:
        """The summed facts of the tasks created in [since, until), for reports.

        Ended hours come from the kept summary, summarised first when they are not kept yet
        (*keep*; a ledger that cannot be written falls back to the rows); the window's partial
        edges, the hour still going on and tasks still running come from the rows. *now*
        (default: the ledger's clock) says which hours have ended; *from_rows* ignores the kept
        summary. See :mod:`tierwise.ledger.summary_store`.
        """
        from tierwise.ledger.summary_store import window_summary

        return window_summary(
            self._read,
            self._write,
            since,
            until,
            now=now or self._now(),
            keep=keep,
            from_rows=from_rows,
            progress=progress,
        )

    # -- feedback ------------------------------------------------------------------------------

    def record_feedback(
        self,
        task_id: str,
        flag: str,
        *,
        author: str,
        note: str | None = None,
        key_id: int | None = None,
    ) -> Feedback | None:
        """Flag a task's output: ``wrong``, ``needed_frontier`` or ``cheaper_would_do``.

        The latest flag per task and author stands: flagging again replaces *author*'s earlier
        flag and note (the same flag twice changes nothing). The note is stored with secrets
        masked. See :mod:`tierwise.ledger.feedback` for what each flag means.

        Returns:
            The author's flag as stored (``change`` says whether it was created, replaced or
            unchanged), or ``None`` when no task has this id.

        Raises:
            ValueError: an unknown flag, an empty author, a note over 4,000 characters.
            LedgerError: the write failed.
        """
        with self._write() as tx:
            return _feedback.record(
                tx.conn,
                task_id,
                flag,
                author=author,
                note=self._redact(note),
                key_id=key_id,
                now=self._now(),
            )

    def feedback_of(self, task_id: str) -> list[Feedback]:
        """Every author's current flag on one task, oldest first."""
        with self._read() as conn:
            return _feedback.of_task(conn, task_id)

    def integrity_check(self) -> list[str]:
        """Problems found (empty when sound): storage integrity, foreign keys, costs, budgets,
        reservations still held after their task finished, and tasks that never finished
        (still ``running`` past the reservation TTL: their process died)."""
        with self._read() as conn:
            return _queries.integrity_problems(
                conn, stale_before=self._now() - self._settings.reservation_ttl
            )

    # -- gateway keys --------------------------------------------------------------------------

    def create_api_key(
        self, name: str, role: str = "client", budget_usd_day: Decimal | None = None
    ) -> str:
        """Create a gateway key and return its secret (``tw_…``), shown this once only.

        Raises:
            LedgerError: a key with this name exists.
            ValueError: the name, role or budget is invalid.
        """
        with self._write() as tx:
            return _keys.create(tx.conn, name, role, budget_usd_day, self._now())

    def verify_api_key(self, secret: str) -> ApiKey | None:
        """The active key this secret belongs to, else ``None``."""
        with self._read() as conn:
            return _keys.verify(conn, secret)

    def has_api_keys(self) -> bool:
        """Whether any active key exists (the gateway requires keys once one does)."""
        with self._read() as conn:
            return bool(_keys.listing(conn, include_revoked=False))

    def list_api_keys(self, *, include_revoked: bool = False) -> list[ApiKey]:
        """Keys, oldest first, without secrets."""
        with self._read() as conn:
            return _keys.listing(conn, include_revoked)

    def revoke_api_key(self, name: str) -> bool:
        """Revoke the active key called *name*; ``False`` when there is none."""
        with self._write() as tx:
            return _keys.revoke(tx.conn, name, self._now())

    def open_dashboard_session(self, key: ApiKey, ttl: timedelta) -> str:
        """Open a dashboard session for an active admin *key*; returns its secret (the cookie).

        Raises:
            ValueError: the key is not an active admin key, or *ttl* is not positive.
        """
        with self._write() as tx:
            return _sessions.open_session(tx.conn, key, self._now(), ttl)

    def dashboard_session(self, secret: str) -> ApiKey | None:
        """The admin key of the live dashboard session *secret*, else ``None``."""
        with self._read() as conn:
            return _sessions.lookup(conn, secret, self._now())

    def close_dashboard_session(self, secret: str) -> bool:
        """Sign a dashboard session out; ``False`` when there was none."""
        with self._write() as tx:
            return _sessions.close(tx.conn, secret)

    # -- plans (plan-execute-review) ------------------------------------------------------------

    def record_plan(
        self,
        plan_id: str,
        goal: str,
        *,
        prompt_version: str,
        policy_revision: str | None,
        planner_tier: str,
        reviewer_tier: str | None,
        store_content: bool,
    ) -> None:
        """Record that plan *plan_id* starts (the goal as a hash and size; its text only with
        *store_content*)."""
        text = self._redact(goal) if store_content else None
        with self._write() as tx:
            _plans.insert_plan(
                tx.conn,
                plan_id,
                goal,
                text,
                prompt_version=prompt_version,
                policy_revision=policy_revision,
                planner_tier=planner_tier,
                reviewer_tier=reviewer_tier,
                now=self._now(),
            )

    def record_subtasks(
        self,
        plan_id: str,
        subtasks: Sequence[PlannedSubtask],
        *,
        planner_model: str | None,
        planner_provider: str | None,
        store_content: bool,
    ) -> None:
        """Record the validated plan's subtasks (prompts and justifications only with
        *store_content*) and who planned it."""
        texts = [
            (self._redact(s.prompt), self._redact(s.justification))
            if store_content
            else (None, None)
            for s in subtasks
        ]
        with self._write() as tx:
            _plans.insert_subtasks(
                tx.conn, plan_id, planner_model, planner_provider, subtasks, texts
            )

    def finish_subtask(self, plan_id: str, subtask_id: str, end: SubtaskEnd) -> None:
        """Record how a subtask ended (outcome, final tier, climbs, review)."""
        from dataclasses import replace

        note = None if end.review_note is None else self._redact(end.review_note[:500])
        with self._write() as tx:
            _plans.update_subtask(
                tx.conn, plan_id, subtask_id, replace(end, review_note=note), self._now()
            )

    def finish_plan(
        self, plan_id: str, *, status: str, failure: str | None, cost_usd: Decimal
    ) -> None:
        """Record how a plan ended and what it cost."""
        text = None if failure is None else self._redact(failure[:2000])
        with self._write() as tx:
            _plans.update_plan(tx.conn, plan_id, status, text, cost_usd, self._now())

    def flag_subtask(self, plan_id: str, subtask_id: str, reason: str) -> bool:
        """Mark a subtask's accepted output as wrong after the fact (a downstream failure);
        ``False`` when there is no such subtask."""
        with self._write() as tx:
            why = self._redact(reason) or ""
            return _plans.flag(tx.conn, plan_id, subtask_id, why, self._now())

    def plan(self, plan_id: str) -> dict[str, Any] | None:
        """The plan's row as a dict, ``None`` when unknown."""
        with self._read() as conn:
            return _plans.plan_row(conn, plan_id)

    def plan_ids(self, prefix: str, limit: int = 5) -> list[str]:
        """Ids of plans starting with *prefix*, newest first."""
        with self._read() as conn:
            return _plans.plan_ids_like(conn, prefix, limit)

    def plan_subtasks(self, plan_id: str) -> list[dict[str, Any]]:
        """The plan's subtasks in plan order."""
        with self._read() as conn:
            return _plans.subtask_rows(conn, plan_id)

    def plan_attempts(self, plan_id: str) -> list[dict[str, Any]]:
        """Every attempt of the plan, in write order, with ``plan_role``, ``subtask_id`` and
        ``parent_id``."""
        with self._read() as conn:
            return _plans.plan_attempt_rows(conn, plan_id)

    def plan_cost(self, plan_id: str) -> Decimal:
        """What the plan's attempts cost, summed in SQL (exact)."""
        with self._read() as conn:
            return _plans.plan_cost(conn, plan_id)

    def calibration_rows(
        self, *, since: datetime | None = None, until: datetime | None = None
    ) -> list[dict[str, Any]]:
        """The subtasks planner calibration counts (see
        :func:`tierwise.ledger.plans.calibration_rows`)."""
        with self._read() as conn:
            return _plans.calibration_rows(conn, since=since, until=until)
