"""The learner's proposals from ledger rows, on SQLite and PostgreSQL: the right numbers (worked
out by hand here), confidence rather than point estimates, the break-even, hysteresis, the
cool-down, and kinds that must never move."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from tierwise.errors import PolicyError
from tierwise.learning import LearnSettings, break_even, propose
from tierwise.ledger import Ledger, open_ledger
from tierwise.ledger.fixtures import Step, record_task, record_trail
from tierwise.policy import Policy, loads_policy

LADDER = """version = 1
[[tiers]]
name = "cheap"
provider = "anthropic"
model = "claude-haiku-4-5"
[[tiers]]
name = "mid"
provider = "anthropic"
model = "claude-sonnet-4-6"
[[tiers]]
name = "strong"
provider = "anthropic"
model = "claude-opus-4-6"

# stated prices, USD per million tokens: cheap and mid at 1:3
[prices.claude-haiku-4-5]
input = 1
output = 5
cache_read = 0.1
[prices.claude-sonnet-4-6]
input = 3
output = 15
cache_read = 0.3
[prices.claude-opus-4-6]
input = 15
output = 75
cache_read = 1.5
"""
# The ledger fixtures' attempts use 120 input, 40 cache-read and 30 output tokens, so:
CHEAP = Decimal("0.000274")  # (120·1 + 40·0.1 + 30·5) / 1e6
MID = Decimal("0.000822")  # (120·3 + 40·0.3 + 30·15) / 1e6
T0 = datetime(2025, 6, 2, tzinfo=UTC)


class Clock:
    """The ledger's clock: rows are dated whatever the test says."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def policy(fleet: str = "", extra: str = "") -> Policy:
    """The ladder with a ``[fleet]`` table (``min_sample = 20`` unless *fleet* sets it)."""
    sample = "" if "min_sample" in fleet else "min_sample = 20\n"
    return loads_policy(LADDER + "\n[fleet]\n" + sample + fleet + "\n" + extra)


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def book(ledger_url: str, clock: Clock) -> Iterator[Ledger]:
    with open_ledger(ledger_url, now=clock) as ledger:
        yield ledger


def wilson_low(k: int, n: int) -> float:
    """The lower bound of the 95% Wilson interval, written out independently of the code."""
    z = 1.959963984540054
    p = k / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n)


def escalating(book: Ledger, kind: str, failed: int, passed: int, start: int = 0) -> None:
    """*failed* tasks rejected on tier *start* and accepted one up; *passed* accepted there."""
    for _ in range(failed):
        record_task(
            book, kind=kind, outcomes=["rejected", "accepted"], costs=[CHEAP, MID], start_tier=start
        )
    for _ in range(passed):
        record_task(book, kind=kind, outcomes=["accepted"], costs=[CHEAP], start_tier=start)


def probes(book: Ledger, kind: str, passed: int, rejected: int, floor: int = 1) -> None:
    """Tasks of *kind* routed to *floor*, each probed one tier below first."""
    for _ in range(passed):
        record_trail(
            book,
            [Step.of(floor - 1, "accepted", CHEAP, role="probe")],
            kind=kind,
            start_tier=floor,
            task_outcome="accepted",
        )
    for _ in range(rejected):
        record_trail(
            book,
            [Step.of(floor - 1, "rejected", CHEAP, role="probe"), Step.of(floor, "accepted", MID)],
            kind=kind,
            start_tier=floor,
        )


def test_break_even_at_one_to_three_prices_is_two_thirds() -> None:
    assert break_even(Decimal(1), Decimal(3)) == pytest.approx(2 / 3)
    assert break_even(CHEAP, MID) == pytest.approx(2 / 3)
    assert break_even(Decimal(3), Decimal(3)) is None


def test_exactly_the_failing_kind_is_proposed_with_the_money_and_latency(book: Ledger) -> None:
    escalating(book, "extract", failed=32, passed=8)  # 80% fail on cheap, mid passes them
    escalating(book, "chat", failed=2, passed=38)
    run = propose(book, policy(), until=T0 + timedelta(hours=1))

    assert [p.proposal.kind for p in run.proposed] == ["extract"]
    item = run.proposed[0]
    assert item.new and item.change is not None and item.change.status == "proposed"
    p = item.proposal
    assert (p.direction, p.floor_before, p.floor_after) == ("promote", None, "mid")
    ev = p.evidence["on_floor"]
    assert ev["failure"]["count"] == 32 and ev["failure"]["of"] == 40
    assert ev["failure"]["low"] == pytest.approx(wilson_low(32, 40))
    assert ev["next_tier_failure"]["count"] == 0 and ev["next_tier_failure"]["of"] == 32
    money = p.money
    assert money is not None
    assert money.saved_usd == 32 * CHEAP  # the failed cheap attempts, no longer paid
    assert money.added_usd == 8 * MID - 8 * CHEAP  # the 8 tasks cheap answered now pay mid
    assert money.net_usd == 32 * CHEAP - 8 * (MID - CHEAP) == Decimal("0.004384")
    assert money.break_even_failure == pytest.approx(2 / 3)
    assert p.latency["failed_attempts_s"] == pytest.approx(32 * 0.25)
    assert set(p.reasons) == {"money", "red_line", "latency"}
    # what the weekly report and the CLI read from the row
    change = item.change.change
    assert (change["floor_before"], change["floor_after"]) == (None, "mid")
    assert 'floor = "mid"' in change["toml"] and "[kinds.extract]" in change["toml"]
    holds = {h.kind: h.reason for h in run.holds}
    assert holds == {"chat": "below_threshold"}


def test_a_promotion_that_costs_more_is_proposed_for_latency_and_says_so(book: Ledger) -> None:
    escalating(book, "extract", failed=60, passed=40)  # 60%: below the 67% break-even
    pol = policy("promotion_threshold = 0.5\nescalation_red_line = 0.9\n")
    assert wilson_low(60, 100) >= 0.5
    run = propose(book, pol, until=T0 + timedelta(hours=1))
    (item,) = run.proposed
    p = item.proposal
    assert p.money is not None and p.money.net_usd == 60 * CHEAP - 40 * (MID - CHEAP) < 0
    assert p.reasons == ("latency",)
    assert "costs $" in p.summary and "breaks even near 67%" in p.summary
    assert "proposed for latency" in p.summary


def test_a_promotion_with_no_reason_at_all_is_held(book: Ledger) -> None:
    for _ in range(60):
        record_trail(book, [Step.of(0, "rejected", CHEAP, latency_s=0.0), Step.of(1, "accepted")])
    for _ in range(40):
        record_trail(book, [Step.of(0, "accepted", CHEAP)])
    pol = policy("promotion_threshold = 0.5\nescalation_red_line = 0.9\n")
    run = propose(book, pol, until=T0 + timedelta(hours=1))
    assert run.proposed == ()
    assert [h.reason for h in run.holds] == ["no_reason"]


def test_the_interval_decides_not_the_point_estimate(book: Ledger) -> None:
    escalating(book, "few", failed=4, passed=0)  # 100%, but of 4 tasks
    escalating(book, "some", failed=15, passed=5)  # 75% of 20: the lower bound is 53%
    assert wilson_low(15, 20) < 0.6 < 15 / 20
    run = propose(book, policy(), until=T0 + timedelta(hours=1))
    assert run.proposed == ()
    held = {h.kind: h.reason for h in run.holds}
    assert held == {"few": "small_sample", "some": "below_threshold"}


def test_a_next_tier_that_fails_them_too_is_no_promotion(book: Ledger) -> None:
    for _ in range(40):
        record_task(book, kind="hard", outcomes=["rejected", "rejected", "accepted"])
    run = propose(book, policy(), until=T0 + timedelta(hours=1))
    assert run.proposed == ()
    assert [h.reason for h in run.holds] == ["next_fails"]


def test_evidence_must_hold_over_the_window(book: Ledger, clock: Clock) -> None:
    escalating(book, "extract", failed=60, passed=0)  # the first half: all failed
    clock.now = T0 + timedelta(days=10)
    escalating(book, "extract", failed=0, passed=30)  # the second half: the model was fixed
    run = propose(book, policy("promotion_threshold = 0.5\n"), until=T0 + timedelta(days=13))
    assert wilson_low(60, 90) >= 0.5  # over the whole window it would be proposed
    assert run.proposed == ()
    (hold,) = run.holds
    assert hold.reason == "not_held" and "second half" in hold.detail


def test_must_stay_frontier_kinds_never_move(book: Ledger) -> None:
    escalating(book, "security", failed=40, passed=0)
    pol = policy(extra='[frontier]\nkinds = ["security"]\n')
    run = propose(book, pol, until=T0 + timedelta(hours=1))
    assert run.proposed == ()
    assert [h.reason for h in run.holds] == ["frontier"]


def test_probes_that_pass_with_confidence_propose_a_demotion(book: Ledger) -> None:
    pol = policy(extra='[kinds.tone]\nfloor = "mid"\n')
    probes(book, "tone", passed=28, rejected=0)
    for _ in range(10):  # answered on mid
        record_task(book, kind="tone", outcomes=["accepted"], costs=[MID], start_tier=1)
    flagged, _ = record_task(book, kind="tone", outcomes=["accepted"], costs=[MID], start_tier=1)
    book.record_feedback(flagged.id, "cheaper_would_do", author="ana")
    run = propose(book, pol, until=T0 + timedelta(hours=1))
    (item,) = run.proposed
    p = item.proposal
    assert (p.direction, p.floor_before, p.floor_after) == ("demote", "mid", "cheap")
    below = p.evidence["below"]
    assert (below["passed"], below["rejected"], below["cheaper_would_do"]) == (28, 0, 1)
    assert below["failure"]["count"] == 0 and below["failure"]["of"] == 29
    assert below["spend_usd"] == str(28 * CHEAP)
    # every task paid mid (11 × MID); 100% would pass below: all of it saved, a cheap first
    # attempt per task added (11 tasks answered on mid, 28 by probes: 11 on the floor counted)
    assert p.money is not None and p.money.saved_usd == 11 * MID
    assert p.money.added_usd == 11 * CHEAP


def test_probes_failing_between_the_thresholds_change_nothing(book: Ledger) -> None:
    pol = policy(extra='[kinds.tone]\nfloor = "mid"\n')
    probes(book, "tone", passed=28, rejected=12)  # 30%: above 25%, far below 60%
    run = propose(book, pol, until=T0 + timedelta(hours=1))
    assert run.proposed == ()
    assert [h.reason for h in run.holds] == ["above_threshold"]


def test_a_flag_on_a_passing_probe_counts_against_the_tier_below(book: Ledger) -> None:
    pol = policy(extra='[kinds.tone]\nfloor = "mid"\n')
    probes(book, "tone", passed=30, rejected=0)
    run = propose(book, pol, dry_run=True, until=T0 + timedelta(hours=1))
    assert [p.proposal.direction for p in run.proposed] == ["demote"]
    probed = [a["task_id"] for a in book.iter_attempts(role="probe")]
    for task_id in probed[:12]:
        book.record_feedback(task_id, "wrong", author="ana")
    run = propose(book, pol, until=T0 + timedelta(hours=1))
    assert run.proposed == ()
    assert run.holds[0].reason == "above_threshold"


def test_the_thresholds_must_leave_a_gap() -> None:
    with pytest.raises(PolicyError) as info:
        policy("promotion_threshold = 0.5\ndemotion_threshold = 0.5\n")
    assert "fleet.demotion_threshold: must be below promotion_threshold (0.5)" in str(info.value)
    with pytest.raises(PolicyError) as info:
        policy('mode = "sometimes"\n')
    assert "fleet.mode" in str(info.value)


def test_settings_come_from_fleet() -> None:
    pol = policy('mode = "auto"\nprobe_share = 0.1\ncooldown_days = 3\nwindow_days = 28\n')
    s = LearnSettings.from_policy(pol)
    assert (s.mode, s.probe_share, s.min_sample) == ("auto", 0.1, 20)
    assert (s.cooldown, s.window) == (timedelta(days=3), timedelta(days=28))
    assert LearnSettings.from_policy(pol, window=timedelta(days=2)).window == timedelta(days=2)


# -- no flapping --------------------------------------------------------------------------------


def test_a_kind_on_the_threshold_gets_no_change_over_many_windows(
    book: Ledger, clock: Clock
) -> None:
    """60% failure (the promotion threshold) and probes failing 30% below a floored kind: in
    auto mode, window after window, nothing moves and nothing is even proposed."""
    pol = policy('mode = "auto"\nwindow_days = 7\n', '[kinds.tone]\nfloor = "mid"\n')
    for week in range(12):
        clock.now = T0 + timedelta(weeks=week, hours=1)
        escalating(book, "extract", failed=30, passed=20)
        probes(book, "tone", passed=35, rejected=15)
        run = propose(book, pol, until=T0 + timedelta(weeks=week + 1))
        assert run.proposed == () and run.applied == (), week
        assert {h.reason for h in run.holds} == {"below_threshold", "above_threshold"}
    assert book.policy_changes() == []


def test_no_kind_moves_twice_within_the_cool_down(book: Ledger, clock: Clock) -> None:
    """Evidence that flips every five days (cheap fails, then probes pass, then it fails again):
    in auto mode the kind moves, then stays put for the cool-down, however strong the evidence
    the next days bring."""
    pol = policy('mode = "auto"\ncooldown_days = 7\nwindow_days = 3\nmin_sample = 10\n')
    moves: list[datetime] = []
    for day in range(30):
        clock.now = T0 + timedelta(days=day, hours=1)
        if (day // 5) % 2 == 0:
            escalating(book, "extract", failed=20, passed=0)  # cheap fails everything
            probes(book, "extract", passed=0, rejected=20)
        else:
            escalating(book, "extract", failed=0, passed=20)
            probes(book, "extract", passed=20, rejected=0)  # cheap passes everything
        clock.now = T0 + timedelta(days=day, hours=2)
        run = propose(book, pol, until=clock.now)
        for change in run.applied:
            assert change.decided_at is not None
            moves.append(change.decided_at)
    assert len(moves) >= 3  # it does move when the cool-down allows
    gaps = [b - a for a, b in itertools.pairwise(moves)]
    assert all(gap >= timedelta(days=7) for gap in gaps), gaps
    history = book.policy_changes(status="applied")
    assert [c.action for c in reversed(history)][:2] == ["promote", "demote"]
