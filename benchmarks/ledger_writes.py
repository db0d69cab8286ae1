"""What a durable ledger write costs on the request path, against raw sqlite3 in the same run.

Measures, on a temporary file in the current directory's filesystem (so the fsync is real):

* ``raw sqlite3``: one ``BEGIN IMMEDIATE; INSERT; COMMIT`` with WAL + ``synchronous=FULL`` —
  the floor any durable SQLite write pays;
* ``Ledger.record_attempt``: the cascade's per-attempt write (an UPSERT with RETURNING);
* ``reserve + settle``: the two budget transactions around each attempt (one scope);
* the same ledger write with ``synchronous=NORMAL`` (what FULL's fsync costs on this disk).

Then the CPU the ledger spends per task, with ``synchronous=NORMAL`` (no fsync, so the code's
own cost shows): one cascade task's writes in one ``batch()`` — ``begin_task`` +
``record_attempt`` + ``finish_task``, one commit — three ways, interleaved:

* ``raw sqlite3``: the same three rows into the same schema with hand-written SQL on one
  ``sqlite3`` connection (the floor: SQLite's own execute + commit);
* ``before``: the previous write path, kept here as the reference — every statement through
  ``Connection.execute`` (compiled-cache lookup, type processors, result set-up), a
  ``begin_nested()`` savepoint around ``begin_task``, ``BEGIN IMMEDIATE`` through
  ``exec_driver_sql`` (its timestamps use today's cheaper SQLite processor, so it is, if
  anything, a little faster than the old code was);
* ``after``: :class:`~tierwise.ledger.Ledger` as shipped (statements compiled once per engine,
  run on the DBAPI cursor).

Run: ``.venv/bin/python benchmarks/ledger_writes.py [N]``
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tierwise.cascade.result import AttemptRecord
from tierwise.ledger import Ledger, open_ledger
from tierwise.ledger.fixtures import POLICY_REVISION, make_attempt, make_decision
from tierwise.ledger.schema import attempts, tasks, to_pico
from tierwise.ledger.sql import upsert
from tierwise.task import Decision, Task


def measure(fn: Callable[[int], object], calls: range, samples: list[float]) -> None:
    """Time each call of *fn* over *calls*, appending seconds to *samples*."""
    for i in calls:
        t0 = time.perf_counter()
        fn(i)
        samples.append(time.perf_counter() - t0)


def raw_sqlite(directory: Path) -> tuple[Callable[[int], object], Callable[[], None]]:
    conn = sqlite3.connect(directory / "raw.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, task TEXT, no INT, cost INT, body TEXT)")

    def write(i: int) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (task, no, cost, body) VALUES (?, ?, ?, ?)", ("t", i, 1, "x"))
        conn.execute("COMMIT")

    return write, conn.close


def ledger_for(directory: Path, name: str, synchronous: str) -> tuple[Ledger, Task]:
    book = open_ledger(directory / name, env={})
    if synchronous != "FULL":

        @sa.event.listens_for(book.engine, "connect")
        def _sync(dbapi_connection: object, _record: object) -> None:
            dbapi_connection.execute(f"PRAGMA synchronous={synchronous}")  # type: ignore[attr-defined]

        book.engine.dispose()
    task = Task.create("extract", "benchmark")
    book.record_policy_revision(POLICY_REVISION, "{}", None)
    book.begin_task(
        task,
        make_decision("extract"),
        policy_revision=POLICY_REVISION,
        role="live",
        store_content=False,
    )
    return book, task


def ledger_writes(
    directory: Path, synchronous: str
) -> tuple[Callable[[int], object], Callable[[], None]]:
    book, task = ledger_for(directory, f"ledger-{synchronous}.db", synchronous)

    def write(i: int) -> None:
        book.record_attempt(make_attempt(task, i, outcome="rejected"), store_content=False)

    return write, book.close


def reservations(directory: Path) -> tuple[Callable[[int], object], Callable[[], None]]:
    book, task = ledger_for(directory, "budget.db", "FULL")
    limits = {"kind-day:extract:2025-01-01": Decimal(10**6)}

    def cycle(_: int) -> None:
        book.settle(book.reserve(task.id, limits, Decimal("0.01")), Decimal("0.005"))

    return cycle, book.close


# -- one task's writes in one batch ----------------------------------------------------------

TaskWrite = Callable[[Task, AttemptRecord], None]


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def task_row(task: Task, decision: Decision, now: datetime) -> dict[str, Any]:
    """The ``tasks`` row ``begin_task`` writes (the same values the ledger computes)."""
    return dict(
        id=task.id,
        kind=task.kind,
        session_id=task.session,
        role="live",
        policy_revision=POLICY_REVISION,
        decision_tier=decision.tier,
        decision_tier_index=decision.tier_index,
        decision_step=decision.step,
        decision_rule=f"#{decision.rule_index}",
        decision_floor=decision.floor,
        decision_json=json.dumps(decision.as_dict()),
        prompt_sha256=_sha(task.prompt),
        prompt_chars=len(task.prompt),
        prompt_text=None,
        outcome="running",
        created_at=now,
    )


def attempt_row(attempt: AttemptRecord, now: datetime) -> dict[str, Any]:
    """The ``attempts`` row ``record_attempt`` writes."""
    output = attempt.output or ""
    verdicts = [
        {"validator": v.validator, "ok": v.ok, "reason": v.reason, "score": v.score}
        for v in attempt.verdicts
    ]
    return {
        "task_id": attempt.task_id,
        "attempt_no": attempt.attempt_no,
        "kind": attempt.kind,
        "session_id": attempt.session,
        "role": attempt.role,
        "tier": attempt.tier,
        "tier_index": attempt.tier_index,
        "model": attempt.model,
        "provider": attempt.provider,
        "outcome": attempt.outcome,
        **attempt.usage.as_dict(),
        "cost_pusd": to_pico(attempt.cost_usd),
        "latency_s": float(attempt.latency_s),
        "verdicts_json": json.dumps(verdicts),
        "failure": attempt.failure,
        "error_class": attempt.error_class,
        "escalated_from": attempt.escalated_from,
        "stop_reason": attempt.stop_reason,
        "output_sha256": _sha(output),
        "output_chars": len(output),
        "output_text": None,
        "started_at": attempt.started_at,
        "recorded_at": now,
    }


def finish_row(task: Task, output: str, now: datetime) -> dict[str, Any]:
    """The ``tasks`` columns ``finish_task`` updates."""
    return {
        "outcome": "accepted",
        "final_tier": "cheap",
        "cost_pusd": to_pico(Decimal("0.001")),
        "latency_s": 0.25,
        "attempts": 1,
        "output_sha256": _sha(output),
        "output_chars": len(output),
        "output_text": None,
        "finished_at": now,
    }


def _normal_ledger(path: Path) -> Ledger:
    book = open_ledger(f"sqlite:///{path}?sync=normal", env={})
    book.record_policy_revision(POLICY_REVISION, "{}", None)
    return book


def task_raw(directory: Path) -> tuple[TaskWrite, Callable[[], None]]:
    """The floor: the same rows, hand-written SQL, one sqlite3 connection."""
    _normal_ledger(directory / "task-raw.db").close()  # the schema, migrated
    conn = sqlite3.connect(directory / "task-raw.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    cur = conn.cursor()
    decision = make_decision("extract")

    def ts(value: datetime) -> str:
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")

    def one(task: Task, attempt: AttemptRecord) -> None:
        now = datetime.now(UTC)
        row = task_row(task, decision, now)
        row["created_at"] = ts(now)
        arow = attempt_row(attempt, now)
        arow["started_at"], arow["recorded_at"] = ts(attempt.started_at), ts(now)
        frow = finish_row(task, attempt.output or "", now)
        frow["finished_at"] = ts(now)
        cur.execute("BEGIN IMMEDIATE")
        cur.execute(
            f"INSERT INTO tasks ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
            tuple(row.values()),
        )
        cur.execute(
            f"INSERT INTO attempts ({', '.join(arow)}) VALUES ({', '.join('?' * len(arow))}) "
            "ON CONFLICT (task_id, attempt_no) DO UPDATE SET outcome = excluded.outcome "
            "RETURNING id",
            tuple(arow.values()),
        )
        cur.fetchone()
        cur.execute(
            f"UPDATE tasks SET {', '.join(f'{k} = ?' for k in frow)} WHERE id = ?",
            (*frow.values(), task.id),
        )
        cur.execute("COMMIT")

    def close() -> None:
        cur.close()
        conn.close()

    return one, close


def task_before(directory: Path) -> tuple[TaskWrite, Callable[[], None]]:
    """The previous write path: ``Connection.execute`` per statement, a nested savepoint."""
    _normal_ledger(directory / "task-before.db").close()  # the schema, migrated
    # The previous engine set-up too: the same pragmas, BEGIN IMMEDIATE through exec_driver_sql.
    engine = sa.create_engine(f"sqlite:///{directory / 'task-before.db'}")

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        for pragma in ("busy_timeout = 30000", "journal_mode = WAL", "synchronous = NORMAL"):
            dbapi_connection.execute(f"PRAGMA {pragma}")
        dbapi_connection.execute("PRAGMA foreign_keys = ON")

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    decision = make_decision("extract")
    finish = tasks.update().where(tasks.c.id == sa.bindparam("b_id"))
    keys = ("task_id", "attempt_no")

    def one(task: Task, attempt: AttemptRecord) -> None:
        with engine.begin() as conn:
            with conn.begin_nested():
                conn.execute(tasks.insert(), task_row(task, decision, datetime.now(UTC)))
            values = attempt_row(attempt, datetime.now(UTC))
            update = [k for k in values if k not in keys]
            upsert(conn, attempts, keys, values, update, "id").scalar_one()
            params = finish_row(task, attempt.output or "", datetime.now(UTC))
            if conn.execute(finish, {"b_id": task.id, **params}).rowcount != 1:
                raise RuntimeError("task row missing")

    return one, engine.dispose


def task_after(directory: Path) -> tuple[TaskWrite, Callable[[], None]]:
    """The ledger as shipped."""
    book = _normal_ledger(directory / "task-after.db")
    decision = make_decision("extract")

    def one(task: Task, attempt: AttemptRecord) -> None:
        with book.batch():
            book.begin_task(
                task, decision, policy_revision=POLICY_REVISION, role="live", store_content=False
            )
            book.record_attempt(attempt, store_content=False)
            book.finish_task(
                task.id,
                outcome="accepted",
                final_tier="cheap",
                cost_usd=Decimal("0.001"),
                latency_s=0.25,
                attempts=1,
                output=attempt.output,
                store_content=False,
            )

    return one, book.close


def per_task(n: int, rounds: int) -> None:
    """Time one task's batch three ways (interleaved rounds) and print ratios to the floor."""
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        directory = Path(tmp)
        variants = {
            "raw sqlite3 (same rows, hand-written SQL)": task_raw(directory),
            "before: Connection.execute per statement": task_before(directory),
            "after: Ledger.batch() as shipped": task_after(directory),
        }
        samples: dict[str, list[float]] = {name: [] for name in variants}
        try:
            per_round = max(1, n // rounds)
            for r in range(-1, rounds):  # round -1 warms up
                for name, (fn, _) in variants.items():
                    work = []
                    for _ in range(per_round):
                        task = Task.create("extract", "benchmark prompt", session=None)
                        work.append((task, make_attempt(task, 0)))
                    for task, attempt in work:
                        t0 = time.perf_counter()
                        fn(task, attempt)
                        if r >= 0:
                            samples[name].append(time.perf_counter() - t0)
        finally:
            for _, close in variants.values():
                close()
    base = statistics.median(samples["raw sqlite3 (same rows, hand-written SQL)"])
    print()
    print(
        f"one task's writes in one batch (begin_task + record_attempt + finish_task), "
        f"synchronous=NORMAL, {rounds * per_round} tasks each"
    )
    print(f"{'':44} {'p50':>9} {'p95':>9} {'p50 / raw':>10}")
    p50s = {}
    for name, values in samples.items():
        values.sort()
        p50, p95 = statistics.median(values), values[int(len(values) * 0.95) - 1]
        p50s[name] = p50
        print(f"{name:44} {p50 * 1e6:7.0f}us {p95 * 1e6:7.0f}us {p50 / base:9.2f}x")
    before = p50s["before: Connection.execute per statement"]
    after = p50s["after: Ledger.batch() as shipped"]
    print(
        f"after vs before: {before / after:.2f}x faster per task; "
        f"above the SQLite floor: {(before - base) * 1e6:.0f}us -> {(after - base) * 1e6:.0f}us"
    )


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    rounds = 10
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        directory = Path(tmp)
        variants = {
            "raw sqlite3 insert (WAL, FULL)": raw_sqlite(directory),
            "Ledger.record_attempt (WAL, FULL)": ledger_writes(directory, "FULL"),
            "reserve + settle, 1 scope (FULL)": reservations(directory),
            "Ledger.record_attempt (WAL, NORMAL)": ledger_writes(directory, "NORMAL"),
        }
        samples: dict[str, list[float]] = {name: [] for name in variants}
        try:
            for fn, _ in variants.values():  # warm-up
                measure(fn, range(10**6, 10**6 + 10), [])
            # Interleaved rounds: disk latency drifts (other load), so every variant sees
            # the same conditions.
            per_round = max(1, n // rounds)
            for r in range(rounds):
                for name, (fn, _) in variants.items():
                    measure(fn, range(r * per_round, (r + 1) * per_round), samples[name])
        finally:
            for _, close in variants.values():
                close()
    base = statistics.median(samples["raw sqlite3 insert (WAL, FULL)"])
    print(f"{rounds * per_round} calls each, interleaved in {rounds} rounds; time per call")
    print(f"{'':38} {'p50':>9} {'p95':>9} {'p50 ratio':>10}")
    for name, values in samples.items():
        values.sort()
        p50, p95 = statistics.median(values), values[int(len(values) * 0.95) - 1]
        print(f"{name:38} {p50 * 1e6:7.0f}us {p95 * 1e6:7.0f}us {p50 / base:9.2f}x")
    per_task(max(n, 2000), rounds)


if __name__ == "__main__":
    main()
