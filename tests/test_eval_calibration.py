"""Cross-validated calibration: folds, the vectorised cascade against a plain loop, objectives,
and schemes kept only when they win on rows they were not chosen on."""

from __future__ import annotations

import random
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tierwise.evaluation.calibration import (
    CascadeArrays,
    Objective,
    Table,
    best_within,
    cheapest_meeting,
    choose_per_group,
    choose_shared,
    kfold,
    outcome_tables,
    settings_for,
)
from tierwise.evaluation.dataset import Ladder, ModelResult, Row
from tierwise.evaluation.learned import TextCounts, TextFeatures
from tierwise.evaluation.verifier import ResponseVerifier


def reference_run(
    scores: list[list[float]],
    costs: list[list[float]],
    probs: list[list[float]],
    asks: list[list[bool]],
    start: list[int],
    thresholds: list[list[float]],
) -> tuple[list[float], list[float], list[int]]:
    """The cascade one row at a time, the obvious way: start at the row's tier, pay its answer
    (and every cheaper tier's when it asks them), stop at the first accepted tier or the top."""
    quality, spent, reached = [], [], []
    for j, row in enumerate(scores):
        top = len(row) - 1
        paid = 0.0
        for i in range(start[j], top + 1):
            paid += costs[j][i]
            if i == top:
                break
            if asks[j][i]:
                paid += sum(costs[j][:i])
            if probs[j][i] >= thresholds[j][i]:
                break
        quality.append(row[i])
        spent.append(paid)
        reached.append(i)
    return quality, spent, reached


@st.composite
def cascades(draw: st.DrawFn) -> tuple[int, int, int]:
    return (
        draw(st.integers(2, 4)),  # tiers
        draw(st.integers(1, 12)),  # rows
        draw(st.integers(0, 2**31 - 1)),  # seed
    )


def random_arrays(tiers: int, n: int, seed: int) -> tuple[CascadeArrays, np.random.Generator]:
    rng = np.random.default_rng(seed)
    asks = rng.random((n, tiers - 1)) < 0.5
    asks[:, 0] = False  # the bottom tier has nobody cheaper to ask
    arrays = CascadeArrays(
        scores=rng.integers(0, 2, (n, tiers)).astype(float),
        costs=np.round(rng.random((n, tiers)) * 10, 3),
        probs=np.round(rng.random((n, tiers - 1)), 2),
        asks=asks,
    )
    return arrays, rng


@settings(max_examples=60, deadline=None)
@given(cascades())
def test_vectorised_cascade_equals_the_plain_loop(case: tuple[int, int, int]) -> None:
    """Any ladder, rows, start tiers and thresholds: the vectorised run and the loop agree."""
    tiers, n, seed = case
    arrays, rng = random_arrays(tiers, n, seed)
    start = rng.integers(0, tiers - 1, n)
    thresholds = np.round(rng.random((n, tiers - 1)), 2)
    q, c, t = arrays.run(start, thresholds)
    rq, rc, rt = reference_run(
        arrays.scores.tolist(),
        arrays.costs.tolist(),
        arrays.probs.tolist(),
        arrays.asks.tolist(),
        start.tolist(),
        thresholds.tolist(),
    )
    assert t.tolist() == rt
    np.testing.assert_allclose(q, rq)
    np.testing.assert_allclose(c, rc, atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(cascades())
def test_outcome_tables_sum_every_setting_run_row_by_row(case: tuple[int, int, int]) -> None:
    """The block-vectorised tables equal one run per setting, summed per key."""
    tiers, n, seed = case
    arrays, rng = random_arrays(tiers, n, seed)
    grid = settings_for(tiers, range(tiers - 1))[::37]
    keys = rng.integers(0, 3, n)
    [(q, c)] = outcome_tables(arrays, grid, [(keys, 3)])
    for i, (s, ts) in enumerate(grid):
        quality, cost, _ = arrays.run(np.full(n, s), np.tile(ts, (n, 1)))
        np.testing.assert_allclose(q[i], np.bincount(keys, quality, minlength=3))
        np.testing.assert_allclose(c[i], np.bincount(keys, cost, minlength=3), atol=1e-9)


outcomes = st.lists(st.tuples(st.integers(0, 5), st.integers(0, 20)), min_size=1, max_size=30).map(
    lambda xs: [(i, q / 20, c / 4) for i, (c, q) in enumerate(xs)]
)


@settings(max_examples=100, deadline=None)
@given(outcomes, st.floats(0.0, 0.2), st.floats(0.0, 1.0))
def test_vectorised_pick_equals_the_sequential_one(
    items: list[tuple[int, float, float]], tolerance: float, share: float
) -> None:
    """Both objectives pick the same outcome from arrays as from the sequential search."""
    q = np.array([x[1] for x in items])
    c = np.array([x[2] for x in items])
    for objective in (Objective(tolerance=tolerance), Objective(max_cost_share=share)):
        picked = objective.pick(iter(items), 0.9, 1.0)
        index = objective.pick_index(q, c, 0.9, 1.0)
        assert (q[index], c[index]) == (picked[1], picked[2])


def test_objectives() -> None:
    """Quality mode: the cheapest reaching the target, else the best. Budget mode: the best
    within the budget, else the cheapest."""
    items = [("a", 0.80, 1.0), ("b", 0.88, 3.0), ("c", 0.90, 5.0), ("d", 0.91, 9.0)]
    assert cheapest_meeting(items, 0.88)[0] == "b"
    assert cheapest_meeting(items, 0.95)[0] == "d"
    assert best_within(items, 5.0)[0] == "c"
    assert best_within(items, 0.5)[0] == "a"
    assert Objective(tolerance=0.01).pick(items, 0.90, 10.0)[0] == "c"
    assert Objective(max_cost_share=0.3).pick(items, 0.90, 10.0)[0] == "b"


def test_kfold_is_seeded_and_spreads_every_kind() -> None:
    """Same seed, same folds; every kind is spread over every fold as evenly as it can be."""
    rows = [Row(f"r{i}", "p", "ab"[i % 2], {}) for i in range(50)]
    folds = kfold(rows, 5, seed=3)
    assert folds.tolist() == kfold(rows, 5, seed=3).tolist()
    assert folds.tolist() != kfold(rows, 5, seed=4).tolist()
    for kind in "ab":
        sizes = np.bincount([f for r, f in zip(rows, folds, strict=True) if r.kind == kind])
        assert sizes.tolist() == [5, 5, 5, 5, 5]


def test_text_counts_fit_equals_text_features_fit_on_the_subset() -> None:
    """Counting once and fitting on a subset gives the vocabulary, idf and matrix that fitting
    TF-IDF on that subset's texts gives."""
    rng = random.Random(1)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(2, 9))) for _ in range(80)]
    counts = TextCounts.of(texts)
    subset = np.array(sorted(rng.sample(range(80), 60)))
    features, _, matrix = counts.fit(subset)
    direct = TextFeatures.fit([texts[i] for i in subset])
    assert features.vocabulary == direct.vocabulary
    np.testing.assert_allclose(features.idf, direct.idf)
    np.testing.assert_allclose(
        matrix.toarray(), direct.transform([texts[i] for i in subset]).toarray(), atol=1e-12
    )


def two_source_arrays(
    informative: bool, n: int = 400, seed: int = 0
) -> tuple[CascadeArrays, np.ndarray]:
    """Two sources on a two-tier ladder. Source 0's verifier is sharp; source 1's is sharp too
    when *informative*, else pure noise (there escalating everything is the only way to keep
    quality, and one shared threshold must then pay for it on source 0 as well)."""
    rng = np.random.default_rng(seed)
    group = np.arange(n) % 2
    right = rng.random(n) < 0.7
    sharp = np.where(right, 0.75 + 0.2 * rng.random(n), 0.05 + 0.2 * rng.random(n))
    noise = rng.random(n)
    probs = np.where((group == 0) | informative, sharp, noise)
    arrays = CascadeArrays(
        scores=np.stack([right.astype(float), np.ones(n)], axis=1),
        costs=np.tile([1.0, 10.0], (n, 1)),
        probs=probs[:, None],
        asks=np.zeros((n, 1), dtype=bool),
    )
    return arrays, group


@pytest.mark.parametrize("informative", [True, False])
def test_per_source_thresholds_win_only_where_sources_differ(informative: bool) -> None:
    """On rows they were not chosen on, per-source thresholds beat one shared threshold when one
    source's verifier is noise, and do not when both sources behave alike."""
    from tierwise.evaluation.calibration import cross_fit, curve_area, held_out_curve

    arrays, group = two_source_arrays(informative)
    fold = np.arange(len(group)) % 5
    grid = settings_for(2, [0])
    [shared_table] = Table.build(arrays, grid, fold, [(np.zeros_like(group), 1)], 5)
    [group_table] = Table.build(arrays, grid, fold, [(group, 2)], 5)

    def shared_for(goal: Objective):  # type: ignore[no-untyped-def]
        return lambda t, on: choose_shared(t, on, [0], goal)

    def per_group_for(goal: Objective):  # type: ignore[no-untyped-def]
        return lambda t, on: choose_per_group(t, on, goal)

    shared = curve_area(held_out_curve(lambda f: shared_table, 5, shared_for)[0])
    per_source = curve_area(held_out_curve(lambda f: group_table, 5, per_group_for)[0])
    goal = Objective(tolerance=0.0)
    q_shared, c_shared, top, _ = cross_fit(lambda f: shared_table, 5, shared_for(goal))
    q_group, c_group, _, _ = cross_fit(lambda f: group_table, 5, per_group_for(goal))
    if informative:
        assert per_source == pytest.approx(shared, abs=0.005)
    else:
        assert per_source > shared + 0.01
        assert c_group < c_shared  # the same quality target, met more cheaply
        assert min(q_group, q_shared) >= top - 0.02


def verifier_rows(n: int, seed: int, sources: tuple[str, str] = ("alpha", "beta")) -> list[Row]:
    """Two sources of number answers; the small model's hedged answers are the wrong ones on
    the first source, while on the second its answers say nothing about being right."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        source = sources[i % 2]
        right = rng.random() < 0.6
        if source == sources[0]:
            text = f"worked through it, the answer is {rng.randint(1, 50)}" if right else "unsure"
        else:
            text = rng.choice(["the answer is 12", "unsure", "it is 7 i think"])
        rows.append(
            Row(
                f"{source}-{i}",
                f"question {i} about {source}",
                source,
                {
                    "small": ModelResult(float(right), text, Decimal("0.001")),
                    "big": ModelResult(1.0, "the answer is 3", Decimal("0.01")),
                },
                source=source,
            )
        )
    return rows


def test_verifier_calibration_records_every_scheme_and_survives_json() -> None:
    """Training keeps one scheme and records each scheme's held-out curve; a per-source or
    isotonic verifier round-trips through JSON and scores the same."""
    import json

    ladder = Ladder(("cheap", "strong"), ("small", "big"))
    rows = verifier_rows(400, 1)
    formats = {"alpha": "number", "beta": "number"}
    verifier = ResponseVerifier.train(rows, ladder, formats, threshold=0.5, seed=0)
    cal = verifier.calibration
    assert cal is not None and cal.folds == 5 and cal.rows == 400
    assert [s.name for s in cal.schemes] == [
        "shared",
        "per source",
        "shared, isotonic",
        "per source, isotonic",
    ]
    kept = next(s for s in cal.schemes if s.name == cal.scheme)
    assert kept.area >= cal.schemes[0].area
    assert cal.held_out_quality == pytest.approx(kept.quality)
    again = ResponseVerifier.from_json(json.loads(json.dumps(verifier.to_json())))
    unseen = verifier_rows(40, 9)
    np.testing.assert_allclose(again.probabilities_for(unseen), verifier.probabilities_for(unseen))
    assert again.settings == verifier.settings and again.groups == verifier.groups
    assert [again.setting(r.kind) for r in unseen] == [verifier.setting(r.kind) for r in unseen]


def _table(groups: list[list[tuple[float, float]]], top_cost: float) -> Table:
    """A one-fold table with the given (quality sum, cost sum) per setting and group; ten rows
    and *top_cost* of top-tier cost per group."""
    n_settings = max(len(g) for g in groups)
    quality = np.zeros((n_settings, 1, len(groups)))
    cost = np.full((n_settings, 1, len(groups)), 1e9)  # missing settings: never affordable
    for g, points in enumerate(groups):
        for s, (q, c) in enumerate(points):
            quality[s, 0, g], cost[s, 0, g] = q, c
    ones = np.ones((1, len(groups)))
    settings = tuple((0, (float(s),)) for s in range(n_settings))
    return Table(settings, quality, cost, ones * 10.0, ones * top_cost, ones * 10.0)


def test_a_cost_budget_is_spent_where_it_buys_the_most_quality() -> None:
    """Per source, a budget is a knapsack: one price of cost for every source can stop far
    under the budget (here at 10 of 45), and what is left goes to the best quality per dollar
    that still fits — never over the budget."""
    # Source A: nothing, or 10 quality for 40. Source B: 3 for 10, or 6 for 30.
    table = _table([[(0.0, 0.0), (10.0, 40.0)], [(0.0, 0.0), (3.0, 10.0), (6.0, 30.0)]], 56.25)
    goal = Objective(max_cost_share=0.4)  # mean top cost 5.625 × 20 rows × 0.4 = 45 to spend
    choice = choose_per_group(table, np.ones(1, dtype=bool), goal)
    assert choice.cost * 20 <= 45 + 1e-9
    assert choice.per_group == (0, 2)
    assert choice.quality * 20 == pytest.approx(6.0)


@given(
    st.lists(
        st.lists(st.tuples(st.integers(0, 20), st.integers(0, 40)), min_size=1, max_size=5),
        min_size=1,
        max_size=3,
    ),
    st.floats(0.05, 1.0),
)
@settings(max_examples=60, deadline=None)
def test_a_filled_budget_leaves_no_affordable_better_setting(
    groups: list[list[tuple[int, int]]], share: float
) -> None:
    """Within the budget, and no source could still move to a better setting that fits."""
    points = [[(0.0, 0.0)] + [(float(q), float(c)) for q, c in g] for g in groups]
    table = _table(points, 100.0)
    budget = share * 100.0 * len(points)
    q_all, c_all = table.quality[:, 0, :], table.cost[:, 0, :]
    choice = choose_per_group(table, np.ones(1, dtype=bool), Objective(max_cost_share=share))
    spent = sum(c_all[s, g] for g, s in enumerate(choice.per_group))
    assert spent <= budget + 1e-6
    for g, s in enumerate(choice.per_group):
        fits = spent - c_all[s, g] + c_all[:, g] <= budget - 1e-6
        assert not ((q_all[:, g] > q_all[s, g]) & fits).any(), (g, s, choice.per_group)


def test_under_a_budget_schemes_are_judged_by_held_out_quality_at_that_budget() -> None:
    """A scheme whose curve is higher on average but worse at the budget loses there; one that
    overshoots the budget on held-out rows loses to one within it; without a budget the curve
    decides."""
    from tierwise.evaluation.verifier_train import SchemeResult, merit

    flat = SchemeResult("shared", area=0.85, quality=0.86, cost=0.40, top_quality=0.88, top_cost=1)
    curvy = SchemeResult("per source", 0.86, 0.85, 0.39, 0.88, 1.0)
    dear = SchemeResult("per source", 0.86, 0.87, 0.43, 0.88, 1.0)
    budget = Objective(max_cost_share=0.4)
    assert merit(flat, budget) > merit(curvy, budget)
    assert merit(flat, budget) > merit(dear, budget)
    assert merit(curvy, Objective()) > merit(flat, Objective())
