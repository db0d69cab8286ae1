"""`tierwise learn status` over a million attempts, against a plain scan of the same rows.

Fills a ledger (SQLite by default, or ``--ledger URL``) with ATTEMPTS attempts (default
1,000,000) over 14 days: 12 kinds starting on the cheap, mid or strong tier; 8% of cheap
attempts rejected by a validator (a fifth of those fail again on mid), some exhausted, budget-
stopped and running tasks, validator calls, alternate-model fallbacks after a provider error,
probe tasks and concrete-model calls — written with bulk inserts (the rows are what the ledger
writes, not what the cascade's per-attempt commits would cost).

Then times, on the same rows, each best of ROUNDS (default 3):

* **baseline** — ``SELECT count(*), sum(cost)`` over the window's attempts joined to their tasks:
  the least any analytics of these rows must read;
* **analytics** — :func:`tierwise.analytics.analyze` (everything ``learn status --json`` prints:
  per kind and starting tier, latency percentiles, reasons, flags, red line);
* **red line** — the fleet's rate over the last day (what ``/metrics`` computes per scrape).

Run: ``.venv/bin/python benchmarks/analytics.py [--attempts N] [--ledger URL | --postgres]
[--rounds R]``
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tierwise.analytics import Analytics, Settings, analyze, fleet_escalation
from tierwise.ledger import Ledger, open_ledger
from tierwise.ledger.fixtures import POLICY_REVISION
from tierwise.ledger.schema import attempts, feedback, tasks

TIERS = ("cheap", "mid", "strong")
KINDS = [(f"kind{i:02d}", (0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 2)[i]) for i in range(12)]
NOW = datetime(2026, 6, 15, tzinfo=UTC)
BATCH = 20_000


class _Writer:
    """Buffers rows and inserts them a batch per transaction."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.tasks: list[dict[str, Any]] = []
        self.attempts: list[dict[str, Any]] = []
        self.flags: list[dict[str, Any]] = []
        self.written = 0

    def flush(self) -> None:
        with self.ledger.engine.begin() as conn:
            if self.tasks:
                conn.execute(sa.insert(tasks), self.tasks)
            if self.attempts:
                conn.execute(sa.insert(attempts), self.attempts)
            if self.flags:
                conn.execute(sa.insert(feedback), self.flags)
        self.written += len(self.attempts)
        self.tasks, self.attempts, self.flags = [], [], []


def _attempt(
    task_id: str, kind: str, no: int, tier: int, outcome: str, **kw: Any
) -> dict[str, Any]:
    failed = outcome in ("rejected", "error")
    row = {
        "task_id": task_id, "attempt_no": no, "kind": kind, "session_id": None, "role": "live",
        "tier": TIERS[tier] if tier >= 0 else "passthrough", "tier_index": tier,
        "model": f"{TIERS[max(tier, 0)]}-model", "provider": "anthropic", "outcome": outcome,
        "input_tokens": 900, "cache_write_5m_tokens": 0, "cache_write_1h_tokens": 0,
        "cache_read_tokens": 300, "output_tokens": 200,
        "cost_pusd": (1_000_000_000, 3_000_000_000, 15_000_000_000)[max(tier, 0)],
        "latency_s": 0.4 * (tier + 1),
        "verdicts_json": '[{"validator": "json", "ok": %s}]' % ("false" if failed else "true"),
        "failure": "json: not JSON" if outcome == "rejected" else None,
        "error_class": "ServerError" if outcome == "error" else None,
        "escalated_from": no - 1 if no else None, "stop_reason": "end",
        "output_sha256": None, "output_chars": 40, "output_text": None,
    }  # fmt: skip
    row.update(kw)
    return row


def _task(rng: random.Random, w: _Writer, created: datetime) -> None:
    kind, start = rng.choice(KINDS)
    task_id = uuid.uuid4().hex
    role, passthrough = "live", rng.random() < 0.01
    if rng.random() < 0.01:
        role = "probe"
    rows: list[dict[str, Any]] = []
    at = {"started_at": created, "recorded_at": created, "role": role}
    outcome = "accepted"
    if passthrough:
        rows.append(_attempt(task_id, kind, 0, -1, "accepted", **at))
        start = -1
    else:
        tier = start
        while True:
            if rng.random() < 0.02:  # the primary errors, the alternate answers on the same tier
                rows.append(_attempt(task_id, kind, len(rows), tier, "error", cost_pusd=0, **at))
            fail = (0.08, 0.2, 0.1)[tier]
            result = "rejected" if rng.random() < fail else "accepted"
            rows.append(_attempt(task_id, kind, len(rows), tier, result, **at))
            if rng.random() < 0.1:  # a validator's own model call
                judge = {**at, "role": "validator"}
                rows.append(_attempt(task_id, kind, len(rows), 0, "accepted", **judge))
            if result == "accepted":
                break
            if tier == len(TIERS) - 1:
                outcome = "exhausted"
                break
            tier += 1
        roll = rng.random()
        outcome = "budget" if roll < 0.003 else "running" if roll < 0.005 else outcome
    done = [r for r in rows if r["role"] == role and r["outcome"] == "accepted"]
    w.tasks.append({
        "id": task_id, "kind": kind, "session_id": None, "role": role,
        "policy_revision": POLICY_REVISION,
        "decision_tier": TIERS[start] if start >= 0 else "passthrough",
        "decision_tier_index": start, "decision_step": "rule", "decision_rule": "#0",
        "decision_floor": None, "decision_json": "{}", "prompt_sha256": "0" * 64,
        "prompt_chars": 100, "prompt_text": None, "outcome": outcome,
        "final_tier": done[-1]["tier"] if done and outcome == "accepted" else None,
        "cost_pusd": sum(r["cost_pusd"] for r in rows),
        "latency_s": None if outcome == "running" else sum(r["latency_s"] for r in rows),
        "attempts": len(rows), "output_sha256": None, "output_chars": None, "output_text": None,
        "created_at": created, "finished_at": None if outcome == "running" else created,
        "key_id": None,
    })  # fmt: skip
    w.attempts.extend(rows)
    if outcome == "accepted" and rng.random() < 0.005:
        w.flags.append({
            "task_id": task_id, "author": "bench", "key_id": None, "note": None,
            "flag": rng.choice(["wrong", "needed_frontier", "cheaper_would_do"]),
            "created_at": created, "updated_at": created,
        })  # fmt: skip


def fill(ledger: Ledger, n_attempts: int, seed: int = 0) -> int:
    """Write tasks until *n_attempts* attempts exist; return how many tasks were written."""
    rng = random.Random(seed)
    ledger.record_policy_revision(POLICY_REVISION, "{}", None)
    w = _Writer(ledger)
    n_tasks = 0
    span = timedelta(days=14).total_seconds()
    while w.written + len(w.attempts) < n_attempts:
        created = NOW - timedelta(seconds=span * rng.random())
        _task(rng, w, created)
        n_tasks += 1
        if len(w.attempts) >= BATCH:
            w.flush()
            print(f"\r  {w.written:,} attempts written", end="", flush=True)
    w.flush()
    print(f"\r  {w.written:,} attempts in {n_tasks:,} tasks written")
    return n_tasks


def best(fn: Callable[[], object], rounds: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(rounds):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def _row(name: str, seconds: float, base: float) -> str:
    return f"{name:50s} {seconds * 1000:9.1f} ms  {seconds / base:5.2f}x"


def cli(doc: str | None, run: Callable[[str, argparse.Namespace], None]) -> None:
    """Parse ``--attempts``, ``--ledger``, ``--rounds``, ``--postgres`` and call *run* with the
    ledger URL (a new SQLite file, the given URL, or a database on a throwaway cluster)."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n", 1)[0])
    parser.add_argument("--attempts", type=int, default=1_000_000)
    parser.add_argument(
        "--ledger", help="a ledger URL (default: a new SQLite file); reused if already filled"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--postgres", action="store_true", help="on a throwaway PostgreSQL cluster instead"
    )
    args = parser.parse_args()
    if args.postgres:
        from tierwise.testing.postgres import PostgresCluster

        with PostgresCluster() as cluster:
            run(cluster.create_database(), args)
        return
    run(args.ledger or str(Path(tempfile.mkdtemp(prefix="tierwise-bench-")) / "ledger.db"), args)


def filled(ledger: Ledger, n_attempts: int, fill: Callable[[Ledger, int, int], int]) -> None:
    """Fill *ledger* to *n_attempts* attempts unless it holds them (a reused ``--ledger``);
    on PostgreSQL, ANALYZE as autovacuum would within a minute of a bulk load."""
    with ledger.reading() as conn:
        present = conn.execute(sa.select(sa.func.count()).select_from(attempts)).scalar_one()
    if present < n_attempts:
        print(f"filling {ledger.url} ({ledger.backend}) with {n_attempts:,} attempts")
        t0 = time.perf_counter()
        fill(ledger, n_attempts - present, present)
        print(f"  in {time.perf_counter() - t0:.1f} s")
    if ledger.backend == "postgresql":
        with ledger.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")


def main() -> None:
    cli(__doc__, run)


def run(url: str, args: argparse.Namespace) -> None:
    """Fill the ledger at *url* (unless it holds enough attempts) and time the three reads."""
    with open_ledger(url, now=lambda: NOW) as ledger:
        filled(ledger, args.attempts, fill)
        since, until = NOW - timedelta(days=14), NOW + timedelta(seconds=1)
        t, a = tasks.c, attempts.c

        def baseline() -> object:
            with ledger.reading() as conn:
                return conn.execute(
                    sa.select(sa.func.count(), sa.func.sum(a.cost_pusd))
                    .select_from(attempts.join(tasks, a.task_id == t.id))
                    .where(t.created_at >= since, t.created_at < until)
                ).one()

        settings = Settings()
        base_s, counted = best(baseline, args.rounds)
        full_s, report = best(
            lambda: analyze(ledger, settings, since=since, until=until), args.rounds
        )
        line_s, _ = best(
            lambda: fleet_escalation(ledger, 0.09, since=until - timedelta(days=1), until=until),
            args.rounds,
        )
    assert isinstance(report, Analytics) and isinstance(counted, sa.Row)
    fleet = report.fleet
    print(
        f"\n{counted[0]:,} attempts in the window ({ledger.backend}); fleet escalation "
        f"{fleet.escalation.value or 0:.2%} of {fleet.resolved:,} resolved tasks"
    )
    print(_row("baseline: count+sum over attempts joined to tasks", base_s, base_s))
    print(_row("analytics: learn status, everything", full_s, base_s))
    print(_row("red line: the last day (a /metrics scrape)", line_s, base_s))
    summary = {"attempts": counted[0], "baseline_s": base_s, "analytics_s": full_s}
    print(json.dumps({**summary, "red_line_s": line_s, "ratio": full_s / base_s}))


if __name__ == "__main__":
    main()
