"""The ledger on SQLite and on PostgreSQL, each against its own driver's floor in the same run.

1. **One task's writes** — ``begin_task`` + ``record_attempt`` + ``finish_task`` in one
   ``Ledger.batch()``, one commit — durable (SQLite ``synchronous=FULL``; Postgres
   ``synchronous_commit=on`` on a cluster with ``fsync=on``), and with ``sync=normal`` (no
   flush wait: the code's own cost shows). Floors: the same three rows with hand-written SQL on
   one raw ``sqlite3`` / ``psycopg`` connection, one commit.
2. **Concurrent reservations** — P processes (default 4) each reserve and settle against one
   shared kind budget and a per-process key budget, all starting together. Floors: the same
   statements (conditional UPDATE of each counter, INSERT … RETURNING, then UPDATE of the
   reservation and the counters, two transactions per cycle) on raw connections.

The Postgres server is a throwaway cluster this script starts (Debian's binaries, a temporary
folder on the same disk as the SQLite files, ``fsync=on``). Rounds are interleaved so that
drifting disk latency hits every variant alike.

Run: ``.venv/bin/python benchmarks/ledger_backends.py [TASKS] [CYCLES_PER_PROCESS] [PROCESSES]``
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
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

from tierwise.cascade.result import AttemptRecord
from tierwise.errors import BudgetExceededError
from tierwise.ledger import open_ledger
from tierwise.ledger.fixtures import POLICY_REVISION, make_attempt, make_decision
from tierwise.ledger.schema import to_pico
from tierwise.task import Task
from tierwise.testing.postgres import PostgresCluster

TaskWrite = Callable[[Task, AttemptRecord], None]


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _rows(task: Task, attempt: AttemptRecord) -> tuple[dict[str, Any], ...]:
    """The three rows the ledger writes for a one-attempt task (same values it computes)."""
    decision = make_decision("extract")
    now = datetime.now(UTC).replace(tzinfo=None)
    output = attempt.output or ""
    task_row = {
        "id": task.id, "kind": task.kind, "session_id": None, "role": "live",
        "policy_revision": POLICY_REVISION, "decision_tier": decision.tier,
        "decision_tier_index": decision.tier_index, "decision_step": decision.step,
        "decision_rule": "#0", "decision_floor": None,
        "decision_json": json.dumps(decision.as_dict()), "prompt_sha256": _sha(task.prompt),
        "prompt_chars": len(task.prompt), "prompt_text": None, "outcome": "running",
        "created_at": now,
    }  # fmt: skip
    attempt_row = {
        "task_id": attempt.task_id, "attempt_no": 0, "kind": attempt.kind, "session_id": None,
        "role": "live", "tier": attempt.tier, "tier_index": 0, "model": attempt.model,
        "provider": attempt.provider, "outcome": attempt.outcome, **attempt.usage.as_dict(),
        "cost_pusd": to_pico(attempt.cost_usd), "latency_s": 0.25, "verdicts_json": "[]",
        "failure": None, "error_class": None, "escalated_from": None, "stop_reason": "end",
        "output_sha256": _sha(output), "output_chars": len(output), "output_text": None,
        "started_at": now, "recorded_at": now,
    }  # fmt: skip
    finish_row = {
        "outcome": "accepted", "final_tier": "cheap", "cost_pusd": to_pico(attempt.cost_usd),
        "latency_s": 0.25, "attempts": 1, "output_sha256": _sha(output),
        "output_chars": len(output), "output_text": None, "finished_at": now,
    }  # fmt: skip
    return task_row, attempt_row, finish_row


def _raw_task_sql(mark: Callable[[str], str]) -> Callable[[tuple[dict[str, Any], ...]], tuple]:
    """The three statements with the driver's placeholder style (``?`` or ``%s``)."""

    def build(rows: tuple[dict[str, Any], ...]) -> tuple:
        t, a, f = rows
        return (
            (f"INSERT INTO tasks ({', '.join(t)}) VALUES ({', '.join(mark(k) for k in t)})",
             tuple(t.values())),
            (f"INSERT INTO attempts ({', '.join(a)}) VALUES ({', '.join(mark(k) for k in a)}) "
             "ON CONFLICT (task_id, attempt_no) DO UPDATE SET outcome = excluded.outcome "
             "RETURNING id", tuple(a.values())),
            (f"UPDATE tasks SET {', '.join(f'{k} = {mark(k)}' for k in f)} WHERE id = {mark('id')}",
             (*f.values(), t["id"])),
        )  # fmt: skip

    return build


def raw_sqlite_task(path: Path, sync: str) -> tuple[TaskWrite, Callable[[], None]]:
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode = WAL", f"synchronous = {sync}", "foreign_keys = ON"):
        conn.execute(f"PRAGMA {pragma}")
    cur = conn.cursor()
    build = _raw_task_sql(lambda _: "?")

    def one(task: Task, attempt: AttemptRecord) -> None:
        rows = _rows(task, attempt)
        for row in rows:  # SQLite stores DATETIME as SQLAlchemy's text
            for k, v in row.items():
                if isinstance(v, datetime):
                    row[k] = v.isoformat(" ", "microseconds")
        statements = build(rows)
        cur.execute("BEGIN IMMEDIATE")
        for sql, args in statements:
            cur.execute(sql, args)
            if "RETURNING" in sql:
                cur.fetchone()
        cur.execute("COMMIT")

    def close() -> None:
        cur.close()
        conn.close()

    return one, close


def raw_postgres_task(url: str, sync: str) -> tuple[TaskWrite, Callable[[], None]]:
    import psycopg

    conn = psycopg.connect(_dsn(url))
    conn.execute(f"SET synchronous_commit = {'on' if sync == 'FULL' else 'off'}")
    conn.commit()
    cur = conn.cursor()
    build = _raw_task_sql(lambda _: "%s")

    def one(task: Task, attempt: AttemptRecord) -> None:
        for sql, args in build(_rows(task, attempt)):
            cur.execute(sql, args)
            if "RETURNING" in sql:
                cur.fetchone()
        conn.commit()

    def close() -> None:
        cur.close()
        conn.close()

    return one, close


def ledger_task(url: str) -> tuple[TaskWrite, Callable[[], None]]:
    book = open_ledger(url, env={})
    book.record_policy_revision(POLICY_REVISION, "{}", None)
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
                cost_usd=attempt.cost_usd,
                latency_s=0.25,
                attempts=1,
                output=attempt.output,
                store_content=False,
            )

    return one, book.close


def _dsn(url: str) -> str:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return f"host={u.host} port={u.port} user={u.username} dbname={u.database}"


def per_task(directory: Path, pg: PostgresCluster, n: int, rounds: int) -> None:
    for sync in ("FULL", "NORMAL"):
        option = "" if sync == "FULL" else "?sync=normal"
        variants: dict[str, tuple[TaskWrite, Callable[[], None]]] = {}
        sqlite_url = f"sqlite:///{directory / f'ledger-{sync}.db'}"
        pg_url = pg.create_database(f"bench_{sync.lower()}")
        raw_pg_url = pg.create_database(f"bench_raw_{sync.lower()}")
        for url in (sqlite_url, pg_url, raw_pg_url):  # the schema, migrated
            open_ledger(url, env={}).close()
        open_ledger(f"sqlite:///{directory / f'raw-{sync}.db'}", env={}).close()
        for url in (f"sqlite:///{directory / f'raw-{sync}.db'}", raw_pg_url):
            with open_ledger(url, env={}) as book:
                book.record_policy_revision(POLICY_REVISION, "{}", None)
        variants["raw sqlite3"] = raw_sqlite_task(directory / f"raw-{sync}.db", sync)
        variants["Ledger on SQLite"] = ledger_task(sqlite_url + option)
        variants["raw psycopg"] = raw_postgres_task(raw_pg_url, sync)
        variants["Ledger on Postgres"] = ledger_task(pg_url + option)
        samples: dict[str, list[float]] = {name: [] for name in variants}
        per_round = max(1, n // rounds)
        try:
            for r in range(-1, rounds):  # round -1 warms up
                for name, (fn, _) in variants.items():
                    for _ in range(per_round):
                        task = Task.create("extract", "benchmark prompt")
                        attempt = make_attempt(task, 0)
                        t0 = time.perf_counter()
                        fn(task, attempt)
                        if r >= 0:
                            samples[name].append(time.perf_counter() - t0)
        finally:
            for _, close in variants.values():
                close()
        mode = (
            "durable: SQLite synchronous=FULL, Postgres synchronous_commit=on + fsync"
            if sync == "FULL"
            else "sync=normal: SQLite synchronous=NORMAL, Postgres synchronous_commit=off"
        )
        print(f"\none task's writes in one batch, {rounds * per_round} tasks each ({mode})")
        print(f"{'':22} {'p50':>9} {'p95':>9} {'p50 / its raw driver':>21} {'p50 / SQLite':>13}")
        p50 = {name: statistics.median(v) for name, v in samples.items()}
        for name, values in samples.items():
            values.sort()
            p95 = values[int(len(values) * 0.95) - 1]
            floor = p50["raw sqlite3" if "SQLite" in name or "sqlite" in name else "raw psycopg"]
            versus = p50["Ledger on SQLite"] if name.startswith("Ledger") else p50["raw sqlite3"]
            print(
                f"{name:22} {p50[name] * 1e6:7.0f}us {p95 * 1e6:7.0f}us "
                f"{p50[name] / floor:20.2f}x {p50[name] / versus:12.2f}x"
            )


# -- concurrent reservations -------------------------------------------------------------------

_KIND_LIMIT = Decimal(10**6)


def _cycle_worker(
    kind: str, url: str, worker: int, cycles: int, barrier: Any, results: Any
) -> None:
    """One process: *cycles* reserve + settle against the shared and its own budget."""
    limits = {"kind-day:shared": _KIND_LIMIT, f"key-day:{worker}": _KIND_LIMIT}
    amount, actual = Decimal("0.01"), Decimal("0.005")
    refused = 0
    if kind == "ledger":
        book = open_ledger(url, env={})

        def cycle(i: int) -> None:
            book.settle(book.reserve(f"w{worker}-{i}", limits, amount), actual)

        close = book.close
    else:
        cycle, close = _raw_cycle(url, worker, limits, amount, actual)
    cycle(-1)  # connect, compile, warm
    barrier.wait()
    t0 = time.monotonic()
    for i in range(cycles):
        try:
            cycle(i)
        except BudgetExceededError:
            refused += 1
    t1 = time.monotonic()
    close()
    results.put((t0, t1, cycles, refused))


def _raw_cycle(
    url: str, worker: int, limits: dict[str, Decimal], amount: Decimal, actual: Decimal
) -> tuple[Callable[[int], None], Callable[[], None]]:
    """The ledger's reservation statements, hand-written, on one raw connection."""
    scopes = sorted(limits)
    amt, act = to_pico(amount), to_pico(actual)
    lim = {s: to_pico(v) for s, v in limits.items()}
    if url.startswith("sqlite"):
        conn: Any = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA busy_timeout = 30000")
        mark, begin, commit = "?", "BEGIN IMMEDIATE", "COMMIT"

        def now() -> Any:
            return datetime.now(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    else:
        import psycopg

        conn = psycopg.connect(_dsn(url), autocommit=True)
        mark, begin, commit = "%s", "BEGIN", "COMMIT"

        def now() -> Any:
            return datetime.now(UTC).replace(tzinfo=None)

    hold = (
        f"UPDATE budget_counters SET held_pusd = held_pusd + {mark}, limit_pusd = {mark}, "
        f"updated_at = {mark} WHERE scope = {mark} AND spent_pusd + held_pusd + {mark} <= {mark}"
    )
    insert = (
        "INSERT INTO reservations (task_id, scopes_json, amount_pusd, state, created_at) "
        f"VALUES ({mark}, {mark}, {mark}, 'held', {mark}) RETURNING id"
    )
    close_res = (
        f"UPDATE reservations SET state = 'settled', actual_pusd = {mark}, closed_at = {mark} "
        f"WHERE id = {mark} AND state = 'held' RETURNING amount_pusd, scopes_json"
    )
    adjust = (
        f"UPDATE budget_counters SET held_pusd = held_pusd + {mark}, spent_pusd = spent_pusd + "
        f"{mark}, updated_at = {mark} WHERE scope = {mark}"
    )
    cur = conn.cursor()

    def cycle(i: int) -> None:
        cur.execute(begin)
        for scope in scopes:
            cur.execute(hold, (amt, lim[scope], now(), scope, amt, lim[scope]))
            if cur.rowcount != 1:
                cur.execute("ROLLBACK")
                raise BudgetExceededError(scope, Decimal(0), Decimal(0), amount)
        cur.execute(insert, (f"w{worker}-{i}", json.dumps(scopes), amt, now()))
        (rid,) = cur.fetchone()
        cur.execute(commit)
        cur.execute(begin)
        cur.execute(close_res, (act, now(), rid))
        cur.fetchone()
        for scope in scopes:
            cur.execute(adjust, (-amt, act, now(), scope))
        cur.execute(commit)

    def close() -> None:
        cur.close()
        conn.close()

    return cycle, close


def concurrent(directory: Path, pg: PostgresCluster, cycles: int, procs: int) -> None:
    ctx = mp.get_context("spawn")
    targets = {
        "SQLite": lambda name: f"sqlite:///{directory / f'{name}.db'}",
        "Postgres": lambda name: pg.create_database(name),
    }
    print(
        f"\nconcurrent reserve + settle (2 scopes: one shared, one per process), {procs} "
        f"processes x {cycles} cycles, durable commits"
    )
    print(f"{'':22} {'cycles/s':>9} {'/ its raw driver':>17} {'/ SQLite':>9}")
    rates: dict[str, float] = {}
    for rnd in range(2):  # two interleaved rounds; the better of each is reported
        for backend, make_url in targets.items():
            for kind in ("raw", "ledger"):
                url = make_url(f"res_{backend.lower()}_{kind}_{rnd}")
                with open_ledger(url, env={}) as book:  # schema + the counters
                    for scope in ["kind-day:shared", *(f"key-day:{w}" for w in range(procs))]:
                        book.settle(
                            book.reserve("setup", {scope: _KIND_LIMIT}, Decimal(0)), Decimal(0)
                        )
                barrier, results = ctx.Barrier(procs), ctx.Queue()
                workers = [
                    ctx.Process(target=_cycle_worker, args=(kind, url, w, cycles, barrier, results))
                    for w in range(procs)
                ]
                for w in workers:
                    w.start()
                got = [results.get(timeout=600) for _ in workers]
                for w in workers:
                    w.join()
                assert all(r[3] == 0 for r in got), "no reservation should be refused"
                rate = sum(r[2] for r in got) / (max(r[1] for r in got) - min(r[0] for r in got))
                name = f"{'Ledger' if kind == 'ledger' else 'raw'} {backend}"
                rates[name] = max(rates.get(name, 0.0), rate)
                with open_ledger(url, env={}) as book:
                    assert book.budget("kind-day:shared").spent_usd == (  # type: ignore[union-attr]
                        Decimal("0.005") * (cycles + 1) * procs  # + one warm-up cycle each
                    )
    for backend in targets:
        for kind in ("raw", "Ledger"):
            name = f"{kind} {backend}"
            floor = rates[f"raw {backend}"]
            versus = rates[f"{kind} SQLite"]
            print(f"{name:22} {rates[name]:9.0f} {rates[name] / floor:16.2f}x "
                  f"{rates[name] / versus:8.2f}x")  # fmt: skip


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    cycles = int(sys.argv[2]) if len(sys.argv) > 2 else 150
    procs = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    with tempfile.TemporaryDirectory(dir=".") as tmp, PostgresCluster(fsync=True) as pg:
        directory = Path(tmp)
        print(f"PostgreSQL {pg.bindir} (fsync=on), SQLite files in {directory}")
        per_task(directory, pg, n, rounds=8)
        concurrent(directory, pg, cycles, procs)


if __name__ == "__main__":
    main()
