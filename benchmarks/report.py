"""`tierwise report` over a week of a million attempts, against the same report from the rows.

Fills a ledger (SQLite by default, or ``--ledger URL``) with ATTEMPTS attempts (default
1,000,000) over the 7 days before NOW, with the mix of ``benchmarks/analytics.py`` (12 kinds
on three tiers, rejections and climbs, exhausted, budget-stopped and running tasks, validator
calls, fallbacks, probe tasks, concrete-model calls, flags) plus gateway keys (KEYS agents)
and sessions (an agent session lasts about two hours: SESSIONS_AT_ONCE run at any time) —
bulk inserts of the rows the ledger writes.

Then times, on the same rows:

* **from rows** — :func:`tierwise.reports.weekly.weekly_report` with ``from_rows=True``: every
  task classified again from its attempts (the slow, obvious reference; best of ROUNDS);
* **first report** — the same report from a ledger whose hours were never summarised: it
  summarises the week's 168 ended hours and keeps them (once; the summary tables are emptied
  before each round);
* **report** — the next reports, reading the kept hours (best of ROUNDS): what a Monday
  ``tierwise report --since 2026-06-08 --until 2026-06-15`` costs;
* **rolling 7d** — ``tierwise report`` with its default window (the last 7 days to the
  minute): the kept hours plus the two partial hours at its edges, read from the rows.

Run: ``.venv/bin/python benchmarks/report.py [--attempts N] [--ledger URL | --postgres]
[--rounds R]``
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tierwise.ledger import Ledger, open_ledger
from tierwise.ledger.fixtures import POLICY_REVISION
from tierwise.ledger.schema import (
    api_keys,
    attempts,
    report_facts,
    report_hours,
    report_sessions,
    report_tiers,
    sessions,
)
from tierwise.policy import default_policy
from tierwise.reports.weekly import WeeklyReport, weekly_report


def _load_analytics() -> Any:
    """The analytics benchmark's row builders (one definition of the synthetic fleet)."""
    path = Path(__file__).with_name("analytics.py")
    spec = importlib.util.spec_from_file_location("bench_analytics", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_analytics"] = module
    spec.loader.exec_module(module)
    return module


bench = _load_analytics()
NOW: datetime = datetime(2026, 6, 15, tzinfo=UTC)  # a Monday
WEEK = timedelta(days=7)
SESSIONS_AT_ONCE = 40
SESSION_SPAN = timedelta(hours=2)
KEYS = 20


def fill(ledger: Ledger, n_attempts: int, seed: int = 0) -> int:
    """Write tasks over the week until *n_attempts* attempts exist; return the tasks written."""
    rng = random.Random(seed)
    ledger.record_policy_revision(POLICY_REVISION, "{}", None)
    spans = int(WEEK / SESSION_SPAN)
    with ledger.engine.begin() as conn:
        conn.execute(
            sa.insert(sessions),
            [
                {
                    "id": f"s{span}-{i}",
                    "created_at": NOW - WEEK + span * SESSION_SPAN,
                    "last_seen_at": NOW - WEEK + (span + 1) * SESSION_SPAN,
                }
                for span in range(spans)
                for i in range(SESSIONS_AT_ONCE)
            ],
        )
    for i in range(KEYS):
        ledger.create_api_key(f"agent-{i}")
    with ledger.reading() as conn:
        keys = [int(k) for k in conn.execute(sa.select(api_keys.c.id)).scalars()]
    w = bench._Writer(ledger)
    n_tasks = 0
    span = WEEK.total_seconds()
    while w.written + len(w.attempts) < n_attempts:
        created = NOW - timedelta(seconds=span * rng.random())
        before = len(w.tasks)
        bench._task(rng, w, created)
        span_no = int((created - (NOW - WEEK)) / SESSION_SPAN)
        session = f"s{span_no}-{rng.randrange(SESSIONS_AT_ONCE)}" if rng.random() < 0.9 else None
        for row in w.tasks[before:]:
            row["session_id"] = session
            row["key_id"] = rng.choice(keys)
        for row in w.attempts[len(w.attempts) - int(w.tasks[-1]["attempts"]) :]:
            row["session_id"] = session
        n_tasks += 1
        if len(w.attempts) >= bench.BATCH:
            w.flush()
            print(f"\r  {w.written:,} attempts written", end="", flush=True)
    w.flush()
    print(f"\r  {w.written:,} attempts in {n_tasks:,} tasks written")
    return n_tasks


def forget(ledger: Ledger) -> None:
    """Empty the kept summary (the next report summarises every hour again)."""
    with ledger.engine.begin() as conn:
        for table in (report_facts, report_tiers, report_sessions, report_hours):
            conn.execute(sa.delete(table))


def main() -> None:
    bench.cli(__doc__, run)


def run(url: str, args: argparse.Namespace) -> None:
    """Fill the ledger at *url* (unless it holds enough attempts) and time the reports."""
    now = NOW + timedelta(minutes=10)
    policy = default_policy()
    with open_ledger(url, now=lambda: now) as ledger:
        bench.filled(ledger, args.attempts, fill)
        since, until = NOW - WEEK, NOW

        def report(**kw: Any) -> WeeklyReport:
            return weekly_report(ledger, policy, since=since, until=until, now=now, **kw)

        rows_s, from_rows = bench.best(lambda: report(from_rows=True), args.rounds)
        firsts = []
        for _ in range(max(1, args.rounds - 1)):
            forget(ledger)
            t0 = time.perf_counter()
            report()
            firsts.append(time.perf_counter() - t0)
        first_s = min(firsts)
        kept_s, kept = bench.best(report, args.rounds)
        rolling_s, _ = bench.best(
            lambda: weekly_report(ledger, policy, now=now - timedelta(minutes=3)), args.rounds
        )
    a, b = from_rows.as_dict(), kept.as_dict()
    a.pop("source"), b.pop("source")
    assert a == b, "the kept summary must give the report the rows give"
    with open_ledger(url) as ledger, ledger.reading() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(attempts)).scalar_one()
    print(
        f"\n{n:,} attempts, {sum(d.tasks for d in kept.days):,} tasks in the week "
        f"({ledger.backend}); spend {kept.total_usd}, escalation "
        f"{kept.fleet.escalation.value or 0:.2%}"
    )
    for name, seconds in (
        ("from rows: every task classified again (reference)", rows_s),
        ("first report: summarise 168 hours and keep them", first_s),
        ("report: the week's kept hours", kept_s),
        ("rolling 7d: kept hours + the two partial ones", rolling_s),
    ):
        print(f"{name:55s} {seconds * 1000:9.1f} ms  {seconds / rows_s:5.3f}x")
    print(
        json.dumps(
            {
                "attempts": n,
                "from_rows_s": rows_s,
                "first_s": first_s,
                "kept_s": kept_s,
                "rolling_s": rolling_s,
                "ratio": kept_s / rows_s,
            }
        )
    )


if __name__ == "__main__":
    main()
