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
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql, sqlite

from tierwise.errors import LedgerError
from tierwise.ledger import Ledger, open_ledger
from tierwise.ledger.budgets import core_statements as budget_statements
from tierwise.ledger.fixtures import POLICY_REVISION, make_attempt, make_decision
from tierwise.ledger.prepared import prepare
from tierwise.ledger.schema import UTCDateTime, tasks
from tierwise.ledger.statements import WriteStatements as _Statements
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


Raw = Callable[..., list[tuple[Any, ...]]]


def _sessions(raw: Raw, url: str) -> dict[str, datetime]:
    """Session ids and their last_seen_at, as UTC instants (raw text on SQLite)."""
    out = {}
    for sid, seen in raw(url, "SELECT id, last_seen_at FROM sessions"):
        at = datetime.fromisoformat(seen) if isinstance(seen, str) else seen
        out[str(sid)] = at.replace(tzinfo=UTC)
    return out


def test_a_session_rolled_back_with_its_batch_is_written_again(
    ledger_url: str, raw_sql: Raw
) -> None:
    with open_ledger(ledger_url, env={}) as book:
        book.record_policy_revision(POLICY_REVISION, "{}", None)
        with pytest.raises(RuntimeError), book.batch():
            _begin(book, Task.create("extract", "x", session="s1"))
            raise RuntimeError("the caller failed")
        assert _sessions(raw_sql, ledger_url) == {}
        later = Task.create("extract", "y", session="s1")
        _begin(book, later)  # would break the foreign key if s1 were wrongly assumed written
        assert book.task(later.id) is not None
        assert set(_sessions(raw_sql, ledger_url)) == {"s1"}


def test_a_session_of_a_refused_task_is_not_assumed_written(ledger_url: str, raw_sql: Raw) -> None:
    with open_ledger(ledger_url, env={}) as book:
        book.record_policy_revision(POLICY_REVISION, "{}", None)
        existing = Task.create("extract", "x")
        _begin(book, existing)
        other = Task.create("extract", "z")
        with book.batch():
            with pytest.raises(LedgerError, match="already in the ledger"):
                _begin(book, existing.with_(session="s2"))  # rolled back to its savepoint
            _begin(book, other)  # the batch goes on (on Postgres too: the savepoint saved it)
        assert _sessions(raw_sql, ledger_url) == {}
        third = Task.create("extract", "w", session="s2")
        _begin(book, third)
        assert book.task(third.id) is not None and book.task(other.id) is not None


def test_last_seen_is_kept_to_the_hour(ledger_url: str, raw_sql: Raw) -> None:
    clock = Clock(datetime(2025, 6, 1, 10, 5, tzinfo=UTC))
    with open_ledger(ledger_url, env={}, now=clock) as book:
        book.record_policy_revision(POLICY_REVISION, "{}", None)
        _begin(book, Task.create("extract", "a", session="s"))
        clock.at = datetime(2025, 6, 1, 10, 50, tzinfo=UTC)
        _begin(book, Task.create("extract", "b", session="s"))
        assert _sessions(raw_sql, ledger_url) == {"s": datetime(2025, 6, 1, 10, 5, tzinfo=UTC)}
        clock.at = datetime(2025, 6, 1, 11, 1, tzinfo=UTC)
        _begin(book, Task.create("extract", "c", session="s"))
        _begin(book, Task.create("extract", "d", session="t"))
        assert _sessions(raw_sql, ledger_url) == {
            "s": datetime(2025, 6, 1, 11, 1, tzinfo=UTC),
            "t": datetime(2025, 6, 1, 11, 1, tzinfo=UTC),
        }
        assert len(raw_sql(ledger_url, "SELECT id FROM tasks")) == 4


def test_another_process_sees_each_write_of_a_batch_only_after_commit(
    ledger_url: str, raw_sql: Raw
) -> None:
    with open_ledger(ledger_url, env={}) as book:
        book.record_policy_revision(POLICY_REVISION, "{}", None)
        task = Task.create("extract", "x", session="s")
        with book.batch():
            _begin(book, task)
            book.record_attempt(make_attempt(task, 0), store_content=False)
            assert raw_sql(ledger_url, "SELECT COUNT(*) FROM tasks") == [(0,)]
        assert raw_sql(ledger_url, "SELECT COUNT(*) FROM tasks") == [(1,)]
        assert raw_sql(ledger_url, "SELECT COUNT(*) FROM attempts") == [(1,)]


# -- the fast path binds exactly what Connection.execute binds, on both backends -------------------

_PARAMSTYLES = {"sqlite": ("qmark", "named"), "postgres": ("pyformat", "format")}
_ODD = sa.Table(  # bind names pyformat cannot carry as they are (escaped_bind_names)
    "odd_names",
    sa.MetaData(),
    sa.Column("per cent%", sa.Integer),
    sa.Column("a.b", sa.String(20)),
    sa.Column("x(y) z", sa.String(20)),
)


Step = tuple[str, Any, tuple[str, ...] | None, dict[str, Any]]


def _steps(dialect: str, at: datetime) -> list[Step]:
    """Every hot statement with realistic values, in an order the foreign keys accept."""
    from tierwise.ledger.budgets import RESERVATION_COLUMNS
    from tierwise.ledger.statements import core_statements

    hot = budget_statements()
    core = core_statements(dialect)
    task = Task.create("extract", "Invoice 42 \u2014 caf\u00e9", session="s-1")
    attempt = make_attempt(task, 0, started_at=at, outcome="rejected", cost_usd="0.0123456789")
    return [
        ("odd", _ODD.insert(), ("per cent%", "a.b", "x(y) z"), {"per cent%": 7, "a.b": "ab",
                                                               "x(y) z": "xy"}),
        ("touch_session", *core["touch_session"], {"id": "s-1", "created_at": at,
                                                     "last_seen_at": at}),
        ("insert_task", *core["insert_task"], _task_values(task, at)),
        ("upsert_attempt", *core["upsert_attempt"], _attempt_values(attempt, at)),
        ("finish_task", *core["finish_task"], _finish_values(task.id, at)),
        ("hold", hot.hold, None, {"b_scope": "kind-day:x", "b_amount": 5, "b_limit": 10**12,
                                  "b_now": at}),
        ("insert_reservation", hot.insert_reservation, RESERVATION_COLUMNS,
         {"task_id": task.id, "scopes_json": '["kind-day:x"]', "amount_pusd": 5,
          "state": "held", "created_at": at}),
        ("close_reservation", hot.close_reservation, None,
         {"b_id": None, "b_state": "settled", "b_actual": 3, "b_now": at}),
        ("adjust", hot.adjust, None, {"b_scope": "kind-day:x", "b_held": -5, "b_spent": 3,
                                      "b_now": at}),
    ]  # fmt: skip


def _task_values(task: Task, at: datetime) -> dict[str, Any]:
    return {
        "id": task.id, "kind": task.kind, "session_id": task.session, "role": "live",
        "policy_revision": None, "decision_tier": "cheap", "decision_tier_index": 0,
        "decision_step": "rule", "decision_rule": "#0", "decision_floor": None,
        "decision_json": "{}", "prompt_sha256": "0" * 64, "prompt_chars": len(task.prompt),
        "prompt_text": task.prompt, "outcome": "running", "created_at": at, "key_id": 7,
        "plan_id": "p-1", "subtask_id": None, "parent_id": None, "plan_role": "planner",
    }  # fmt: skip


def _attempt_values(attempt: Any, at: datetime) -> dict[str, Any]:
    from tierwise.ledger.schema import to_pico

    return {
        "task_id": attempt.task_id, "attempt_no": 0, "kind": attempt.kind,
        "session_id": attempt.session, "role": "live", "tier": attempt.tier, "tier_index": 0,
        "model": attempt.model, "provider": attempt.provider, "outcome": attempt.outcome,
        **attempt.usage.as_dict(), "cost_pusd": to_pico(attempt.cost_usd),
        "latency_s": 0.125, "verdicts_json": "[]", "failure": "json: not JSON",
        "error_class": None, "escalated_from": None, "stop_reason": "end",
        "output_sha256": "1" * 64, "output_chars": 3, "output_text": "out",
        "started_at": at, "recorded_at": at,
        "plan_id": "p-1", "subtask_id": "s2", "parent_id": "t-0", "plan_role": "executor",
    }  # fmt: skip


def _finish_values(task_id: str, at: datetime) -> dict[str, Any]:
    return {
        "b_id": task_id, "outcome": "exhausted", "final_tier": None, "cost_pusd": 12345678900,
        "latency_s": 1.5, "attempts": 1, "output_sha256": None, "output_chars": None,
        "output_text": None, "finished_at": at,
    }  # fmt: skip


_STORED = ("odd_names", "sessions", "tasks", "attempts", "budget_counters", "reservations")


def _stored(conn: sa.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every row as stored, bypassing type processing; generated ids left out."""
    from tierwise.ledger.schema import metadata

    out = {}
    for name in _STORED:
        table = _ODD if name == "odd_names" else metadata.tables[name]
        cols = [c for c in table.columns if not (c.name == "id" and c.autoincrement is True)]
        cols = [c for c in cols if not (c.name == "id" and isinstance(c.type, sa.Integer))]
        if conn.dialect.name == "postgresql":
            # %% : the name "per cent%" inside SQL that psycopg reads for placeholders
            exprs = ", ".join(f'CAST("{c.name}" AS TEXT)' for c in cols).replace("%", "%%")
        else:
            exprs = ", ".join(f'"{c.name}"' for c in cols)
        out[name] = sorted(
            tuple(r) for r in conn.exec_driver_sql(f"SELECT {exprs} FROM {name}").all()
        )
    return out


@pytest.mark.parametrize("style", [0, 1], ids=["default-paramstyle", "other-paramstyle"])
def test_the_fast_path_binds_exactly_what_sqlalchemy_binds(
    backend: str, ledger_url: str, style: int
) -> None:
    """Every hot statement, compiled by ``prepare`` and run on the DBAPI cursor, sends the driver
    the same SQL and parameters as ``Connection.execute`` and stores the same bytes — on SQLite
    (qmark, named) and on PostgreSQL through psycopg (pyformat with ``::`` casts, format)."""
    from tierwise.ledger.engine import parse_ledger_url

    paramstyle = _PARAMSTYLES[backend][style]
    open_ledger(ledger_url, env={}).close()  # the schema
    url, _ = parse_ledger_url(ledger_url)
    engine = sa.create_engine(url, paramstyle=paramstyle, poolclass=sa.NullPool)
    at = datetime(2025, 6, 1, 12, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    sent: list[tuple[str, Any]] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def capture(conn: Any, cursor: Any, sql: str, params: Any, ctx: Any, many: bool) -> None:
        sent.append((sql, params))

    try:
        with engine.begin() as conn:
            _ODD.create(conn)
        stored = {}
        steps = _steps(engine.dialect.name, at)
        for path in ("core", "fast"):
            with engine.connect() as conn:
                trans = conn.begin()
                cursor = conn.connection.cursor()
                rid = None
                for name, stmt, keys, values in steps:
                    values = {**values, "b_id": rid} if name == "close_reservation" else values
                    prepared = prepare(stmt, engine.dialect, keys)
                    if path == "core":
                        sent.clear()
                        result = conn.execute(stmt, values)
                        ((sql, params),) = sent
                        assert prepared.sql == sql, name
                        ours = prepared.parameters(values)
                        assert (list(ours) if prepared.positional else ours) == (
                            list(params) if prepared.positional else params
                        ), name
                        row = result.fetchone() if result.returns_rows else None
                    else:
                        prepared.run(cursor, values)
                        row = cursor.fetchone() if cursor.description else None
                    if name == "insert_reservation":
                        assert row is not None
                        rid = row[0]
                    if name == "hold" and path == "core":
                        assert result.rowcount == 0  # no counter yet: the condition holds none
                    if name == "hold":  # create the counter the rest of the steps update
                        conn.exec_driver_sql(
                            "INSERT INTO budget_counters (scope, spent_pusd, held_pusd, "
                            "updated_at) VALUES ('kind-day:x', 0, 0, '2025-01-01 00:00:00')"
                        )
                        again = prepared.run(cursor, values) if path == "fast" else None
                        if path == "core":
                            assert conn.execute(stmt, values).rowcount == 1
                        else:
                            assert again is not None and again.rowcount == 1
                cursor.close()
                stored[path] = _stored(conn)
                trans.rollback()
        assert stored["fast"] == stored["core"]
        assert all(stored["core"][name] for name in _STORED)  # every table got its row
    finally:
        engine.dispose()
