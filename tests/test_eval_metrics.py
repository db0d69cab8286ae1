"""Metrics on constructed cases whose answers are computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tierwise.evaluation.metrics import (
    Step,
    Trace,
    apgr,
    bootstrap_mean,
    cpt,
    oracle_router,
    paired_difference,
    random_router,
    router_curve,
    routing_curve,
    summarize,
)

# weak right on rows 0 and 3; strong right on rows 0, 1, 2. weak 0.5, strong 0.75.
WEAK = np.array([1.0, 0.0, 0.0, 1.0])
STRONG = np.array([1.0, 1.0, 1.0, 0.0])


def test_oracle_router_apgr_by_hand() -> None:
    """The oracle sends rows 1 and 2 first (gain 1), row 0 next (gain 0), row 3 last (gain -1).

    Quality at strong share 0, 0.5, 0.75, 1: 0.5, 1.0, 1.0, 0.75 → PGR 0, 2, 2, 1;
    trapezoids: 0.5·(0+2)/2 + 0.25·(2+2)/2 + 0.25·(2+1)/2 = 1.375.
    """
    r = router_curve("oracle", oracle_router(WEAK, STRONG), WEAK, STRONG)
    assert r.curve.shares.tolist() == [0.0, 0.5, 0.75, 1.0]
    assert r.curve.qualities.tolist() == [0.5, 1.0, 1.0, 0.75]
    assert r.apgr == pytest.approx(1.375)
    # 50% of the gap (quality 0.625) at share 0.125, 80% (0.7) at 0.2, on the first segment
    assert r.cpt50 == pytest.approx(0.125)
    assert r.cpt80 == pytest.approx(0.2)


def test_oracle_apgr_when_weak_never_beats_strong() -> None:
    """The weak model never beats the strong one: the oracle recovers the whole gap after the
    one gaining row (share 0.25) and stays there, so APGR = 1 − 0.25 / 2."""
    weak = np.array([1.0, 0.0, 0.0, 0.0])
    strong = np.array([1.0, 1.0, 0.0, 0.0])
    r = router_curve("oracle", oracle_router(weak, strong), weak, strong)
    assert r.apgr == pytest.approx(1 - 0.25 / 2)


def test_oracle_apgr_is_half_when_every_row_gains() -> None:
    """When the strong model gains on every row, every order is optimal and the curve is the
    straight line: even the oracle's APGR is 0.5."""
    weak, strong = np.zeros(4), np.ones(4)
    assert router_curve("o", oracle_router(weak, strong), weak, strong).apgr == pytest.approx(0.5)


def test_always_weak_first_router_by_hand() -> None:
    """A router that sends the rows where the weak model is right first: the worst order.

    Rows by score: 3 (gain -1), 0 (0), then 1 and 2 (+1 each, tied). Quality at shares 0, 0.25,
    0.5, 1: 0.5, 0.25, 0.25, 0.75 → PGR 0, -1, -1, 1; area 0.25·(-0.5) + 0.25·(-1) + 0.5·0 =
    -0.375.
    """
    anti = -oracle_router(WEAK, STRONG)
    r = router_curve("anti", anti, WEAK, STRONG)
    assert r.curve.qualities.tolist() == [0.5, 0.25, 0.25, 0.75]
    assert r.apgr == pytest.approx(-0.375)
    assert r.cpt50 == pytest.approx(0.5 + 0.5 * (0.625 - 0.25) / 0.5)


def test_constant_router_is_the_straight_line() -> None:
    """Tied scores cannot be split: a constant router's curve is weak → strong, APGR 0.5."""
    r = router_curve("const", np.zeros(4), WEAK, STRONG)
    assert r.curve.shares.tolist() == [0.0, 1.0]
    assert r.apgr == pytest.approx(0.5)
    assert r.cpt50 == pytest.approx(0.5)


def test_random_router_apgr_is_about_half() -> None:
    """Averaged over seeds, a random router's APGR is 0.5 within sampling noise."""
    rng = np.random.default_rng(7)
    weak = (rng.random(2000) < 0.6).astype(float)
    strong = (rng.random(2000) < 0.8).astype(float)
    values = [router_curve("r", random_router(2000, s), weak, strong).apgr for s in range(20)]
    assert np.mean(values) == pytest.approx(0.5, abs=0.03)
    assert random_router(5, 3).tolist() == random_router(5, 3).tolist()  # seeded


def test_cpt_unreached_and_gapless() -> None:
    """CPT is None when the curve never recovers the level; APGR is None without a gap."""
    curve = routing_curve(np.zeros(2), np.array([0.0, 0.0]), np.array([1.0, 0.0]))
    assert cpt(curve, 0.0, 0.5, 1.5) is None
    assert apgr(curve, 0.3, 0.3) is None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans(), st.floats(-1, 1)), min_size=1, max_size=40))
def test_curve_endpoints_are_always_weak_and_strong(rows: list[tuple[bool, bool, float]]) -> None:
    """Whatever the router, the curve starts at the weak quality and ends at the strong one."""
    weak = np.array([float(w) for w, _, _ in rows])
    strong = np.array([float(s) for _, s, _ in rows])
    scores = np.array([x for _, _, x in rows])
    c = routing_curve(scores, weak, strong)
    assert c.shares[0] == 0.0 and c.shares[-1] == 1.0
    assert c.qualities[0] == pytest.approx(weak.mean())
    assert c.qualities[-1] == pytest.approx(strong.mean())
    assert np.all(np.diff(c.shares) > 0)


def test_bootstrap_interval_is_seeded_and_contains_the_mean() -> None:
    """Same seed, same interval; the interval brackets the mean and shrinks with more data."""
    values = np.tile([0.0, 1.0, 1.0, 1.0], 50)
    a, b = bootstrap_mean(values, seed=3), bootstrap_mean(values, seed=3)
    assert a == b
    assert a.value == pytest.approx(0.75)
    assert a.low < a.value < a.high
    wide = bootstrap_mean(values[:20], seed=3)
    assert (wide.high - wide.low) > (a.high - a.low)


def test_paired_difference_sees_a_consistent_gain() -> None:
    """A strategy right on every row the other is right, plus some, wins with a positive CI."""
    base = np.tile([1.0, 0.0, 1.0, 0.0], 50)
    better = base.copy()
    better[1::4] = 1.0
    d = paired_difference(better, base, seed=0)
    assert d.value == pytest.approx(0.25)
    assert d.low > 0
    with pytest.raises(ValueError, match="differ in length"):
        paired_difference([1.0], [1.0, 0.0])


def _trace(score: float, steps: list[Step], exhausted: bool = False) -> Trace:
    final = [s for s in steps if not s.validator][-1]
    cost = sum(s.cost or 0 for s in steps)
    return Trace("p", "k", final.model, final.tier, score, cost, tuple(steps), exhausted)


def test_summary_counts_escalations_waste_and_validator_errors() -> None:
    """Four rows: hand-counted escalation rate, wasted spend and validator error rates."""
    cheap = lambda score, ok: Step("cheap", "c", 1.0, score, ok, judged=True)  # noqa: E731
    strong = lambda score: Step("strong", "s", 10.0, score, True)  # noqa: E731
    agree = Step("mid", "m", 2.0, 1.0, True, validator=True)
    traces = [
        _trace(1.0, [cheap(1.0, True)]),  # right, accepted
        _trace(0.0, [cheap(0.0, True), agree]),  # wrong, accepted: false accept
        _trace(1.0, [cheap(0.0, False), strong(1.0)]),  # wrong, rejected: good escalation
        _trace(1.0, [cheap(1.0, False), strong(1.0)]),  # right, rejected: false escalation
    ]
    reference = [_trace(1.0, [strong(1.0)]) for _ in traces]
    oracle = [_trace(1.0, [cheap(1.0, True)]) for _ in traces]
    s = summarize(
        "x",
        traces,
        group="strategy",
        threshold=0.5,
        oracle=oracle,
        reference=reference,
        top_tier="strong",
    )
    assert s.quality.value == pytest.approx(0.75)
    assert s.cost_per_query == pytest.approx((1 + 3 + 11 + 11) / 4)
    assert s.cost_share == pytest.approx(6.5 / 10)
    assert s.escalation_rate == pytest.approx(0.5)
    assert s.wasted_per_query == pytest.approx(2 / 4)
    assert s.false_accept_rate == pytest.approx(1 / 2)  # of two wrong cheap answers, one accepted
    assert s.false_escalate_rate == pytest.approx(1 / 2)  # of two right ones, one rejected
    assert s.top_share == pytest.approx(0.5)
    assert s.delta_oracle_quality == pytest.approx(-0.25)
    assert s.delta_oracle_cost == pytest.approx(6.5 - 1)
    data = s.as_dict()
    assert {"name", "quality", "cost_per_query_usd", "cost_share"} <= data.keys()


def test_exhausted_answer_is_not_counted_as_waste() -> None:
    """An exhausted ladder returns its last answer: only the earlier failed attempts are waste."""
    steps = [
        Step("cheap", "c", 1.0, 0.0, False, judged=True),
        Step("strong", "s", 10.0, 1.0, False),
    ]
    assert _trace(1.0, steps, exhausted=True).wasted == pytest.approx(1.0)
    assert _trace(1.0, steps, exhausted=False).wasted == pytest.approx(11.0)


def test_unknown_costs_stay_unknown() -> None:
    """One unknown cost makes the strategy's cost n/a instead of a wrong number."""
    t = Trace("p", "k", "m", "cheap", 1.0, None, (Step("cheap", "m", None, 1.0, True),))
    s = summarize("x", [t], group="single", threshold=0.5, oracle=[t])
    assert s.cost_per_query is None and s.cost_share is None and s.wasted_per_query is None
