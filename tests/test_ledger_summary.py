"""The kept hourly summary the weekly report reads is exactly what the rows say: the same sums
from the kept tables as from the rows, whatever mix of trails, hours, running tasks, late rows
and pruning; exact percentiles over sorted runs. Both backends."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tierwise.ledger import Ledger, open_ledger
from tierwise.ledger.fixtures import Step, record_trail
from tierwise.ledger.queries import percentile
from tierwise.ledger.summary import Summary, percentile_of, runs_of
from tierwise.task import Task

T0 = datetime(2026, 5, 4, 0, 0, tzinfo=UTC)  # a Monday


@pytest.fixture
def clock() -> list[datetime]:
    return [T0]


@pytest.fixture
def ledger(ledger_url: str, clock: list[datetime]) -> Iterator[Ledger]:
    with open_ledger(ledger_url, now=lambda: clock[0]) as book:
        yield book


def _trail(rng: random.Random) -> tuple[list[Step], dict[str, Any]]:
    """A random task: its attempts and record_trail's keywords."""
    role = rng.choice(["live"] * 6 + ["probe", "shadow", "replay"])
    if role == "live" and rng.random() < 0.1:  # a concrete-model call
        outcome = rng.choice(["accepted", "error"])
        return [Step.of(-1, outcome, f"0.00{rng.randint(1, 9)}")], {"start_tier": -1}
    start = rng.randrange(3)
    steps: list[Step] = []
    for tier in range(start, 3):
        if rng.random() < 0.15:  # an alternate model after a provider error on the same tier
            steps.append(Step.of(tier, "error", "0.0001", role=role))
        if rng.random() < 0.2:
            steps.append(Step.of(tier, "accepted", "0.00007", role="validator"))
        if role == "live" and rng.random() < 0.1:
            steps.append(Step.of(0, "accepted", "0.00003", role=rng.choice(["probe", "shadow"])))
        cost = Decimal(rng.randrange(1, 10**7)).scaleb(-12)
        if tier == 2 or rng.random() < 0.6:
            outcome = rng.choice(["accepted"] * 5 + ["rejected"])
            steps.append(Step.of(tier, outcome, cost, role=role, latency_s=rng.random()))
            if outcome == "accepted":
                break
        else:
            steps.append(Step.of(tier, "rejected", cost, role=role))
    keywords: dict[str, Any] = {"start_tier": start, "role": role}
    if rng.random() < 0.1:
        keywords["task_outcome"] = rng.choice(["budget", "error"])
    return steps, keywords


def fill(ledger: Ledger, clock: list[datetime], n: int, seed: int, hours: int = 30) -> list[str]:
    """*n* random tasks over *hours* hours from T0 (kinds, keys, sessions, roles, outcomes)."""
    rng = random.Random(seed)
    ids = []
    for _ in range(n):
        clock[0] = T0 + timedelta(seconds=rng.randrange(hours * 3600))
        steps, keywords = _trail(rng)
        task, _ = record_trail(
            ledger,
            steps,
            kind=rng.choice(["extract", "classify", "code_edit"]),
            session=rng.choice([None, "s1", "s2", "s3"]),
            key_id=rng.choice([None, 1, 2]),
            latency_s=round(rng.uniform(0.1, 30), 3),
            **keywords,
        )
        ids.append(task.id)
    return ids


def _over_window(parts: dict[Any, list[int]]) -> dict[Any, list[int]]:
    """Sums keyed without their hour (the first part of every key)."""
    out: dict[Any, list[int]] = {}
    for key, values in parts.items():
        found = out.setdefault(key[1:], [0] * len(values))
        for i, v in enumerate(values):
            found[i] += v
    return {k: v for k, v in out.items() if any(v)}


def normal(summary: Summary) -> dict[str, Any]:
    """A summary's content, with tiers, sessions and keys summed over the window (the kept
    form) and facts and latencies per hour."""
    return {
        "groups": {k: v for k, v in summary.groups.items() if any(v)},
        "tiers": _over_window(summary.tiers),
        "sessions": _over_window(summary.sessions),
        "keys": _over_window(summary.keys),
        "latency": {k: sorted(v) for k, v in summary.latency.items() if len(v)},
        "counts": {h: n for h, n in summary.counts.items() if n},
    }


def test_kept_hours_give_exactly_the_sums_of_the_rows(
    ledger: Ledger, clock: list[datetime]
) -> None:
    fill(ledger, clock, 300, seed=1)
    now = T0 + timedelta(hours=40)
    since, until = T0 + timedelta(minutes=30), T0 + timedelta(hours=29, minutes=10)
    rows = ledger.report_summary(since, until, now=now, from_rows=True)
    first = ledger.report_summary(since, until, now=now)
    assert len(first.summarised) == 28  # the whole hours inside the window, kept
    assert first.from_rows == ((since, T0 + timedelta(hours=1)), (T0 + timedelta(hours=29), until))
    again = ledger.report_summary(since, until, now=now)
    assert again.summarised == () and len(again.kept) == 28
    assert normal(first.summary) == normal(rows.summary) == normal(again.summary)
    assert sum(rows.summary.counts.values()) > 200


def test_hours_not_ended_are_read_from_the_rows_and_never_kept(
    ledger: Ledger, clock: list[datetime]
) -> None:
    fill(ledger, clock, 60, seed=2, hours=3)
    now = T0 + timedelta(hours=2, minutes=30)
    window = ledger.report_summary(T0, T0 + timedelta(hours=3), now=now)
    assert window.summarised == (T0, T0 + timedelta(hours=1))
    assert window.from_rows == ((T0 + timedelta(hours=2), T0 + timedelta(hours=3)),)
    rows = ledger.report_summary(T0, T0 + timedelta(hours=3), now=now, from_rows=True)
    assert normal(window.summary) == normal(rows.summary)


def test_a_task_running_when_its_hour_was_kept_counts_once_it_finishes(
    ledger: Ledger, clock: list[datetime]
) -> None:
    clock[0] = T0 + timedelta(minutes=5)
    from tierwise.ledger.fixtures import POLICY_REVISION, make_attempt, make_decision

    task = Task.create("extract", "x")
    ledger.record_policy_revision(POLICY_REVISION, "{}", None)
    ledger.begin_task(
        task, make_decision("extract"), policy_revision=POLICY_REVISION, role="live",
        store_content=False,
    )  # fmt: skip
    record_trail(ledger, [Step.of(0, "accepted", "0.5")])
    now = T0 + timedelta(hours=2)
    first = ledger.report_summary(T0, T0 + timedelta(hours=1), now=now)
    assert first.pending == 1 and first.summarised == (T0,)
    (values,) = [v for k, v in first.summary.groups.items() if any(v)]
    from tierwise.ledger.summary import FACT

    assert values[FACT["running"]] == 1 and values[FACT["tasks"]] == 2
    ledger.record_attempt(make_attempt(task, 0, cost_usd="0.25"), store_content=False)
    ledger.finish_task(
        task.id, outcome="accepted", final_tier="cheap", cost_usd=Decimal("0.25"),
        latency_s=1.0, attempts=1, output=None, store_content=False,
    )  # fmt: skip
    later = ledger.report_summary(T0, T0 + timedelta(hours=1), now=now)
    assert later.summarised == ()  # still kept: only the running task is read again
    rows = ledger.report_summary(T0, T0 + timedelta(hours=1), now=now, from_rows=True)
    assert normal(later.summary) == normal(rows.summary)
    (values,) = [v for k, v in later.summary.groups.items() if any(v)]
    assert values[FACT["running"]] == 0 and values[FACT["accepted"]] == 2
    assert values[FACT["cost_pusd"]] == 750_000_000_000


def test_rows_written_late_into_a_kept_hour_make_it_stale(
    ledger: Ledger, clock: list[datetime]
) -> None:
    fill(ledger, clock, 40, seed=3, hours=4)
    now = T0 + timedelta(hours=5)
    ledger.report_summary(T0, T0 + timedelta(hours=4), now=now)
    clock[0] = T0 + timedelta(hours=1, minutes=20)  # a gateway's spool replayed into hour 1
    record_trail(ledger, [Step.of(0, "rejected", "0.01"), Step.of(1, "accepted", "0.1")])
    window = ledger.report_summary(T0, T0 + timedelta(hours=4), now=now)
    assert window.summarised == (T0 + timedelta(hours=1),)
    rows = ledger.report_summary(T0, T0 + timedelta(hours=4), now=now, from_rows=True)
    assert normal(window.summary) == normal(rows.summary)


def test_without_keep_nothing_is_written(
    ledger: Ledger, clock: list[datetime], ledger_url: str, raw_sql: Any
) -> None:
    fill(ledger, clock, 30, seed=4, hours=3)
    window = ledger.report_summary(
        T0, T0 + timedelta(hours=3), now=T0 + timedelta(days=1), keep=False
    )
    assert window.summarised == () and window.kept == ()
    assert raw_sql(ledger_url, "SELECT count(*) FROM report_hours") == [(0,)]
    rows = ledger.report_summary(
        T0, T0 + timedelta(hours=3), now=T0 + timedelta(days=1), from_rows=True
    )
    assert normal(window.summary) == normal(rows.summary)


def test_kept_hours_outlive_pruning(ledger: Ledger, clock: list[datetime]) -> None:
    fill(ledger, clock, 80, seed=5, hours=48)
    clock[0] = T0 + timedelta(days=3)
    until = T0 + timedelta(days=2)
    before = ledger.report_summary(T0, until, now=clock[0])
    ledger.prune((T0 + timedelta(days=1)).date())
    after = ledger.report_summary(T0, until, now=clock[0])
    assert after.summarised == ()  # the first day's rows are gone; its kept hours are not stale
    assert normal(after.summary) == normal(before.summary)


def test_progress_is_reported_per_pass(ledger: Ledger, clock: list[datetime]) -> None:
    fill(ledger, clock, 20, seed=6, hours=50)
    seen: list[tuple[int, int]] = []
    ledger.report_summary(
        T0, T0 + timedelta(hours=50), now=T0 + timedelta(days=3),
        progress=lambda done, total: seen.append((done, total)),
    )  # fmt: skip
    assert seen[-1] == (50, 50) and len(seen) == 3  # a day per pass: 24 + 24 + 2


# -- percentiles -------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), max_size=30),
        max_size=6,
    ),
    st.sampled_from([0, 1, 50, 95, 99, 100]),
)
def test_percentiles_over_sorted_runs_equal_those_of_one_list(
    parts: list[list[float]], q: int
) -> None:
    everything = [x for part in parts for x in part]
    n, value = percentile_of([runs_of(p) for p in parts], q)
    assert n == len(everything)
    assert value == percentile(everything, q)
