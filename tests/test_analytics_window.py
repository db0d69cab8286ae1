"""Analytics over a window, every number against a hand count: intervals, latency split, waste,
flags, the red line and its contributors, UTC window edges; the same figures from ``ledger
stats`` and after pruning into the daily rollups. Both backends."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from tierwise.analytics import Settings, analyze, wilson_interval
from tierwise.ledger import Ledger, open_ledger
from tierwise.ledger.fixtures import Step, record_task, record_trail

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> list[datetime]:
    return [T0]


@pytest.fixture
def ledger(ledger_url: str, clock: list[datetime]) -> Iterator[Ledger]:
    with open_ledger(ledger_url, now=lambda: clock[0]) as book:
        yield book


# -- intervals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        (5, 10, 0.2366, 0.7634),  # published Wilson 95% values
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (1, 50, 0.0035, 0.1050),
    ],
)
def test_wilson_interval_matches_published_values(k: int, n: int, low: float, high: float) -> None:
    got = wilson_interval(k, n)
    assert got is not None
    assert got == (pytest.approx(low, abs=5e-5), pytest.approx(high, abs=5e-5))


def test_wilson_interval_of_nothing_is_none_and_bad_counts_are_refused() -> None:
    assert wilson_interval(0, 0) is None
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(3, 2)


# -- one kind, every number --------------------------------------------------------------------


def test_every_number_of_a_hand_built_kind(ledger: Ledger) -> None:
    # 4 direct on cheap (latency 1, 2, 3, 4 s), 3 climbed to mid (10, 12, 14 s), 1 exhausted (30 s)
    for i, latency in enumerate((1.0, 2.0, 3.0, 4.0)):
        record_task(ledger, outcomes=["accepted"], costs=[f"0.00{i + 1}"], latency_s=latency)
    for latency in (10.0, 12.0, 14.0):
        record_task(
            ledger, outcomes=["rejected", "accepted"], costs=["0.001", "0.01"], latency_s=latency
        )
    record_task(
        ledger,
        outcomes=["rejected", "rejected", "error"],
        costs=["0.001", "0.01", "0.1"],
        latency_s=30.0,
    )
    g = analyze(ledger, Settings(min_sample=5), until=T0 + timedelta(hours=1)).group(
        "extract", "cheap"
    )
    assert g is not None and g.status == "measured"
    t = g.totals
    assert (t.tasks, t.resolved, t.accepted, t.exhausted) == (8, 8, 7, 1)
    assert (t.escalated, t.first_try) == (4, 4)
    assert t.escalation.interval == wilson_interval(4, 8)
    assert t.first_try_pass.value == 0.5
    assert t.cost_usd == Decimal("0.010") + 3 * Decimal("0.011") + Decimal("0.111")
    assert t.cost_per_accepted_usd == Decimal("0.154") / 7 == Decimal("0.022")
    assert t.wasted_usd == 3 * Decimal("0.001") + Decimal("0.111")
    assert g.reasons == {"json": 4}
    # percentiles by linear interpolation (numpy's default), direct against escalated
    assert (t.latency_direct.tasks, t.latency_direct.p50_s) == (4, 2.5)
    assert t.latency_direct.p95_s == pytest.approx(3.85)
    assert (t.latency_escalated.tasks, t.latency_escalated.p50_s) == (4, 13.0)
    assert t.latency_escalated.p95_s == pytest.approx(27.6)


def test_a_window_is_half_open_in_utc(ledger: Ledger, clock: list[datetime]) -> None:
    start = datetime(2026, 3, 1, tzinfo=UTC)
    for at in (start - timedelta(microseconds=1), start, start + timedelta(days=1)):
        clock[0] = at
        record_task(ledger, outcomes=["rejected", "accepted"])
    report = analyze(ledger, Settings(), since=start, until=start + timedelta(days=1))
    assert report.fleet.tasks == 1  # the one created at `since`; `until` is excluded
    local = start.astimezone(timezone(timedelta(hours=1)))  # 01:00 at UTC+1: the same instant
    same = analyze(ledger, Settings(), since=local, until=start + timedelta(days=1))
    assert same.since == start and same.since.utcoffset() == timedelta(0)
    assert same.fleet.tasks == 1
    with pytest.raises(ValueError, match="aware"):
        analyze(ledger, Settings(), since=datetime(2026, 3, 1))
    with pytest.raises(ValueError, match="empty"):
        analyze(ledger, Settings(), since=start, until=start)


def test_default_window_is_the_last_14_days(ledger: Ledger, clock: list[datetime]) -> None:
    for days in (15, 13, 0):
        clock[0] = T0 - timedelta(days=days)
        record_task(ledger)
    report = analyze(ledger, Settings(), now=T0 + timedelta(seconds=1))
    assert report.until - report.since == timedelta(days=14)
    assert report.fleet.tasks == 2


# -- flags -------------------------------------------------------------------------------------


def test_flag_rates_per_kind_and_the_tier_that_answered(ledger: Ledger) -> None:
    cheap = [record_task(ledger, outcomes=["accepted"])[0] for _ in range(4)]
    mid = [record_task(ledger, outcomes=["rejected", "accepted"])[0] for _ in range(2)]
    top = record_task(ledger, start_tier=2, outcomes=["accepted"])[0]
    failed = record_task(ledger, outcomes=["rejected", "rejected", "rejected"])[0]
    ledger.record_feedback(cheap[0].id, "wrong", author="ana")
    ledger.record_feedback(cheap[0].id, "cheaper_would_do", author="bo")  # two authors, two flags
    ledger.record_feedback(cheap[1].id, "cheaper_would_do", author="ana")
    ledger.record_feedback(cheap[1].id, "needed_frontier", author="ana")  # the latest stands
    ledger.record_feedback(mid[0].id, "cheaper_would_do", author="ana")
    ledger.record_feedback(top.id, "needed_frontier", author="ana")
    ledger.record_feedback(failed.id, "wrong", author="ana")  # not an accepted output: no count
    report = analyze(ledger, Settings(), until=T0 + timedelta(hours=1))
    by_tier = {(f.kind, f.tier): f for f in report.flags}
    c = by_tier[("extract", "cheap")]
    assert (c.accepted, c.wrong, c.needed_frontier, c.cheaper_would_do, c.top) == (
        4,
        1,
        1,
        1,
        False,
    )
    data = c.as_dict()
    assert data["under_routed"] == 1 and data["confirmed"] == 0
    assert data["wrong"]["rate"] == 0.25
    m = by_tier[("extract", "mid")]
    assert (m.accepted, m.cheaper_would_do) == (2, 1)
    s = by_tier[("extract", "strong")]
    assert (s.accepted, s.needed_frontier, s.top) == (1, 1, True)
    assert s.as_dict()["confirmed"] == 1 and s.as_dict()["under_routed"] == 0
    group = report.group("extract", "cheap")
    assert group is not None
    # late failures: accepted on the starting tier, then flagged wrong or needed_frontier
    assert group.late_failures == 2
    assert group.failure_with_flags.count == group.totals.escalated + 2 == 5


# -- the red line ------------------------------------------------------------------------------


def test_red_line_contributors_and_their_share_of_the_excess(
    ledger: Ledger, clock: list[datetime]
) -> None:
    for i in range(10):
        record_task(ledger, kind="a", outcomes=["rejected", "accepted"] if i < 5 else ["accepted"])
    for _ in range(30):
        record_task(ledger, kind="b", outcomes=["accepted"])
    for _ in range(10):
        record_task(ledger, kind="c", outcomes=["rejected", "accepted"])
    clock[0] = T0 - timedelta(days=2)  # outside the red line's day, inside the window
    for _ in range(20):
        record_task(ledger, kind="b", outcomes=["rejected", "accepted"])
    report = analyze(ledger, Settings(red_line=0.09), until=T0 + timedelta(hours=1))
    line = report.red_line
    assert (line.resolved, line.escalated) == (50, 15)
    assert line.above and line.excess == pytest.approx(15 - 4.5)
    shares = {c.kind: c for c in line.contributors}
    assert [c.kind for c in line.contributors] == ["c", "a", "b"]
    assert shares["c"].excess == pytest.approx(10 - 0.9)
    assert shares["a"].share == pytest.approx((5 - 0.9) / 10.5)
    assert shares["b"].share == pytest.approx(-2.7 / 10.5)
    assert math.fsum(c.share or 0 for c in line.contributors) == pytest.approx(1)
    assert shares["c"].points == pytest.approx(10 / 50)
    assert report.fleet.escalated == 35  # the window holds the older day too


def test_below_the_line_and_an_empty_day(ledger: Ledger) -> None:
    for i in range(20):
        record_task(ledger, outcomes=["rejected", "accepted"] if i == 0 else ["accepted"])
    report = analyze(ledger, Settings(red_line=0.09), until=T0 + timedelta(hours=1))
    assert report.red_line.rate.value == 0.05 and not report.red_line.above
    later = analyze(ledger, Settings(), until=T0 + timedelta(days=3))
    assert later.red_line.rate.value is None and not later.red_line.above


# -- the same figures elsewhere ----------------------------------------------------------------


def test_ledger_stats_show_the_same_escalation(ledger: Ledger) -> None:
    for case in (["accepted"], ["rejected", "accepted"], ["rejected", "rejected", "rejected"]):
        record_task(ledger, outcomes=case)
        record_task(ledger, kind="classify", outcomes=case[-1:])
    record_trail(ledger, (Step.of(0, "error", model="p"), Step.of(0, model="alt")))
    record_trail(ledger, (Step.of(0), Step.of(1, role="validator")))
    record_task(ledger, outcomes=["rejected"], task_outcome="budget")
    window = {"since": T0 - timedelta(days=1), "until": T0 + timedelta(hours=1)}
    stats = ledger.stats(**window)
    report = analyze(ledger, Settings(), **window)
    for kind in report.kinds:
        entry = stats["by_kind"][kind.kind]
        assert entry["escalated_tasks"] == kind.totals.escalated
        assert entry["resolved_tasks"] == kind.totals.resolved
        assert entry["escalation_rate"] == kind.totals.escalation.value
    for group in report.groups:
        row = next(
            r
            for r in stats["by_kind_tier"]
            if (r["kind"], r["tier"]) == (group.kind, group.start_tier)
        )
        assert (row["tasks"], row["escalated"]) == (group.totals.resolved, group.totals.escalated)
    assert stats["escalation_rate"] == report.fleet.escalation.value == pytest.approx(3 / 8)


def test_daily_rollups_keep_the_escalation_after_pruning(
    ledger: Ledger, clock: list[datetime]
) -> None:
    for day in range(3):
        clock[0] = T0 - timedelta(days=10 - day)
        for outcomes in (["accepted"], ["rejected", "accepted"], ["rejected"] * 3):
            record_task(ledger, outcomes=outcomes)
        record_task(ledger, start_tier=1, outcomes=["rejected", "accepted"])
        record_task(ledger, outcomes=["rejected"], task_outcome="budget")
    clock[0] = T0
    before = analyze(ledger, Settings(), since=T0 - timedelta(days=11), until=T0)
    rows_before = ledger.daily(role="live")
    ledger.prune((T0 - timedelta(days=5)).date())
    assert ledger.stats()["tasks"] == 0
    rows_after = ledger.daily(role="live")
    assert rows_after == rows_before  # rebuilt from the rows, kept after: the same numbers
    for group in before.groups:
        mine = [r for r in rows_after if (r["kind"], r["tier"]) == (group.kind, group.start_tier)]
        assert sum(r["tier_tasks"] for r in mine) == group.totals.resolved
        assert sum(r["tier_escalated"] for r in mine) == group.totals.escalated
    assert sum(r["tier_escalated"] for r in rows_after) == before.fleet.escalated == 9
