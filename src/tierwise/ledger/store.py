"""The ledger: every task and attempt with its exact cost, budgets, and gateway keys.

Each public write is one transaction, committed before the method returns, so an attempt is
on disk before the cascade takes its next hop and before the caller sees a result.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from tierwise.errors import LedgerError
from tierwise.ledger import budgets as _budgets
from tierwise.ledger import keys as _keys
from tierwise.ledger import queries as _queries
from tierwise.ledger.budgets import BudgetState, Reservation
from tierwise.ledger.engine import (
    READ_OPTION,
    create_ledger_engine,
    display_url,
    ledger_url,
    migrate,
)
from tierwise.ledger.keys import ApiKey
from tierwise.ledger.prepared import Prepared, prepare, savepoint
from tierwise.ledger.redact import Redactor, secret_values, storable
from tierwise.ledger.schema import attempts, policy_revisions, sessions, tasks, to_pico
from tierwise.ledger.sql import insert_ignore, upsert_statement

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from tierwise.records import AttemptRecord
    from tierwise.task import Decision, Task

TASK_OUTCOMES = ("running", "accepted", "exhausted", "budget", "error")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _sha256(text: str) -> str:
    # surrogatepass: an upstream's lone surrogate must not stop its attempt from being recorded
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


_TASK_COLUMNS = (
    "id",
    "kind",
    "session_id",
    "role",
    "policy_revision",
    "decision_tier",
    "decision_tier_index",
    "decision_step",
    "decision_rule",
    "decision_floor",
    "decision_json",
    "prompt_sha256",
    "prompt_chars",
    "prompt_text",
    "outcome",
    "created_at",
)
_ATTEMPT_KEYS = ("task_id", "attempt_no")
_ATTEMPT_COLUMNS = (
    *_ATTEMPT_KEYS,
    "kind",
    "session_id",
    "role",
    "tier",
    "tier_index",
    "model",
    "provider",
    "outcome",
    "input_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
    "output_tokens",
    "cost_pusd",
    "latency_s",
    "verdicts_json",
    "failure",
    "error_class",
    "escalated_from",
    "stop_reason",
    "output_sha256",
    "output_chars",
    "output_text",
    "started_at",
    "recorded_at",
)
_FINISH_COLUMNS = (
    "outcome",
    "final_tier",
    "cost_pusd",
    "latency_s",
    "attempts",
    "output_sha256",
    "output_chars",
    "output_text",
    "finished_at",
)


@dataclass(frozen=True, slots=True)
class _Statements:
    """The request-path writes, compiled once for one engine's dialect."""

    insert_task: Prepared
    touch_session: Prepared
    upsert_attempt: Prepared
    finish_task: Prepared

    @classmethod
    def build(cls, dialect: sa.Dialect) -> _Statements:
        name = dialect.name
        return cls(
            insert_task=prepare(tasks.insert(), dialect, _TASK_COLUMNS),
            touch_session=prepare(
                upsert_statement(name, sessions, ("id",), ("last_seen_at",)),
                dialect,
                ("id", "created_at", "last_seen_at"),
            ),
            upsert_attempt=prepare(
                upsert_statement(
                    name, attempts, _ATTEMPT_KEYS, _ATTEMPT_COLUMNS[len(_ATTEMPT_KEYS) :], "id"
                ),
                dialect,
                _ATTEMPT_COLUMNS,
            ),
            finish_task=prepare(
                tasks.update().where(tasks.c.id == sa.bindparam("b_id")), dialect, _FINISH_COLUMNS
            ),
        )


@dataclass(slots=True)
class _Tx:
    """One write transaction: its connection, a DBAPI cursor on it, what to do once committed."""

    conn: sa.Connection
    cursor: Any
    on_commit: list[Callable[[], None]] = field(default_factory=list)


def open_ledger(
    url: str | Path,
    *,
    create: bool = True,
    now: Callable[[], datetime] | None = None,
    env: Mapping[str, str] | None = None,
) -> Ledger:
    """Open (and create and migrate, when needed) the ledger at *url*.

    Args:
        url: a file path or a SQLAlchemy URL (``sqlite:///path/ledger.db``).
        create: create a missing SQLite file; with ``False`` a missing file is an error.
        now: the clock for timestamps (aware UTC datetimes); tests inject one.
        env: environment whose secret-looking values are masked out of stored text
            (default ``os.environ`` at opening time).

    Raises:
        LedgerError: the ledger cannot be opened or migrated.
    """
    engine = create_ledger_engine(ledger_url(url), create=create)
    try:
        migrate(engine)
    except LedgerError:
        engine.dispose()
        raise
    except sa.exc.SQLAlchemyError as exc:
        engine.dispose()
        where = display_url(engine.url)
        raise LedgerError(f"cannot open the ledger {where}: {_reason(exc)}") from None
    redactor = Redactor(secret_values(os.environ if env is None else env))
    return Ledger(engine, now=now or _utcnow, redactor=redactor)


def _reason(exc: Exception) -> str:
    # The DBAPI's own message only: SQLAlchemy's str() appends the bound parameters, which may
    # hold prompt or output text. A driver error raised on the DBAPI cursor is its own message.
    if not isinstance(exc, sa.exc.SQLAlchemyError):
        return f"{type(exc).__name__}: {exc}"
    orig = getattr(exc, "orig", None)
    return f"{type(orig).__name__}: {orig}" if orig is not None else type(exc).__name__


def _hour(now: datetime) -> datetime:
    return now.replace(minute=0, second=0, microsecond=0)


class Ledger:
    """A durable record of tasks and attempts, budget counters and gateway keys.

    Build it with :func:`open_ledger`. Thread-safe (each call takes its own pooled
    connection); several processes may share one SQLite file. Close it, or use it as a
    context manager.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        now: Callable[[], datetime] = _utcnow,
        redactor: Redactor | None = None,
    ) -> None:
        self._engine = engine
        self._now = now
        self._redact = redactor or Redactor()
        self._closed = False
        self._local = threading.local()  # the open batch() transaction of each thread
        self._revisions: set[str] = set()  # policy revisions known committed
        # sessions whose row this process committed during the hour _session_hour
        self._session_hour: datetime | None = None
        self._sessions: set[str] = set()
        self._sql: _Statements | None = None
        self._driver_error: type[Exception] = getattr(
            engine.dialect.loaded_dbapi, "Error", sa.exc.DBAPIError
        )

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The ledger's URL, password masked."""
        return display_url(self._engine.url)

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for reports that run their own read queries)."""
        return self._engine

    def close(self) -> None:
        """Close every pooled connection. Idempotent."""
        if not self._closed:
            self._closed = True
            self._engine.dispose()

    def __enter__(self) -> Ledger:
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

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Run this thread's writes inside the block as one transaction: one commit, one fsync.

        Used by the gateway to group-commit the rows of many concurrent requests. The writes are
        on disk when the block exits normally; if it raises, all of them are rolled back.
        Nested blocks join the outer one. Other threads' writes are not affected. Each write in
        the block is still all-or-nothing (a savepoint). Reads inside the block see only what
        was committed before it, and on SQLite the block holds the write lock: keep it short.
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

    @contextmanager
    def _write(self, *, single: bool = False) -> Iterator[_Tx]:
        """One write transaction (``BEGIN IMMEDIATE`` on SQLite), committed on exit.

        Inside :meth:`batch` the write joins the batch's transaction under a SAVEPOINT, so that
        a write that fails (a reservation that would overrun, say) still changes nothing. A
        *single*-statement write skips the savepoint: one statement is atomic on its own.
        The transaction's ``on_commit`` callbacks run once it is committed (those of a write
        rolled back to its savepoint are dropped).
        """
        if self._closed:
            raise LedgerError("the ledger is closed")
        shared: _Tx | None = getattr(self._local, "tx", None)
        if shared is not None:
            try:
                if single:
                    yield shared
                else:
                    mark = len(shared.on_commit)
                    try:
                        with savepoint(shared.cursor):
                            yield shared
                    except BaseException:
                        del shared.on_commit[mark:]
                        raise
            except (sa.exc.SQLAlchemyError, self._driver_error) as exc:
                raise LedgerError(f"ledger write failed: {_reason(exc)}") from None
            return
        try:
            with self._engine.begin() as conn:
                tx = _Tx(conn, conn.connection.cursor())
                try:
                    yield tx
                finally:
                    tx.cursor.close()
        except (sa.exc.SQLAlchemyError, self._driver_error) as exc:
            raise LedgerError(f"ledger write failed: {_reason(exc)}") from None
        for callback in tx.on_commit:
            callback()

    def _statements(self) -> _Statements:
        if self._sql is None:  # a race builds it twice, harmlessly
            self._sql = _Statements.build(self._engine.dialect)
        return self._sql

    @contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        """One read transaction (a deferred ``BEGIN``: it never waits for writers)."""
        if self._closed:
            raise LedgerError("the ledger is closed")
        try:
            with self._engine.connect() as raw:
                conn = raw.execution_options(**{READ_OPTION: True})
                with conn.begin():
                    yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise LedgerError(f"ledger read failed: {_reason(exc)}") from None

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

    def _ensure_revision(self, tx: _Tx, revision: str) -> None:
        if revision in self._revisions:  # written and committed by this process already
            return
        insert_ignore(
            tx.conn,
            policy_revisions,
            ["revision"],
            {"revision": revision, "created_at": self._now()},
        )
        tx.on_commit.append(lambda: self._revisions.add(revision))

    def _touch_session(self, tx: _Tx, session: str, now: datetime) -> None:
        """Upsert the session's row, unless this process committed it earlier this hour.

        ``sessions.last_seen_at`` is therefore exact to the hour, not to the task.
        """
        hour = _hour(now)
        if hour == self._session_hour and session in self._sessions:
            return
        values = {"id": session, "created_at": now, "last_seen_at": now}
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
        duplicate = LedgerError(
            f"task {task.id} is already in the ledger; each run needs its own task "
            "id, e.g. task.with_(id=uuid.uuid4().hex)"
        )
        try:
            self._insert_task(task, decision, policy_revision, role, store_content, now)
        except LedgerError:
            # The primary key refused the row (the only way this insert fails once the policy
            # revision is known); say so plainly instead of the driver's words.
            if self.task(task.id) is not None:
                raise duplicate from None
            raise

    def _insert_task(
        self,
        task: Task,
        decision: Decision,
        policy_revision: str,
        role: str,
        store_content: bool,
        now: datetime,
    ) -> None:
        rule = decision.rule_name or (
            None if decision.rule_index is None else f"#{decision.rule_index}"
        )
        if decision.step == "frontier":
            rule = decision.constraint_name or f"frontier#{decision.constraint_index}"
        values = {
            "id": task.id,
            "kind": task.kind,
            "session_id": task.session,
            "role": role,
            "policy_revision": policy_revision,
            "decision_tier": decision.tier,
            "decision_tier_index": decision.tier_index,
            "decision_step": decision.step,
            "decision_rule": rule,
            "decision_floor": decision.floor,
            "decision_json": json.dumps(decision.as_dict()),
            "prompt_sha256": _sha256(task.prompt),
            "prompt_chars": len(task.prompt),
            "prompt_text": self._redact(task.prompt) if store_content else None,
            "outcome": "running",
            "created_at": now,
        }
        statement = self._statements().insert_task
        # Only the task row itself, when the revision and session are known committed: a
        # single statement needs no savepoint.
        single = policy_revision in self._revisions and (
            not task.session
            or (task.session in self._sessions and self._session_hour == _hour(now))
        )
        with self._write(single=single) as tx:
            self._ensure_revision(tx, policy_revision)
            if task.session:
                self._touch_session(tx, task.session, now)
            statement.run(tx.cursor, values)

    def record_attempt(self, attempt: AttemptRecord, *, store_content: bool) -> int:
        """Write one attempt, replacing any earlier row for (task_id, attempt_no); return its id.

        Usage buckets, cost, verdicts and failure go in every row; the output as a SHA-256 and a
        size, its text only with *store_content*. Committed before returning.
        """
        output = attempt.output
        verdicts = [
            {
                "validator": v.validator,
                "ok": v.ok,
                "reason": self._redact(v.reason),
                "score": v.score,
            }
            for v in attempt.verdicts
        ]
        values: dict[str, Any] = {
            "task_id": attempt.task_id,
            "attempt_no": attempt.attempt_no,
            "kind": attempt.kind,
            "session_id": attempt.session,
            "role": attempt.role,
            "tier": attempt.tier,
            "tier_index": attempt.tier_index,
            "model": storable(attempt.model),
            "provider": attempt.provider,
            "outcome": attempt.outcome,
            **attempt.usage.as_dict(),
            "cost_pusd": to_pico(attempt.cost_usd),
            "latency_s": float(attempt.latency_s),
            "verdicts_json": json.dumps(verdicts),
            "failure": self._redact(attempt.failure),
            "error_class": attempt.error_class,
            "escalated_from": attempt.escalated_from,
            "stop_reason": attempt.stop_reason,
            "output_sha256": None if output is None else _sha256(output),
            "output_chars": None if output is None else len(output),
            "output_text": self._redact(output) if store_content else None,
            "started_at": attempt.started_at,
            "recorded_at": self._now(),
        }
        statement = self._statements().upsert_attempt
        with self._write(single=True) as tx:
            row = statement.run(tx.cursor, values).fetchone()
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
        if outcome not in TASK_OUTCOMES:
            raise ValueError(f"task outcome must be one of {TASK_OUTCOMES}, got {outcome!r}")
        values = {
            "b_id": task_id,
            "outcome": outcome,
            "final_tier": final_tier,
            "cost_pusd": to_pico(cost_usd),
            "latency_s": float(latency_s),
            "attempts": attempts,
            "output_sha256": None if output is None else _sha256(output),
            "output_chars": None if output is None else len(output),
            "output_text": self._redact(output) if store_content and output else None,
            "finished_at": self._now(),
        }
        statement = self._statements().finish_task
        with self._write(single=True) as tx:
            updated = statement.run(tx.cursor, values).rowcount
        if updated != 1:
            raise LedgerError(f"task {task_id} is not in the ledger; call begin_task first")

    # -- budgets -------------------------------------------------------------------------------

    def reserve(
        self, task_id: str, limits: Mapping[str, Decimal], amount_usd: Decimal
    ) -> Reservation:
        """Hold *amount_usd* against every scope in *limits*, atomically across processes.

        For each scope, spent + held + amount must stay within its limit; otherwise nothing
        changes.

        Raises:
            BudgetExceededError: some scope would overrun (the first one, in scope order).
        """
        with self._write() as tx:
            return _budgets.reserve(tx.conn, task_id, limits, amount_usd, self._now())

    def settle(self, reservation: Reservation, actual_usd: Decimal) -> None:
        """Replace a held reservation by the actual cost of the attempt.

        Raises:
            LedgerError: the reservation was already settled or released.
        """
        with self._write() as tx:
            _budgets.close(tx.conn, reservation, actual_usd, "settled", self._now())

    def release(self, reservation: Reservation) -> None:
        """Drop a held reservation without spending (the attempt cost nothing)."""
        with self._write() as tx:
            _budgets.close(tx.conn, reservation, Decimal(0), "released", self._now())

    def spent(self, scope: str) -> Decimal:
        """Spent plus held in *scope* (what the next reservation is checked against)."""
        state = self.budget(scope)
        return Decimal(0) if state is None else state.used_usd

    def budget(self, scope: str) -> BudgetState | None:
        """The counters of *scope*, ``None`` when nothing was reserved against it."""
        with self._read() as conn:
            return _budgets.state(conn, scope)

    def release_stale(self, older_than: timedelta) -> int:
        """Release reservations held longer than *older_than* (left by crashed processes).

        Returns the number released. Run it from maintenance jobs, not on the request path.
        """
        with self._read() as conn:
            ids = _budgets.stale_ids(conn, self._now() - older_than)
        released = 0
        for rid in ids:
            with self._write() as tx:
                res = _budgets.load(tx.conn, rid)
                try:
                    _budgets.close(tx.conn, res, Decimal(0), "released", self._now())
                except LedgerError:  # settled meanwhile by its owner
                    continue
                released += 1
        return released

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

        See :func:`tierwise.ledger.queries.stats` for the shape of the result.
        """
        with self._read() as conn:
            return _queries.stats(conn, since=since, until=until, kind=kind, role=role)

    def integrity_check(self) -> list[str]:
        """Problems found (empty when sound): storage integrity, foreign keys, costs, budgets."""
        with self._read() as conn:
            return _queries.integrity_problems(conn)

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
