"""One ledger, every view agrees: the offline demo run in week 19, a second run a week later under
a changed policy (a learned floor for draft_reply), both on a fake clock, and people's flags.
Every figure that `report`, `report compare`, `explain` and `advise` share — and `ledger stats`
and the analytics beside them — is equal. Both backends."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from tierwise.analytics import Settings, analyze
from tierwise.demo import DemoReport, demo_tasks, run_demo
from tierwise.ledger import Ledger, open_ledger
from tierwise.ledger.escalation import AttemptFacts, classify
from tierwise.ledger.schema import from_pico, tasks
from tierwise.policy import Policy, default_policy
from tierwise.reports import explain_task
from tierwise.reports.advisor import advise
from tierwise.reports.compare import compare
from tierwise.reports.weekly import WeeklyReport, weekly_report

WEEK1 = (datetime(2026, 5, 4, tzinfo=UTC), datetime(2026, 5, 11, tzinfo=UTC))
WEEK2 = (datetime(2026, 5, 11, tzinfo=UTC), datetime(2026, 5, 18, tzinfo=UTC))
NOW = datetime(2026, 5, 19, 12, tzinfo=UTC)
N = 120


def ticking(start: datetime, step: timedelta) -> Callable[[], datetime]:
    """A clock that moves *step* forward at each reading (tasks spread over hours)."""
    at = [start]

    def now() -> datetime:
        at[0] += step
        return at[0]

    return now


@dataclass
class Weeks:
    url: str
    ledger: Ledger
    policy: Policy
    changed: Policy
    runs: tuple[DemoReport, DemoReport]


@pytest.fixture
def weeks(ledger_url: str) -> Iterator[Weeks]:
    policy = default_policy()
    changed = policy.with_floors({"draft_reply": "mid"})
    first = run_demo(policy, demo_tasks(N, seed=7), ledger_url,
                     now=ticking(WEEK1[0] + timedelta(hours=9), timedelta(seconds=25)))  # fmt: skip
    later = [t.with_(id=f"w20-{i:04d}") for i, t in enumerate(demo_tasks(N, seed=8))]
    clock = ticking(WEEK2[0] + timedelta(hours=9), timedelta(seconds=25))
    second = run_demo(changed, later, ledger_url, now=clock)
    with open_ledger(ledger_url, now=lambda: NOW) as book:
        for task_id, flag in (("w20-0001", "cheaper_would_do"), ("w20-0002", "wrong"),
                              ("demo-0003", "needed_frontier")):  # fmt: skip
            book.record_feedback(task_id, flag, author="reviewer")
        yield Weeks(ledger_url, book, policy, changed, (first, second))


def _ids(book: Ledger, window: tuple[datetime, datetime]) -> list[str]:
    with book.reading() as conn:
        rows = conn.execute(
            sa.select(tasks.c.id).where(
                tasks.c.created_at >= window[0], tasks.c.created_at < window[1]
            )
        )
        return sorted(str(r[0]) for r in rows)


def _check_explain_adds_up(
    book: Ledger, report: WeeklyReport, window: tuple[datetime, datetime]
) -> None:
    explained = [explain_task(book, task_id) for task_id in _ids(book, window)]
    assert len(explained) == sum(d.tasks for d in report.days)
    assert sum(e["cost_usd"] for e in explained) == report.total_usd
    assert sum(e["attempts_cost_usd"] for e in explained) == report.total_usd
    calls: Counter[str] = Counter()
    money: dict[str, Decimal] = {}
    escalated = first_try = 0
    starts: dict[str, Counter[str]] = {}
    side = {"probe": Decimal(0), "shadow": Decimal(0)}
    for e in explained:
        for a in e["attempts"]:
            if a["role"] in side:  # the learner's probes and shadow calls: their own lines
                side[a["role"]] += a["cost_usd"]
                continue
            calls[a["tier"]] += 1
            money[a["tier"]] = money.get(a["tier"], Decimal(0)) + a["cost_usd"]
        facts = [AttemptFacts(a["role"], a["tier_index"], a["outcome"]) for a in e["attempts"]]
        verdict = classify(role=e["role"], start_index=e["decision"]["tier_index"],
                           outcome=e["outcome"], attempts=facts)  # fmt: skip
        escalated += verdict.escalated
        first_try += verdict.first_try
        starts.setdefault(e["kind"], Counter())[e["decision"]["tier"]] += 1
    assert (from_pico(report.lines.probe), from_pico(report.lines.shadow)) == (
        side["probe"],
        side["shadow"],
    )
    assert {t.tier: t.calls for t in report.tier_mix} == dict(calls)
    assert {t.tier: t.cost_usd for t in report.tier_mix} == money
    assert (report.fleet.escalated, report.fleet.first_try) == (escalated, first_try)
    for k in report.top_kinds:
        assert k.start_tiers == dict(starts[k.kind])


def test_every_view_of_the_two_weeks_agrees(weeks: Weeks) -> None:
    book, changed = weeks.ledger, weeks.changed
    r1 = weekly_report(book, weeks.policy, since=WEEK1[0], until=WEEK1[1], now=NOW, top=20)
    r2 = weekly_report(book, changed, since=WEEK2[0], until=WEEK2[1], now=NOW, top=20)
    first, second = weeks.runs

    # the demo's own count of what it spent and escalated
    assert (r1.total_usd, r2.total_usd) == (first.cost_usd, second.cost_usd)
    assert (r1.fleet.escalated, r2.fleet.escalated) == (
        first.escalated_tasks,
        second.escalated_tasks,
    )
    assert (r1.fleet.wasted_usd, r2.fleet.wasted_usd) == (first.wasted_usd, second.wasted_usd)
    assert sum(d.tasks for d in r1.days) == sum(d.tasks for d in r2.days) == N

    # the changed policy: draft_reply starts on mid now, and did in week 20 only
    reply = next(k for k in r2.top_kinds if k.kind == "draft_reply")
    assert reply.current_tier == "mid" and reply.floor_source == "learned"
    assert set(reply.start_tiers) == {"mid"}
    assert "cheap" in next(k for k in r1.top_kinds if k.kind == "draft_reply").start_tiers

    # compare: each side is that window's report, and the split adds up to the bill's change
    c = compare(book, changed, WEEK1, WEEK2, now=NOW)
    for mine, window in ((c.before, WEEK1), (c.after, WEEK2)):
        own = weekly_report(book, changed, since=window[0], until=window[1], now=NOW)
        assert mine.as_dict() | {"source": None} == own.as_dict() | {"source": None}
    assert c.row("bill").before_value == r1.total_usd and c.row("bill").after_value == r2.total_usd
    assert c.row("escalation").after_value == r2.fleet.escalation.value
    assert c.row("flag:wrong").after_value == r2.flags["wrong"].value == 1 / r2.fleet.accepted
    assert c.row("flag:needed_frontier").before_value == 1 / r1.fleet.accepted
    assert c.row("efficiency").after_value == r2.efficiency.ratio.value
    s = c.split
    assert s.volume + s.mix + s.unit + s.side == s.total
    assert s.total_usd == r2.total_usd - r1.total_usd
    assert c.row("calls").after_value == s.calls_after == sum(t.calls for t in r2.tier_mix)

    # explain, task by task, adds up to the report
    _check_explain_adds_up(book, r1, WEEK1)
    _check_explain_adds_up(book, r2, WEEK2)

    # advise over week 20: the report's spend, tasks, and per kind its spend and escalation
    a = advise(book, changed, since=WEEK2[0], until=WEEK2[1], now=NOW)
    assert a.spend_usd == r2.total_usd and a.tasks == N
    groups = analyze(book, Settings.from_policy(changed), since=WEEK2[0], until=WEEK2[1])
    steps = [step for k in a.kinds for step in k.cascades]
    assert {k.kind for k in a.kinds} == set(r2.kinds) and steps
    for k in a.kinds:
        assert k.spend_usd == r2.kinds[k.kind].cost_usd
    for step in steps:  # each cascade's failure rate is the analytics' group escalation
        group = groups.group(step.kind, step.start_tier)
        assert group is not None and step.failure == group.totals.escalation
        assert step.cost_start_usd and step.cost_next_usd

    # ledger stats and the analytics over the same windows
    for window, report in ((WEEK1, r1), (WEEK2, r2)):
        stats = book.stats(since=window[0], until=window[1], kind=None, role=None)
        assert stats["spend_usd"] == report.total_usd
        assert (stats["escalated_tasks"], stats["resolved_tasks"]) == (
            report.fleet.escalated,
            report.fleet.resolved,
        )
        facts = analyze(book, Settings.from_policy(changed), since=window[0], until=window[1])
        assert facts.fleet.cost_usd == report.fleet.cost_usd
        assert facts.fleet.escalation == report.fleet.escalation
        assert facts.fleet.first_try == report.fleet.first_try
        for kind, totals in report.kinds.items():
            found = facts.kind(kind)
            assert found is not None and found.totals.escalation == totals.escalation
            assert found.totals.wasted_usd == totals.wasted_usd
        pairs = (
            (report.fleet.latency_direct, facts.fleet.latency_direct),
            (report.fleet.latency_escalated, facts.fleet.latency_escalated),
        )
        for ours, theirs in pairs:
            assert ours.tasks == theirs.tasks
            assert ours.p50_s == pytest.approx(theirs.p50_s, rel=1e-12)
            assert ours.p95_s == pytest.approx(theirs.p95_s, rel=1e-12)
