"""The ledger stores tasks and attempts faithfully, durably configured, and refuses bad writes.

Most tests run on SQLite and on a real PostgreSQL server (the ``ledger_url`` fixture).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tierwise.cascade.result import Verdict
from tierwise.errors import LedgerError
from tierwise.ledger import Ledger, open_ledger
from tierwise.ledger.fixtures import POLICY_REVISION, make_attempt, make_decision, record_task
from tierwise.ledger.schema import from_pico, to_pico
from tierwise.pricing.usage import Usage
from tierwise.task import Task

Raw = Callable[..., list[tuple[Any, ...]]]


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    with open_ledger(ledger_url, env={}) as book:
        yield book


@pytest.fixture
def sqlite_ledger(tmp_path: Path) -> Iterator[Ledger]:
    with open_ledger(tmp_path / "ledger.db", env={}) as book:
        yield book


def _begin(ledger: Ledger, task: Task, *, store_content: bool = False) -> None:
    ledger.record_policy_revision(POLICY_REVISION, '{"version": 1}', "tierwise.toml")
    ledger.begin_task(
        task,
        make_decision(task.kind),
        policy_revision=POLICY_REVISION,
        role="live",
        store_content=store_content,
    )


def test_connections_use_wal_full_sync_foreign_keys_and_busy_timeout(
    sqlite_ledger: Ledger,
) -> None:
    with sqlite_ledger.engine.connect() as conn:
        pragma = {
            name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
        }
    assert pragma == {
        "journal_mode": "wal",
        "synchronous": 2,  # FULL
        "foreign_keys": 1,
        "busy_timeout": 30_000,
    }


def test_postgres_connections_commit_durably_at_read_committed(
    postgres_url: str,
) -> None:
    """Whatever the server's defaults, a commit waits for the WAL flush and the budget UPDATE
    re-checks its condition after a lock wait (READ COMMITTED)."""
    with open_ledger(postgres_url, env={}) as book, book.engine.connect() as conn:
        got = {
            name: conn.exec_driver_sql(f"SHOW {name}").scalar()
            for name in ("synchronous_commit", "transaction_isolation", "application_name")
        }
    assert got == {
        "synchronous_commit": "on",
        "transaction_isolation": "read committed",
        "application_name": "tierwise",
    }
    with open_ledger(f"{postgres_url}?sync=normal", env={}) as book, book.engine.connect() as c:
        assert c.exec_driver_sql("SHOW synchronous_commit").scalar() == "off"


def test_the_pool_size_comes_from_the_url(postgres_url: str) -> None:
    with open_ledger(f"{postgres_url}?pool_size=3&max_overflow=1", env={}) as book:
        pool = book.engine.pool
        assert isinstance(pool, sa.QueuePool)
        assert (pool.size(), book.settings.max_overflow) == (3, 1)
        assert "pool_size" not in str(book.engine.url)  # not passed on to the driver


def test_back_to_back_transactions_reuse_the_connection_just_returned(ledger: Ledger) -> None:
    """Once the pool holds two connections, one thread's next transactions still get the one it
    just used (last in, first out): alternating made each SQLite connection re-read every page
    the other had written, about 30 reads per gateway request."""
    first, second = ledger.engine.connect(), ledger.engine.connect()  # two at once: both pooled
    first_dbapi = first.connection.dbapi_connection
    first.close()
    second.close()
    used = []
    for _ in range(4):
        with ledger.engine.connect() as conn:
            used.append(conn.connection.dbapi_connection)
    assert first_dbapi is not None and used[0] is not first_dbapi  # the last one returned
    assert all(c is used[0] for c in used)


def test_writes_take_the_write_lock_at_begin(tmp_path: Path, sqlite_ledger: Ledger) -> None:
    """A write transaction holds the lock from BEGIN, so another writer cannot start at all."""
    ledger = sqlite_ledger
    other = sqlite3.connect(tmp_path / "ledger.db", timeout=0, isolation_level=None)
    try:
        with ledger._write(), pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")  # free again after commit
        other.execute("ROLLBACK")
    finally:
        other.close()


def test_a_task_and_its_attempts_round_trip(ledger: Ledger) -> None:
    task, records = record_task(
        ledger, outcomes=["rejected", "accepted"], costs=["0.0001234", "0.002"], session="s-1"
    )
    row = ledger.task(task.id)
    assert row is not None
    assert row["kind"] == task.kind
    assert row["session"] == "s-1"
    assert row["decision_tier"] == "cheap"
    assert row["decision"]["step"] == "rule"
    assert row["policy_revision"] == POLICY_REVISION
    assert row["outcome"] == "accepted"
    assert row["final_tier"] == "mid"
    assert row["attempts"] == 2
    assert row["cost_usd"] == Decimal("0.0021234")
    assert row["finished_at"] is not None and row["finished_at"].tzinfo is UTC
    stored = ledger.attempts_of(task.id)
    assert [a["attempt_no"] for a in stored] == [0, 1]
    for got, want in zip(stored, records, strict=True):
        assert got["tier"] == want.tier
        assert got["outcome"] == want.outcome
        assert got["usage"] == want.usage.as_dict()
        assert got["cost_usd"] == want.cost_usd
        assert got["failure"] == want.failure
        assert got["escalated_from"] == want.escalated_from
        assert got["verdicts"] == [
            {"validator": v.validator, "ok": v.ok, "reason": v.reason, "score": v.score}
            for v in want.verdicts
        ]
        assert got["started_at"] == want.started_at


def test_record_attempt_upserts_by_task_and_attempt_number(ledger: Ledger) -> None:
    task = Task.create("extract", "hello")
    _begin(ledger, task)
    first = make_attempt(task, 0, outcome="accepted", cost_usd="0.5")
    row_id = ledger.record_attempt(first, store_content=False)
    final = replace(first, outcome="rejected", failure="json: bad", cost_usd=Decimal("0.25"))
    assert ledger.record_attempt(final, store_content=False) == row_id
    stored = ledger.attempts_of(task.id)
    assert len(stored) == 1
    assert stored[0]["id"] == row_id
    assert stored[0]["outcome"] == "rejected"
    assert stored[0]["failure"] == "json: bad"
    assert stored[0]["cost_usd"] == Decimal("0.25")
    second = ledger.record_attempt(make_attempt(task, 1, tier_index=1), store_content=False)
    assert second != row_id


def test_content_is_kept_only_when_asked(ledger: Ledger) -> None:
    secret_prompt, answer = "the prompt text", "the answer text"
    for store in (False, True):
        task = Task.create("extract", secret_prompt)
        _begin(ledger, task, store_content=store)
        attempt = make_attempt(task, 0, output=answer)
        ledger.record_attempt(attempt, store_content=store)
        ledger.finish_task(
            task.id,
            outcome="accepted",
            final_tier="cheap",
            cost_usd=attempt.cost_usd,
            latency_s=0.1,
            attempts=1,
            output=answer,
            store_content=store,
        )
        row = ledger.task(task.id)
        stored = ledger.attempts_of(task.id)[0]
        assert row is not None
        assert row["prompt_chars"] == len(secret_prompt)
        assert len(row["prompt_sha256"]) == 64
        assert stored["output_chars"] == len(answer)
        assert stored["output_sha256"] == row["output_sha256"]
        assert row["prompt"] == (secret_prompt if store else None)
        assert row["output"] == (answer if store else None)
        assert stored["output"] == (answer if store else None)


def test_a_task_id_is_recorded_once(ledger: Ledger) -> None:
    task = Task.create("extract", "x")
    _begin(ledger, task)
    with pytest.raises(LedgerError, match="already in the ledger"):
        _begin(ledger, task)


def test_attempts_and_finishes_need_a_begun_task(ledger: Ledger) -> None:
    orphan = Task.create("extract", "x")
    with pytest.raises(LedgerError, match=r"(?i)foreign key"):
        ledger.record_attempt(make_attempt(orphan, 0), store_content=False)
    with pytest.raises(LedgerError, match="begin_task"):
        ledger.finish_task(
            orphan.id,
            outcome="accepted",
            final_tier="cheap",
            cost_usd=Decimal(0),
            latency_s=0.0,
            attempts=0,
            output=None,
            store_content=False,
        )
    assert ledger.tail() == []


def test_unknown_task_outcomes_are_refused(ledger: Ledger) -> None:
    task = Task.create("extract", "x")
    _begin(ledger, task)
    with pytest.raises(ValueError, match="outcome"):
        ledger.finish_task(
            task.id,
            outcome="great",
            final_tier=None,
            cost_usd=Decimal(0),
            latency_s=0.0,
            attempts=0,
            output=None,
            store_content=False,
        )


def test_policy_revisions_are_recorded_once_and_filled_in(ledger_url: str, raw_sql: Raw) -> None:
    with open_ledger(ledger_url) as book:
        task = Task.create("extract", "x")
        # a task may name a revision before its text is known; recording it later fills it in
        book.begin_task(
            task, make_decision("extract"), policy_revision="r1", role="live", store_content=False
        )
        book.record_policy_revision("r1", '{"a": 1}', "p.toml")
        book.record_policy_revision("r1", '{"a": 2}', "other.toml")
    rows = raw_sql(ledger_url, "SELECT revision, policy_json, source FROM policy_revisions")
    assert rows == [("r1", '{"a": 1}', "p.toml")]


def test_reopening_keeps_everything_and_timestamps_stay_utc(ledger_url: str) -> None:
    clock = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    east = timezone(timedelta(hours=5))
    with open_ledger(ledger_url, now=lambda: clock) as book:
        task, _ = record_task(book, started_at=clock.astimezone(east))
    with open_ledger(ledger_url) as book:
        row = book.task(task.id)
        attempts = book.attempts_of(task.id)
    assert row is not None and row["created_at"] == clock
    assert attempts[0]["started_at"] == clock
    assert attempts[0]["started_at"].utcoffset() == timedelta(0)


def test_naive_timestamps_are_refused(ledger: Ledger) -> None:
    task = Task.create("extract", "x")
    _begin(ledger, task)
    naive = make_attempt(task, 0, started_at=datetime(2025, 1, 1))
    with pytest.raises((LedgerError, ValueError), match="timezone"):
        ledger.record_attempt(naive, store_content=False)


def test_open_creates_missing_directories_but_not_for_reads(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "ledger.db"
    with pytest.raises(LedgerError, match="does not exist"):
        open_ledger(target, create=False)
    assert not target.exists()
    open_ledger(target).close()
    assert target.exists()
    open_ledger(f"sqlite:///{target}", create=False).close()


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("sqlite://", "in-memory"),
        ("sqlite:///:memory:", "in-memory"),
        ("not a url://x", "invalid ledger URL"),
        ("mysql://u@h/db", "SQLite or PostgreSQL"),
        ("postgresql+psycopg2://u:secret@h/db", "psycopg 3"),
        ("postgresql+psycopg://u@h/db?pool_size=0", "pool_size"),
        ("postgresql+psycopg://u@h/db?migrate=sometimes", "migrate"),
        ("sqlite:///x.db?reservation_ttl=soon", "reservation_ttl"),
    ],
)
def test_unusable_urls_are_refused_with_a_reason(url: str, reason: str) -> None:
    with pytest.raises(LedgerError, match=reason) as info:
        open_ledger(url)
    assert "secret" not in str(info.value)


def test_an_unreachable_postgres_fails_fast_naming_no_password() -> None:
    url = "postgresql+psycopg://tierwise:hunter2-password@127.0.0.1:9/ledger?connect_timeout=2"
    with pytest.raises(LedgerError, match="cannot open the ledger") as info:
        open_ledger(url)
    assert "hunter2" not in str(info.value) and "***" in str(info.value)


def test_a_missing_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    from tierwise.ledger import MissingDriverError

    real_import = builtins.__import__

    def no_psycopg(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "psycopg" or name.startswith("psycopg."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_psycopg)
    with pytest.raises(MissingDriverError, match=r"tierwise\[postgres\]") as info:
        open_ledger("postgresql+psycopg://u@127.0.0.1/db")
    assert isinstance(info.value, ImportError) and isinstance(info.value, LedgerError)


def test_a_directory_is_not_a_ledger(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="directory"):
        open_ledger(tmp_path)


def test_a_closed_ledger_refuses_work(ledger_url: str) -> None:
    book = open_ledger(ledger_url)
    book.close()
    book.close()  # idempotent
    with pytest.raises(LedgerError, match="closed"):
        book.tail()


def test_error_messages_do_not_echo_bound_values(ledger: Ledger) -> None:
    """A failed write says what failed, never the row's content (which may be a prompt).

    Postgres would quote the whole failing row in its DETAIL line for a NOT NULL violation.
    """
    task = Task.create("extract", "x")
    _begin(ledger, task)
    marker = "SENSITIVE-OUTPUT-MARKER"
    for bad in (
        replace(make_attempt(task, 0, output=marker), task_id="missing-task"),
        replace(make_attempt(task, 0, output=marker), model=None),
    ):
        with pytest.raises(LedgerError) as info:
            ledger.record_attempt(bad, store_content=True)
        assert marker not in str(info.value)
        assert "failed" in str(info.value)


# -- property: any attempt record round-trips ---------------------------------------------------

_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
_usage = st.builds(
    Usage,
    *(st.integers(min_value=0, max_value=2**40) for _ in range(5)),
)
_cost = st.decimals(min_value=Decimal(0), max_value=Decimal(10_000), places=12, allow_nan=False)
_verdict = st.builds(
    Verdict,
    validator=st.sampled_from(["json", "regex", "confidence"]),
    ok=st.booleans(),
    reason=st.text(st.characters(codec="ascii"), max_size=30),
    score=st.none() | st.floats(min_value=0, max_value=1),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    usage=_usage,
    cost=_cost,
    latency=st.floats(min_value=0, max_value=600, allow_nan=False),
    outcome=st.sampled_from(["accepted", "rejected", "error", "partial"]),
    role=st.sampled_from(["live", "probe", "validator", "replay"]),
    verdicts=st.lists(_verdict, max_size=3).map(tuple),
    output=st.none() | _text,
    stop=st.none() | st.sampled_from(["end", "max_tokens", "refusal"]),
    model=st.text(
        st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\x00"),
        min_size=1,
        max_size=30,
    ),
)
def test_any_attempt_round_trips(
    ledger: Ledger,
    usage: Usage,
    cost: Decimal,
    latency: float,
    outcome: str,
    role: str,
    verdicts: tuple[Verdict, ...],
    output: str | None,
    stop: str | None,
    model: str,
) -> None:
    book = ledger
    task = Task.create("extract", "prompt")
    _begin(book, task)
    record = replace(
        make_attempt(task, 0),
        usage=usage,
        cost_usd=cost,
        latency_s=latency,
        outcome=outcome,  # type: ignore[arg-type]
        role=role,  # type: ignore[arg-type]
        verdicts=verdicts,
        output=output,
        stop_reason=stop,
        model=model,
    )
    book.record_attempt(record, store_content=True)
    (got,) = book.attempts_of(task.id)
    assert got["usage"] == usage.as_dict()
    assert got["cost_usd"] == cost
    assert got["latency_s"] == latency
    assert (got["outcome"], got["role"], got["model"]) == (outcome, role, model)
    assert got["stop_reason"] == stop
    if book.backend == "postgresql" and output is not None:
        # Postgres text cannot hold NUL: it is stored as U+FFFD (the hash and size are exact)
        assert got["output"] == output.replace("\x00", "\ufffd")
    else:
        assert got["output"] == output
    assert got["verdicts"] == json.loads(
        json.dumps(
            [
                {"validator": v.validator, "ok": v.ok, "reason": v.reason, "score": v.score}
                for v in verdicts
            ]
        )
    )


@given(st.decimals(min_value=Decimal("-1e6"), max_value=Decimal("1e6"), places=12))
def test_pico_usd_conversion_is_exact_to_twelve_places(amount: Decimal) -> None:
    assert from_pico(to_pico(amount)) == amount


# -- batch(): many writes, one transaction ------------------------------------------------------


def test_a_batch_commits_its_writes_together(ledger_url: str, raw_sql: Raw) -> None:
    with open_ledger(ledger_url) as book:
        task = Task.create("extract", "x")
        with book.batch():
            _begin(book, task)
            book.record_attempt(make_attempt(task, 0), store_content=False)
            with book.batch():  # nested blocks join the outer one
                book.record_attempt(make_attempt(task, 1, tier_index=1), store_content=False)
            assert raw_sql(ledger_url, "SELECT COUNT(*) FROM attempts") == [(0,)]
        assert raw_sql(ledger_url, "SELECT COUNT(*) FROM attempts") == [(2,)]


def test_a_failing_batch_leaves_nothing_behind(ledger_url: str) -> None:
    with open_ledger(ledger_url) as book:
        task = Task.create("extract", "x")
        with pytest.raises(RuntimeError), book.batch():
            _begin(book, task)
            book.record_attempt(make_attempt(task, 0), store_content=False)
            raise RuntimeError("caller failed")
        assert book.task(task.id) is None
        assert book.tail() == []


def test_a_write_refused_by_the_ledger_inside_a_batch_changes_nothing_and_the_batch_goes_on(
    ledger_url: str,
) -> None:
    """A budget overrun and a duplicate task, inside a batch: rolled back to their savepoints
    (also on Postgres, where a failed statement would abort the whole transaction)."""
    from tierwise.errors import BudgetExceededError

    with open_ledger(ledger_url) as book:
        task, known = Task.create("extract", "x"), Task.create("extract", "known")
        _begin(book, known)
        with book.batch():
            _begin(book, task)
            with pytest.raises(BudgetExceededError):
                # "a" is raised first (scope order), then "b" overruns: "a" must not keep it
                book.reserve(task.id, {"a": Decimal(10), "b": Decimal(1)}, Decimal(2))
            with pytest.raises(LedgerError, match="already in the ledger"):
                _begin(book, known.with_(session="s-new"))  # several statements: a savepoint
            book.record_attempt(make_attempt(task, 0), store_content=False)
        assert book.budget("a") is None
        assert len(book.attempts_of(task.id)) == 1
        assert book.integrity_check() == []


def test_a_write_refused_by_the_database_inside_a_batch(backend: str, ledger_url: str) -> None:
    """SQLite: the statement alone fails and the batch goes on. Postgres: the batch is aborted —
    every later write fails, and so does the batch, never reporting a commit it did not make."""
    with open_ledger(ledger_url) as book:
        task = Task.create("extract", "x")
        orphan = make_attempt(Task.create("x", "y"), 0)
        if backend == "sqlite":
            with book.batch():
                _begin(book, task)
                with pytest.raises(LedgerError, match=r"(?i)foreign key"):
                    book.record_attempt(orphan, store_content=False)
                book.record_attempt(make_attempt(task, 0), store_content=False)
            assert len(book.attempts_of(task.id)) == 1
        else:
            with pytest.raises(LedgerError, match="aborted"), book.batch():
                _begin(book, task)
                with pytest.raises(LedgerError, match=r"(?i)foreign key"):
                    book.record_attempt(orphan, store_content=False)
                with pytest.raises(LedgerError, match="an earlier write aborted this batch"):
                    book.record_attempt(make_attempt(task, 0), store_content=False)
            assert book.task(task.id) is None
            with book.batch():  # the next batch is a fresh transaction
                _begin(book, task)
            assert book.task(task.id) is not None
        assert book.integrity_check() == []


# -- a database that blinks --------------------------------------------------------------------


def test_a_postgres_restart_costs_a_reconnect_not_an_error(
    postgres_url: str, postgres_cluster: Any
) -> None:
    """While the server is down a write fails at once with a LedgerError (nothing half-written);
    once it is back, pooled connections are checked and replaced before use."""
    with open_ledger(f"{postgres_url}?connect_timeout=3", env={}) as book:
        before, _ = record_task(book)
        postgres_cluster.stop()
        try:
            task = Task.create("extract", "during the outage")
            with pytest.raises(LedgerError, match="ledger write failed"):
                _begin(book, task)
            with pytest.raises(LedgerError):
                book.reserve("t", {"task:t": Decimal(1)}, Decimal("0.5"))
        finally:
            postgres_cluster.start()
        after, _ = record_task(book)  # the same Ledger, its pool full of dead connections
        assert book.task(before.id) is not None and book.task(after.id) is not None
        assert book.task(task.id) is None
        assert book.integrity_check() == []
