"""Pruning keeps exact daily rollups: the totals are the same before and after, they match a
by-hand count of what was written, and an interrupted prune loses nothing. Both backends."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from tierwise.cascade.result import Outcome, Role
from tierwise.errors import LedgerError
from tierwise.ledger import Ledger, open_ledger
from tierwise.ledger.fixtures import POLICY_REVISION, TIERS, make_attempt, make_decision
from tierwise.ledger.schema import to_pico
from tierwise.task import Task

DAY0 = datetime(2025, 3, 1, 0, 0, tzinfo=UTC)
Raw = Callable[..., list[tuple[Any, ...]]]


@dataclass(frozen=True)
class Planned:
    """One task as written: its day, kind, role, first tier, attempt outcomes and costs."""

    at: datetime
    kind: str
    role: Role
    start: int
    outcomes: tuple[Outcome, ...]
    costs: tuple[Decimal, ...]
    validator_cost: Decimal | None
    task_outcome: str
    latency: float


def _plans(seed: int, n: int) -> list[Planned]:
    rng = random.Random(seed)
    plans = []
    for _ in range(n):
        start = rng.randrange(3)
        length = rng.randint(1, 3 - start)
        last = rng.choice(["accepted", "accepted", "rejected", "error"])
        fails = [rng.choice(["rejected", "error"]) for _ in range(length - 1)]
        outcomes: tuple[Outcome, ...] = (*fails, last)  # type: ignore[assignment]
        # the last hour of a day and the first of the next: the UTC day boundary matters
        at = DAY0 + timedelta(days=rng.randrange(4), hours=rng.choice([0, 9, 23]), minutes=59)
        plans.append(
            Planned(
                at=at,
                kind=rng.choice(["extract", "classify"]),
                role=rng.choice(["live", "live", "probe"]),  # type: ignore[arg-type]
                start=start,
                outcomes=outcomes,
                costs=tuple(Decimal(rng.randrange(10**9)).scaleb(-12) for _ in outcomes),
                validator_cost=rng.choice([None, Decimal("0.000123456789")]),
                task_outcome=rng.choice(["accepted", "exhausted", "budget", "error", "running"]),
                latency=rng.choice([0.25, 1.5, 3.0]),
            )
        )
    return plans


def _write(book: Ledger, clock: list[datetime], plan: Planned) -> None:
    clock[0] = plan.at
    task = Task.create(plan.kind, "x")
    book.begin_task(
        task,
        make_decision(plan.kind, plan.start),
        policy_revision=POLICY_REVISION,
        role=plan.role,
        store_content=False,
    )
    records = [
        make_attempt(
            task,
            i,
            tier_index=plan.start + i,
            outcome=o,
            cost_usd=c,
            role=plan.role,
            started_at=plan.at + timedelta(minutes=i),  # past midnight: still the task's day
        )
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
                started_at=plan.at,
            )
        )
    for record in records:
        book.record_attempt(record, store_content=False)
    if plan.task_outcome != "running":
        book.finish_task(
            task.id,
            outcome=plan.task_outcome,
            final_tier=None,
            cost_usd=sum((r.cost_usd for r in records), Decimal(0)),
            latency_s=plan.latency,
            attempts=len(records),
            output=None,
            store_content=False,
        )


def _by_hand(plans: list[Planned]) -> dict[tuple[date, str, str, str], dict[str, Any]]:
    """The rollup of *plans*, counted from the plans themselves (the independent oracle)."""
    out: dict[tuple[date, str, str, str], dict[str, Any]] = defaultdict(lambda: defaultdict(int))
    for p in plans:
        day = p.at.date()
        start = out[(day, p.kind, TIERS[p.start], p.role)]
        start["tasks"] += 1
        start[f"tasks_{p.task_outcome}"] += 1
        # escalation, by the one definition: accepted above the starting tier, or exhausted
        accepted = [i for i, o in enumerate(p.outcomes) if o == "accepted"]
        escalated = p.task_outcome == "exhausted" or (
            p.task_outcome == "accepted" and bool(accepted) and max(accepted) > 0
        )
        start["tasks_escalated"] += escalated
        start["tier_escalated"] += escalated
        start["tier_tasks"] += p.task_outcome in ("accepted", "exhausted")
        costs = list(p.costs) + ([p.validator_cost] if p.validator_cost is not None else [])
        start["task_cost_pusd"] += (
            sum(to_pico(c) for c in costs) if p.task_outcome != "running" else 0
        )
        if p.task_outcome != "running":
            start["tasks_timed"] += 1
            start["task_latency_s_sum"] += p.latency
        for i, (outcome, cost) in enumerate(zip(p.outcomes, p.costs, strict=True)):
            row = out[(day, p.kind, TIERS[p.start + i], p.role)]
            row["attempts"] += 1
            row[{"accepted": "accepted", "rejected": "rejected", "error": "errors"}[outcome]] += 1
            row["cost_pusd"] += to_pico(cost)
            row["wasted_pusd"] += to_pico(cost) if outcome != "accepted" else 0
            row["input_tokens"] += 120
            row["cache_read_tokens"] += 40
            row["output_tokens"] += 30
        if p.validator_cost is not None:
            row = out[(day, p.kind, TIERS[p.start], p.role)]
            row["attempts"] += 1
            row["accepted"] += 1
            row["cost_pusd"] += to_pico(p.validator_cost)
            row["validator_attempts"] += 1
            row["validator_cost_pusd"] += to_pico(p.validator_cost)
            row["input_tokens"] += 120
            row["cache_read_tokens"] += 40
            row["output_tokens"] += 30
    return out


_MONEY = {
    "cost_pusd": "cost_usd",
    "wasted_pusd": "wasted_usd",
    "task_cost_pusd": "task_cost_usd",
    "validator_cost_pusd": "validator_cost_usd",
}


def _as_counts(rows: list[dict[str, Any]]) -> dict[tuple[date, str, str, str], dict[str, Any]]:
    """``Ledger.daily`` rows keyed like :func:`_by_hand`, money back in pico-USD, zeros dropped."""
    out = {}
    for r in rows:
        values = {}
        for name, value in r.items():
            if name in ("day", "kind", "tier", "role", "tier_index"):
                continue
            pico = next((p for p, usd in _MONEY.items() if usd == name), None)
            value = to_pico(value) if pico else value
            if value:
                values[pico or name] = value
        out[(r["day"], r["kind"], r["tier"], r["role"])] = values
    return out


@pytest.fixture
def filled(ledger_url: str) -> Iterator[tuple[Ledger, list[Planned]]]:
    plans = _plans(seed=12, n=40)
    clock = [DAY0]
    with open_ledger(f"{ledger_url}?reservation_ttl=60", env={}, now=lambda: clock[0]) as book:
        book.record_policy_revision(POLICY_REVISION, "{}", None)
        for plan in plans:
            _write(book, clock, plan)
        clock[0] = DAY0 + timedelta(days=10)  # "today", well after every planned day
        yield book, plans


def test_daily_totals_match_a_count_by_hand(filled: tuple[Ledger, list[Planned]]) -> None:
    book, plans = filled
    got = _as_counts(book.daily(role=None))
    want = {k: {n: v for n, v in row.items() if v} for k, row in _by_hand(plans).items()}
    assert got.keys() == want.keys()
    for key in want:
        latency = got[key].pop("task_latency_s_sum", 0.0)
        assert latency == pytest.approx(want[key].pop("task_latency_s_sum", 0.0))
        assert got[key] == want[key], key


def test_pruning_in_batches_keeps_every_total(
    filled: tuple[Ledger, list[Planned]], ledger_url: str, raw_sql: Raw
) -> None:
    book, plans = filled
    before = book.daily(role=None)
    live_before = book.daily(role="live", kind="extract")
    cut = (DAY0 + timedelta(days=2)).date()
    first = book.prune(cut, batch_size=3)
    assert first.tasks == sum(1 for p in plans if p.at.date() < cut)
    assert set(first.days) == {p.at.date() for p in plans if p.at.date() < cut}
    assert book.daily(role=None) == before  # half rolled up, half rows: same numbers
    second = book.prune((DAY0 + timedelta(days=10)).date(), batch_size=7)
    assert first.tasks + second.tasks == len(plans)
    assert first.attempts + second.attempts == sum(
        len(p.outcomes) + (p.validator_cost is not None) for p in plans
    )
    assert raw_sql(ledger_url, "SELECT COUNT(*) FROM tasks") == [(0,)]
    assert raw_sql(ledger_url, "SELECT COUNT(*) FROM attempts") == [(0,)]
    assert book.daily(role=None) == before  # all rolled up: same numbers again
    assert book.daily(role="live", kind="extract") == live_before
    # compacted: one row per (day, kind, tier, role) group
    groups = raw_sql(
        ledger_url,
        "SELECT COUNT(*) FROM daily_rollups GROUP BY day, kind, tier, role HAVING COUNT(*) > 1",
    )
    assert groups == []
    assert book.integrity_check() == []
    assert book.stats()["pruned_before"] == (DAY0 + timedelta(days=4)).date()


def test_an_interrupted_prune_loses_nothing_and_the_next_one_finishes(
    filled: tuple[Ledger, list[Planned]], ledger_url: str, raw_sql: Raw
) -> None:
    book, _ = filled
    before = book.daily(role=None)
    calls = []

    def stop_after_two_batches(done: int, total: int) -> None:
        calls.append(done)
        if len(calls) == 3:  # (0, total) first, then one call per batch
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        book.prune(
            (DAY0 + timedelta(days=10)).date(), batch_size=4, progress=stop_after_two_batches
        )
    assert raw_sql(ledger_url, "SELECT COUNT(*) FROM tasks") == [(40 - 8,)]
    assert book.daily(role=None) == before  # rollups + remaining rows: still exact
    book.prune((DAY0 + timedelta(days=10)).date(), batch_size=100)
    assert book.daily(role=None) == before
    assert raw_sql(
        ledger_url, "SELECT COUNT(*) FROM daily_rollups GROUP BY day, kind, tier, role "
        "HAVING COUNT(*) > 1"
    ) == []  # fmt: skip


def test_whole_days_of_stats_equal_the_rollup(filled: tuple[Ledger, list[Planned]]) -> None:
    """``stats`` over whole UTC days and ``daily`` agree on tasks, spend, waste and escalation:
    the rollups answer what reports ask of the rows. (An attempt that starts after midnight
    counts on its task's day in the rollup and on its own in ``stats``: the window spans all
    planned days, so both see every attempt.)"""
    book, _ = filled
    since, until = DAY0, DAY0 + timedelta(days=5)
    for kind in ("extract", "classify"):
        stats = book.stats(since=since, until=until, role="live", kind=kind)
        rows = book.daily(since=since.date(), until=until.date(), role="live", kind=kind)
        assert stats["tasks"] == sum(r["tasks"] for r in rows) > 0
        assert stats["attempts"] == sum(r["attempts"] for r in rows)
        assert stats["spend_usd"] == sum((r["cost_usd"] for r in rows), Decimal(0))
        assert stats["wasted_usd"] == sum((r["wasted_usd"] for r in rows), Decimal(0))
        assert stats["escalated_tasks"] == sum(r["tasks_escalated"] for r in rows)
        for entry in stats["by_kind_tier"]:
            mine = [r for r in rows if r["tier"] == entry["tier"]]
            assert entry["tasks"] == sum(r["tier_tasks"] for r in mine)
            assert entry["escalated"] == sum(r["tier_escalated"] for r in mine)
    for offset in range(5):  # tasks count on the day they were created, in both
        day = DAY0 + timedelta(days=offset)
        stats = book.stats(since=day, until=day + timedelta(days=1), role=None)
        rows = book.daily(since=day.date(), until=day.date() + timedelta(days=1))
        assert stats["tasks"] == sum(r["tasks"] for r in rows)


def test_prune_keeps_what_is_still_in_use(ledger_url: str) -> None:
    """Held reservations, session budgets, today's counters and young running tasks stay."""
    today = DAY0 + timedelta(days=5)
    now = [today + timedelta(minutes=5)]
    with open_ledger(ledger_url, env={}, now=lambda: now[0]) as book:
        book.record_policy_revision(POLICY_REVISION, "{}", None)
        now[0] = DAY0
        old = Task.create("extract", "x", session="s-old")
        book.begin_task(
            old, make_decision("extract"), policy_revision=POLICY_REVISION, role="live",
            store_content=False,
        )  # fmt: skip
        day = DAY0.date().isoformat()
        limits = {f"kind-day:extract:{day}": Decimal(5), "session:s-old": Decimal(5)}
        settled = book.reserve(old.id, {**limits, f"task:{old.id}": Decimal(1)}, Decimal("0.1"))
        book.settle(settled, Decimal("0.05"))
        kept = book.reserve("t-held", {"kind-day:extract:2099-01-01": Decimal(5)}, Decimal(1))
        now[0] = today - timedelta(minutes=2)  # yesterday, running, within the TTL
        young = Task.create("extract", "y")
        book.begin_task(
            young, make_decision("extract"), policy_revision=POLICY_REVISION, role="live",
            store_content=False,
        )  # fmt: skip
        now[0] = today + timedelta(minutes=5)
        dry = book.prune(today.date(), dry_run=True)
        assert (dry.tasks, dry.reservations, dry.budget_counters, dry.sessions) == (1, 1, 2, 0)
        assert book.task(old.id) is not None  # a dry run changes nothing
        result = book.prune(today.date())
        assert result.tasks == 1  # the old running task (past the TTL), not the young one
        assert book.task(young.id) is not None and book.task(old.id) is None
        assert (result.reservations, result.budget_counters, result.sessions) == (1, 2, 1)
        assert book.budget("session:s-old") is not None  # a session's budget outlives its rows
        assert book.budget(f"kind-day:extract:{day}") is None
        book.settle(kept, Decimal("0.5"))  # the held reservation is still there to settle
        assert book.integrity_check() == []
        with pytest.raises(ValueError, match="after today"):
            book.prune(today.date() + timedelta(days=1))


def test_a_closed_ledger_refuses_to_prune(ledger_url: str) -> None:
    book = open_ledger(ledger_url)
    book.close()
    with pytest.raises(LedgerError, match="closed"):
        book.prune(DAY0.date())
