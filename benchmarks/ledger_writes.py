"""What a durable ledger write costs on the request path, against raw sqlite3 in the same run.

Measures, on a temporary file in the current directory's filesystem (so the fsync is real):

* ``raw sqlite3``: one ``BEGIN IMMEDIATE; INSERT; COMMIT`` with WAL + ``synchronous=FULL`` —
  the floor any durable SQLite write pays;
* ``Ledger.record_attempt``: the cascade's per-attempt write (an UPSERT with RETURNING);
* ``reserve + settle``: the two budget transactions around each attempt (one scope);
* the same ledger write with ``synchronous=NORMAL`` (what FULL's fsync costs on this disk).

Run: ``.venv/bin/python benchmarks/ledger_writes.py [N]``
"""

from __future__ import annotations

import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa

from tierwise.ledger import Ledger, open_ledger
from tierwise.ledger.fixtures import POLICY_REVISION, make_attempt, make_decision
from tierwise.task import Task


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


if __name__ == "__main__":
    main()
