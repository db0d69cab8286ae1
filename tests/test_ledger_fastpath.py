"""The ledger's request-path writes: compiled once, run on the DBAPI cursor, same rows as Core.

Covers what the fast path could get wrong: timestamps stored in a different text format than
SQLAlchemy's, statements that only compile for SQLite, a session row assumed written when its
transaction was rolled back, and ``last_seen_at`` bookkeeping.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import fields
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql, sqlite

from tierwise.errors import LedgerError
from tierwise.ledger import Ledger, open_ledger
from tierwise.ledger.budgets import _sql as budget_statements
from tierwise.ledger.fixtures import POLICY_REVISION, make_attempt, make_decision
from tierwise.ledger.prepared import prepare
from tierwise.ledger.schema import UTCDateTime, tasks
from tierwise.ledger.store import _Statements
from tierwise.task import Task


def _raw(path: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def _begin(book: Ledger, task: Task) -> None:
    book.begin_task(
        task,
        make_decision(task.kind),
        policy_revision=POLICY_REVISION,
        role="live",
        store_content=False,
    )


class Clock:
    """A settable clock for the ledger's timestamps."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def _core_sqlite_text(value: datetime) -> str:
    """What SQLAlchemy's own SQLite DATETIME type stores for this instant (the oracle)."""
    dialect = sqlite.dialect()
    process = sa.DateTime().dialect_impl(dialect).bind_processor(dialect)
    assert process is not None
    return str(process(value.astimezone(UTC).replace(tzinfo=None)))


_instants = st.datetimes(
    min_value=datetime(1970, 1, 2),
    max_value=datetime(2200, 1, 1),
    timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
    ),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(at=_instants)
def test_timestamps_are_stored_as_sqlalchemy_stores_them(tmp_path: Path, at: datetime) -> None:
    path = tmp_path / f"{uuid.uuid4().hex}.db"  # one file per example
    with open_ledger(path, env={}, now=Clock(at)) as book:
        book.record_policy_revision(POLICY_REVISION, "{}", None)
        task = Task.create("extract", "x", session="s")
        _begin(book, task)
        book.record_attempt(make_attempt(task, 0, started_at=at), store_content=False)
        stored = book.task(task.id)
    want = _core_sqlite_text(at)
    assert _raw(path, "SELECT created_at FROM tasks") == [(want,)]
    assert _raw(path, "SELECT started_at, recorded_at FROM attempts") == [(want, want)]
    assert _raw(path, "SELECT created_at, last_seen_at FROM sessions") == [(want, want)]
    assert stored is not None and stored["created_at"] == at


_POSTGRES: sa.Dialect = postgresql.dialect()  # type: ignore[no-untyped-call]


def test_the_utc_decorator_keeps_the_default_path_off_sqlite() -> None:
    dialect = _POSTGRES
    process = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    at = datetime(2025, 3, 4, 5, 6, 7, tzinfo=timezone(timedelta(hours=2)))
    got = process(at) if process is not None else UTCDateTime().process_bind_param(at, dialect)
    assert got == datetime(2025, 3, 4, 3, 6, 7)
    with pytest.raises(ValueError, match="timezone"):
        UTCDateTime().process_bind_param(datetime(2025, 1, 1), dialect)


@pytest.mark.parametrize("dialect", [sqlite.dialect(), _POSTGRES], ids=lambda d: d.name)
def test_hot_statements_compile_for_sqlite_and_postgres(dialect: sa.Dialect) -> None:
    built = _Statements.build(dialect)
    attempt = make_attempt(Task.create("extract", "x"), 0)
    values = {
        **dict.fromkeys(name for name, _, _ in built.upsert_attempt.binds),
        "task_id": attempt.task_id,
        "attempt_no": 0,
        "started_at": attempt.started_at,
        "recorded_at": attempt.started_at,
    }
    params = built.upsert_attempt.parameters(values)
    assert "ON CONFLICT (task_id, attempt_no) DO UPDATE" in built.upsert_attempt.sql
    assert "RETURNING" in built.upsert_attempt.sql
    if dialect.name == "postgresql":
        assert isinstance(params, dict) and params["task_id"] == attempt.task_id
        assert "%(task_id)s" in built.upsert_attempt.sql
    else:
        assert isinstance(params, list) and params[0] == attempt.task_id
        assert built.upsert_attempt.sql.count("?") == len(params)
    hot = budget_statements()
    for f in fields(hot):
        assert prepare(getattr(hot, f.name), dialect).sql  # the budget statements compile too


def test_fixed_values_in_a_statement_are_bound() -> None:
    stmt = tasks.update().where(tasks.c.id == sa.bindparam("b_id"), tasks.c.outcome == "running")
    prepared = prepare(stmt, sqlite.dialect(), ["outcome"])
    assert prepared.parameters({"b_id": "t1", "outcome": "accepted"}) == [
        "accepted",
        "t1",
        "running",
    ]
    with pytest.raises(KeyError):
        prepared.parameters({"outcome": "accepted"})


def _sessions(path: Path) -> dict[object, object]:
    return dict(_raw(path, "SELECT id, last_seen_at FROM sessions"))  # type: ignore[arg-type]


def test_a_session_rolled_back_with_its_batch_is_written_again(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    with open_ledger(path, env={}) as book:
        book.record_policy_revision(POLICY_REVISION, "{}", None)
        with pytest.raises(RuntimeError), book.batch():
            _begin(book, Task.create("extract", "x", session="s1"))
            raise RuntimeError("the caller failed")
        assert _sessions(path) == {}
        later = Task.create("extract", "y", session="s1")
        _begin(book, later)  # would break the foreign key if s1 were wrongly assumed written
        assert book.task(later.id) is not None
        assert set(_sessions(path)) == {"s1"}


def test_a_session_of_a_refused_task_is_not_assumed_written(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    with open_ledger(path, env={}) as book:
        book.record_policy_revision(POLICY_REVISION, "{}", None)
        existing = Task.create("extract", "x")
        _begin(book, existing)
        other = Task.create("extract", "z")
        with book.batch():
            with pytest.raises(LedgerError, match="already in the ledger"):
                _begin(book, existing.with_(session="s2"))  # rolled back to its savepoint
            _begin(book, other)  # the batch goes on
        assert _sessions(path) == {}
        third = Task.create("extract", "w", session="s2")
        _begin(book, third)
        assert book.task(third.id) is not None and book.task(other.id) is not None


def test_last_seen_is_kept_to_the_hour(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    clock = Clock(datetime(2025, 6, 1, 10, 5, tzinfo=UTC))
    stamp: Callable[[datetime], str] = _core_sqlite_text
    with open_ledger(path, env={}, now=clock) as book:
        book.record_policy_revision(POLICY_REVISION, "{}", None)
        _begin(book, Task.create("extract", "a", session="s"))
        clock.at = datetime(2025, 6, 1, 10, 50, tzinfo=UTC)
        _begin(book, Task.create("extract", "b", session="s"))
        assert _sessions(path) == {"s": stamp(datetime(2025, 6, 1, 10, 5, tzinfo=UTC))}
        clock.at = datetime(2025, 6, 1, 11, 1, tzinfo=UTC)
        _begin(book, Task.create("extract", "c", session="s"))
        _begin(book, Task.create("extract", "d", session="t"))
        assert _sessions(path) == {
            "s": stamp(datetime(2025, 6, 1, 11, 1, tzinfo=UTC)),
            "t": stamp(datetime(2025, 6, 1, 11, 1, tzinfo=UTC)),
        }
        assert len(_raw(path, "SELECT id FROM tasks")) == 4


def test_another_process_sees_each_write_of_a_batch_only_after_commit(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    with open_ledger(path, env={}) as book:
        book.record_policy_revision(POLICY_REVISION, "{}", None)
        task = Task.create("extract", "x", session="s")
        with book.batch():
            _begin(book, task)
            book.record_attempt(make_attempt(task, 0), store_content=False)
            assert _raw(path, "SELECT COUNT(*) FROM tasks") == [(0,)]
        assert _raw(path, "SELECT COUNT(*) FROM tasks") == [(1,)]
        assert _raw(path, "SELECT COUNT(*) FROM attempts") == [(1,)]
