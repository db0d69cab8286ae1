"""Reads: stats agree with a by-hand count of what was written; tail, export and integrity.

On SQLite and on PostgreSQL (the ``ledger_url``/``backend`` fixtures).
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tierwise.cascade.result import Outcome, Role
from tierwise.ledger import Ledger, open_ledger
from tierwise.ledger.fixtures import POLICY_REVISION, make_attempt, make_decision, record_task
from tierwise.ledger.schema import attempts, tasks
from tierwise.task import Task

T0 = datetime(2025, 5, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    with open_ledger(ledger_url) as book:
        yield book


# -- stats against an independent count ---------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    kind: str
    role: Role
    start: int
    outcomes: tuple[Outcome, ...]
    costs: tuple[Decimal, ...]
    validator_cost: Decimal | None  # a validator's own call on the first tier
    latency: float


@st.composite
def planned_task(draw: st.DrawFn) -> Planned:
    start = draw(st.integers(min_value=0, max_value=2))
    n = draw(st.integers(min_value=1, max_value=3 - start))
    fails = draw(st.lists(st.sampled_from(["rejected", "error"]), min_size=n - 1, max_size=n - 1))
    last = draw(st.sampled_from(["accepted", "rejected", "error"]))
    cost = st.decimals(min_value=0, max_value=Decimal("0.5"), places=9)
    return Planned(
        kind=draw(st.sampled_from(["extract", "classify"])),
        role=draw(st.sampled_from(["live", "live", "probe"])),
        start=start,
        outcomes=(*fails, last),
        costs=tuple(draw(st.lists(cost, min_size=n, max_size=n))),
        validator_cost=draw(st.none() | cost),
        latency=draw(st.floats(min_value=0.01, max_value=30)),
    )


def _write(book: Ledger, plan: Planned) -> None:
    task = Task.create(plan.kind, "x")
    book.begin_task(
        task,
        make_decision(plan.kind, plan.start),
        policy_revision=POLICY_REVISION,
        role=plan.role,
        store_content=False,
    )
    records = [
        make_attempt(task, i, tier_index=plan.start + i, outcome=o, cost_usd=c, role=plan.role)
        for i, (o, c) in enumerate(zip(plan.outcomes, plan.costs, strict=True))
    ]
    if plan.validator_cost is not None:
        records.append(
            make_attempt(
                task,
                len(records),
                tier_index=plan.start,
                cost_usd=plan.validator_cost,
                role="validator",
                escalated_from=None,
            )
        )
    for record in records:
        book.record_attempt(record, store_content=False)
    accepted = plan.outcomes[-1] == "accepted"
    book.finish_task(
        task.id,
        outcome="accepted" if accepted else "exhausted",
        final_tier=records[len(plan.outcomes) - 1].tier if accepted else None,
        cost_usd=sum((r.cost_usd for r in records), Decimal(0)),
        latency_s=plan.latency,
        attempts=len(records),
        output=None,
        store_content=False,
    )


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(plans=st.lists(planned_task(), min_size=1, max_size=12))
def test_stats_agree_with_an_independent_count(ledger: Ledger, plans: list[Planned]) -> None:
    book = ledger
    with book.engine.begin() as conn:  # this example starts from an empty ledger
        conn.execute(attempts.delete())
        conn.execute(tasks.delete())
    book.record_policy_revision(POLICY_REVISION, "{}", None)
    with book.batch():  # one commit per example: the rows are the same
        for plan in plans:
            _write(book, plan)
    got = book.stats(role="live")
    everything = book.stats(role=None)
    assert book.integrity_check() == []

    live = [p for p in plans if p.role == "live"]
    assert everything["tasks"] == len(plans)
    assert got["tasks"] == len(live)
    tiers = ("cheap", "mid", "strong")
    by_kind: dict[str, list[Planned]] = defaultdict(list)
    for p in live:
        by_kind[p.kind].append(p)
    assert set(got["by_kind"]) == set(by_kind)
    for kind, group in by_kind.items():
        entry = got["by_kind"][kind]
        costs = [c for p in group for c in p.costs] + [
            p.validator_cost for p in group if p.validator_cost is not None
        ]
        wasted = [
            c for p in group for o, c in zip(p.outcomes, p.costs, strict=True) if o != "accepted"
        ]
        # the one definition, by hand: accepted above the starting tier, or failed on every tier
        escalated = sum(1 for p in group if len(p.outcomes) > 1 or p.outcomes[-1] != "accepted")
        assert entry["tasks"] == len(group)
        assert entry["attempts"] == len(costs)
        assert entry["spend_usd"] == sum(costs, Decimal(0))
        assert entry["wasted_usd"] == sum(wasted, Decimal(0))
        assert entry["escalated_tasks"] == escalated
        assert entry["escalation_rate"] == pytest.approx(escalated / len(group))
        latencies = [p.latency for p in group]
        assert entry["latency_p50_s"] == pytest.approx(np.percentile(latencies, 50))
        assert entry["latency_p95_s"] == pytest.approx(np.percentile(latencies, 95))
        for row in (r for r in got["by_kind_tier"] if r["kind"] == kind):
            index = tiers.index(row["tier"])
            started = [p for p in group if p.start == index]
            climbed = [p for p in started if len(p.outcomes) > 1 or p.outcomes[-1] != "accepted"]
            assert row["tasks"] == len(started)
            assert row["escalated"] == len(climbed)
    assert got["spend_usd"] == sum((e["spend_usd"] for e in got["by_kind"].values()), Decimal(0))
    assert got["escalated_tasks"] == sum(
        1 for p in live if len(p.outcomes) > 1 or p.outcomes[-1] != "accepted"
    )


def test_stats_windows_and_kind_filter(ledger_url: str) -> None:
    clock = [T0]
    with open_ledger(ledger_url, now=lambda: clock[0]) as book:
        for day in range(3):
            clock[0] = T0 + timedelta(days=day)
            record_task(book, kind="extract", costs=["1"], started_at=clock[0])
            record_task(book, kind="classify", costs=["2"], started_at=clock[0])
        recent = book.stats(since=T0 + timedelta(days=1))
        middle = book.stats(since=T0 + timedelta(days=1), until=T0 + timedelta(days=2))
        extract = book.stats(kind="extract")
    assert (recent["tasks"], recent["spend_usd"]) == (4, Decimal(6))
    assert (middle["tasks"], middle["spend_usd"]) == (2, Decimal(3))
    assert set(extract["by_kind"]) == {"extract"}
    assert (extract["tasks"], extract["spend_usd"]) == (3, Decimal(3))


def test_stats_of_an_empty_ledger_are_zero(ledger: Ledger) -> None:
    data = ledger.stats()
    assert (data["tasks"], data["attempts"], data["spend_usd"]) == (0, 0, Decimal(0))
    assert data["escalation_rate"] is None and data["latency_p50_s"] is None


# -- tail and export ---------------------------------------------------------------------------


def test_tail_shows_the_latest_attempts_oldest_first(ledger: Ledger) -> None:
    written = []
    for i in range(5):
        _, records = record_task(ledger, kind="extract" if i % 2 else "classify", costs=[str(i)])
        written.extend(records)
    tail = ledger.tail(3)
    assert [(a["task_id"], a["cost_usd"]) for a in tail] == [
        (r.task_id, r.cost_usd) for r in written[-3:]
    ]
    assert [a["kind"] for a in ledger.tail(10, kind="extract")] == ["extract", "extract"]


def test_tail_since(ledger_url: str) -> None:
    with open_ledger(ledger_url) as book:
        record_task(book, started_at=T0)
        _, late = record_task(book, started_at=T0 + timedelta(hours=5))
        tail = book.tail(10, since=T0 + timedelta(hours=1))
    assert [a["task_id"] for a in tail] == [late[0].task_id]


def test_iter_attempts_pages_through_everything_in_order(ledger: Ledger) -> None:
    written = []
    for _ in range(4):
        _, records = record_task(ledger, outcomes=["rejected", "accepted"], costs=["1", "2"])
        written.extend(records)
    got = list(ledger.iter_attempts(batch_size=3))
    assert [(a["task_id"], a["attempt_no"]) for a in got] == [
        (r.task_id, r.attempt_no) for r in written
    ]
    assert [a["id"] for a in got] == sorted(a["id"] for a in got)
    assert len(list(ledger.iter_attempts(role="validator"))) == 0


# -- integrity ---------------------------------------------------------------------------------


def _tamper(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA foreign_keys = OFF")
    for sql in statements:
        conn.execute(sql)
    conn.commit()
    conn.close()


def test_integrity_check_passes_on_a_sound_ledger(ledger: Ledger) -> None:
    record_task(ledger, outcomes=["rejected", "error", "accepted"], costs=["0.1", "0", "0.3"])
    assert ledger.integrity_check() == []


def test_integrity_check_finds_costs_that_do_not_add_up(
    ledger_url: str, raw_sql: Callable[..., object]
) -> None:
    with open_ledger(ledger_url) as book:
        task, _ = record_task(book, outcomes=["rejected", "accepted"], costs=["0.1", "0.2"])
    raw_sql(ledger_url, "UPDATE attempts SET cost_pusd = cost_pusd + 1000")
    with open_ledger(ledger_url) as book:
        problems = book.integrity_check()
    assert len(problems) == 1 and task.id in problems[0] and "sum to" in problems[0]


def test_integrity_check_finds_missing_attempts_and_dangling_rows(tmp_path: Path) -> None:
    with open_ledger(tmp_path / "l.db") as book:
        task, _ = record_task(book, outcomes=["rejected", "accepted"], costs=["0", "0"])
    _tamper(
        tmp_path / "l.db",
        "DELETE FROM attempts WHERE attempt_no = 0",
        "UPDATE attempts SET task_id = 'ghost' WHERE attempt_no = 1",
    )
    with open_ledger(tmp_path / "l.db") as book:
        problems = "\n".join(book.integrity_check())
    assert "foreign key: attempts" in problems
    assert f"task {task.id}: 2 attempt(s) recorded" in problems
    assert "escalated from attempt 0" in problems


def test_running_tasks_are_not_problems(ledger: Ledger) -> None:
    task = Task.create("extract", "x")
    ledger.record_policy_revision(POLICY_REVISION, "{}", None)
    ledger.begin_task(
        task,
        make_decision("extract"),
        policy_revision=POLICY_REVISION,
        role="live",
        store_content=False,
    )
    ledger.record_attempt(make_attempt(task, 0, outcome="rejected"), store_content=False)
    assert ledger.integrity_check() == []
