"""Calibration that transfers: settings chosen on rows the model was not fitted on.

A learned router's margin and a verifier's thresholds are picked where a cost–quality objective
is met (:class:`Objective`): the top tier's quality minus a tolerance at the lowest cost, or the
best quality within a share of the top tier's cost. Picked on the rows a model was fitted on,
such settings look better than they are; picked on one calibration quarter, they move with the
quarter drawn. So here every probability a setting is judged by is **out of fold**: the training
rows are cut into *k* folds (:func:`kfold`, seeded, stratified by kind), each fold is scored by a
model fitted on the others, and settings are chosen on all *k* folds at once. Whether a richer
scheme (thresholds per source, isotonic-calibrated probabilities) is worth keeping is judged the
same way one level up (:func:`cross_fit`): chosen on *k − 1* folds, measured on the fold left
out.

The verifier cascade is simulated here from recorded scores and costs, vectorised over rows
(:class:`CascadeArrays`), mirroring the replayed cascade: start at a tier, pay its answer (and
every cheaper tier's when the verifier asks them to agree), accept when ``P(correct)`` reaches
the tier's threshold, else climb; the top tier is accepted unchecked.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from tierwise.evaluation.dataset import Row

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

#: Inner cross-validation folds inside the training rows.
CV_FOLDS = 5
#: Threshold grid per judged tier (ladders of up to three tiers).
GRID = tuple(float(x) for x in np.round(np.linspace(0.0, 1.0, 41), 3))
#: A coarser grid per tier for longer ladders, so that the product of grids stays small.
COARSE_GRID = tuple(float(x) for x in np.round(np.linspace(0.0, 1.0, 11), 3))
#: Above this many threshold combinations, all judged tiers share one threshold.
MAX_COMBINATIONS = 20000
#: A source needs this many training rows to get thresholds of its own.
MIN_GROUP_ROWS = 60
#: The group of rows whose source has too few rows, and of kinds never seen in training.
OTHER = "*"

Candidate = TypeVar("Candidate")


@dataclass(frozen=True, slots=True)
class Objective:
    """What calibration aims at.

    Without *max_cost_share*: the cheapest setting whose quality reaches the top tier's minus
    *tolerance*. With it: the best quality at no more than that share of the top tier's cost.
    """

    tolerance: float = 0.01
    max_cost_share: float | None = None

    def describe(self) -> str:
        if self.max_cost_share is not None:
            return f"best quality at ≤ {self.max_cost_share:.0%} of the top tier's cost"
        return f"cheapest within {self.tolerance:.3f} of the top tier's quality"

    def target(self, top_quality: float) -> float:
        """The quality a setting must reach (quality mode)."""
        return top_quality - self.tolerance

    def pick(
        self,
        outcomes: Iterable[tuple[Candidate, float, float]],
        top_quality: float,
        top_cost: float,
        *,
        tie: float = 0.0,
    ) -> tuple[Candidate, float, float]:
        """Of (setting, quality, cost) outcomes, the one this objective prefers."""
        if self.max_cost_share is not None:
            return best_within(outcomes, self.max_cost_share * top_cost, tie=tie)
        return cheapest_meeting(outcomes, self.target(top_quality), tie=tie)

    def pick_index(
        self, quality: FloatArray, cost: FloatArray, top_quality: float, top_cost: float
    ) -> int:
        """:meth:`pick` over arrays of outcomes (the earliest on exact ties): the index."""
        order = np.arange(len(quality))
        if self.max_cost_share is not None:
            ok = cost <= self.max_cost_share * top_cost + 1e-15
            if not ok.any():
                return int(np.argmin(cost))
            idx = order[ok]
            return int(idx[np.lexsort((idx, cost[ok], -quality[ok]))[0]])
        ok = quality >= self.target(top_quality) - 1e-12
        if ok.any():
            idx = order[ok]
            return int(idx[np.argmin(cost[ok])])
        return int(np.lexsort((order, cost, -quality))[0])

    def as_dict(self) -> dict[str, float | None]:
        return {"tolerance": self.tolerance, "max_cost_share": self.max_cost_share}


def cheapest_meeting(
    outcomes: Iterable[tuple[Candidate, float, float]], target: float, *, tie: float = 0.0
) -> tuple[Candidate, float, float]:
    """Of (setting, quality, cost) outcomes, the cheapest whose quality reaches *target*; when
    none does, the best quality (the cheaper on equal quality). Earlier outcomes win ties, and a
    later one must be cheaper by more than *tie* to replace an earlier one.

    Raises:
        ValueError: no outcomes.
    """
    best: tuple[Candidate, float, float] | None = None
    fallback: tuple[Candidate, float, float] | None = None
    for item in outcomes:
        _, q, c = item
        if q >= target - 1e-12 and (best is None or c < best[2] - tie):
            best = item
        if fallback is None or q > fallback[1] or (q == fallback[1] and c < fallback[2]):
            fallback = item
    picked = best or fallback
    if picked is None:
        raise ValueError("no outcomes to choose from")
    return picked


def best_within(
    outcomes: Iterable[tuple[Candidate, float, float]], budget: float, *, tie: float = 0.0
) -> tuple[Candidate, float, float]:
    """Of (setting, quality, cost) outcomes, the best quality at cost ≤ *budget* (the cheaper on
    equal quality; a later one must be better by more than *tie*); when none fits, the cheapest.

    Raises:
        ValueError: no outcomes.
    """
    best: tuple[Candidate, float, float] | None = None
    fallback: tuple[Candidate, float, float] | None = None
    for item in outcomes:
        _, q, c = item
        if c <= budget + 1e-15 and (
            best is None or q > best[1] + tie or (abs(q - best[1]) <= tie and c < best[2])
        ):
            best = item
        if fallback is None or c < fallback[2]:
            fallback = item
    picked = best or fallback
    if picked is None:
        raise ValueError("no outcomes to choose from")
    return picked


def kfold(rows: Sequence[Row], k: int, seed: int) -> IntArray:
    """A fold number (0..k−1) per row: seeded, rows of each kind spread evenly over the folds."""
    rng = random.Random(seed)
    by_kind: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_kind.setdefault(r.kind, []).append(i)
    out = np.zeros(len(rows), dtype=np.int64)
    offset = 0
    for kind in sorted(by_kind):
        idx = by_kind[kind]
        rng.shuffle(idx)
        for j, i in enumerate(idx):
            out[i] = (offset + j) % k
        offset += len(idx)
    return out


def folds_for(n: int, wanted: int = CV_FOLDS) -> int:
    """How many inner folds *n* training rows allow (at least 2, about 10 rows per fold)."""
    return max(2, min(wanted, n // 10))


# -- the verifier cascade, vectorised ----------------------------------------------------------

#: A verifier setting: the tier a group starts at and one threshold per judged tier (thresholds
#: below the start are 0 and never read).
Setting = tuple[int, tuple[float, ...]]


@dataclass(frozen=True, slots=True)
class CascadeArrays:
    """Per row and tier, what a verifier cascade would score and pay (recorded data).

    Attributes:
        scores / costs: ``(rows, tiers)``.
        probs: ``(rows, tiers − 1)``, ``P(correct)`` of each judged tier's answer.
        asks: ``(rows, tiers − 1)``, whether judging that tier asks every cheaper tier.
    """

    scores: FloatArray
    costs: FloatArray
    probs: FloatArray
    asks: BoolArray

    def with_probs(self, probs: FloatArray) -> CascadeArrays:
        return CascadeArrays(self.scores, self.costs, probs, self.asks)

    @property
    def steps(self) -> FloatArray:
        """What each tier costs a row when the cascade reaches it (its answer, plus the
        cheaper tiers' answers when the verifier asks them)."""
        cheaper = np.cumsum(self.costs, axis=1) - self.costs
        out = self.costs.copy()
        out[:, :-1] += np.where(self.asks, cheaper[:, :-1], 0.0)
        return out

    def run(
        self, start: IntArray, thresholds: FloatArray, *, spent: FloatArray | None = None
    ) -> tuple[FloatArray, FloatArray, IntArray]:
        """Per row: quality, cost and tier reached, given its start tier and thresholds
        (``(rows, tiers − 1)``). *spent* is ``cumsum(steps, axis=1)`` when the caller has it."""
        n, tiers = self.scores.shape
        col = np.arange(tiers - 1)
        accept = (self.probs >= thresholds) & (col[None, :] >= start[:, None])
        accept = np.concatenate([accept, np.ones((n, 1), dtype=bool)], axis=1)
        tier = accept.argmax(axis=1).astype(np.int64)
        rows = np.arange(n)
        cum = np.cumsum(self.steps, axis=1) if spent is None else spent
        before = np.where(start > 0, cum[rows, np.maximum(start - 1, 0)], 0.0)
        return self.scores[rows, tier], cum[rows, tier] - before, tier


def settings_for(tiers: int, starts: Iterable[int]) -> list[Setting]:
    """Every setting the grid allows for the given start tiers of a *tiers*-tier ladder."""
    judged = tiers - 1
    out: list[Setting] = []
    for s in sorted(set(starts)):
        free = judged - s
        grid = GRID if free <= 2 else COARSE_GRID
        if len(grid) ** free <= MAX_COMBINATIONS:
            combos: Iterable[tuple[float, ...]] = itertools.product(grid, repeat=free)
        else:
            combos = ((t,) * free for t in GRID)
        out.extend((s, (0.0,) * s + tuple(c)) for c in combos)
    return out


#: Settings run together in one vectorised block (memory ~ block × rows × tiers).
BLOCK = 256


def outcome_tables(
    arrays: CascadeArrays, settings: Sequence[Setting], keyings: Sequence[tuple[IntArray, int]]
) -> list[tuple[FloatArray, FloatArray]]:
    """Quality and cost sums per setting and key (``(settings, keys)``), every row run with
    every setting once, summed for each ``(keys per row, number of keys)`` keying."""
    n, tiers = arrays.scores.shape
    spent = np.cumsum(arrays.steps, axis=1)
    onehots = [np.eye(m)[keys] for keys, m in keyings]  # (rows, keys)
    out = [(np.zeros((len(settings), m)), np.zeros((len(settings), m))) for _, m in keyings]
    col = np.arange(tiers - 1)
    rows = np.arange(n)
    for lo in range(0, len(settings), BLOCK):
        block = settings[lo : lo + BLOCK]
        start = np.array([st for st, _ in block], dtype=np.int64)  # (b,)
        ts = np.array([t for _, t in block], dtype=float).reshape(len(block), tiers - 1)
        accept = (arrays.probs[None, :, :] >= ts[:, None, :]) & (
            col[None, None, :] >= start[:, None, None]
        )
        accept = np.concatenate([accept, np.ones((len(block), n, 1), dtype=bool)], axis=2)
        tier = accept.argmax(axis=2)  # (b, rows)
        quality = arrays.scores[rows[None, :], tier]
        before = np.where(start[:, None] > 0, spent[:, np.maximum(start - 1, 0)].T, 0.0)
        cost = spent[rows[None, :], tier] - before
        for onehot, (q, c) in zip(onehots, out, strict=True):
            q[lo : lo + len(block)] = quality @ onehot
            c[lo : lo + len(block)] = cost @ onehot
    return out


@dataclass(frozen=True, slots=True)
class Table:
    """Outcome sums per setting, fold and group, with the top tier's sums and row counts."""

    settings: tuple[Setting, ...]
    quality: FloatArray  # (settings, folds, groups)
    cost: FloatArray
    top_quality: FloatArray  # (folds, groups)
    top_cost: FloatArray
    rows: FloatArray
    #: Derived index arrays, computed once per table.
    cache: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def stack(cls, tables: Sequence[Table]) -> Table:
        """Tables of the same rows (and top tier), their settings stacked along one axis: any
        group may then take any setting of any of them (a ladder per source, say)."""
        first = tables[0]
        return cls(
            tuple(s for t in tables for s in t.settings),
            np.concatenate([t.quality for t in tables]),
            np.concatenate([t.cost for t in tables]),
            first.top_quality,
            first.top_cost,
            first.rows,
        )

    @classmethod
    def build(
        cls,
        arrays: CascadeArrays,
        settings: Sequence[Setting],
        fold: IntArray,
        groupings: Sequence[tuple[IntArray, int]],
        n_folds: int,
    ) -> list[Table]:
        """One table per ``(group per row, number of groups)`` grouping (the rows are run
        once for all of them)."""
        keyings = [(fold * m + group, n_folds * m) for group, m in groupings]
        tables = []
        for (keys, _), (q, c), (_, m) in zip(
            keyings, outcome_tables(arrays, settings, keyings), groupings, strict=True
        ):
            shape = (len(settings), n_folds, m)
            tables.append(
                cls(
                    tuple(settings),
                    q.reshape(shape),
                    c.reshape(shape),
                    _sums(keys, arrays.scores[:, -1], n_folds, m),
                    _sums(keys, arrays.costs[:, -1], n_folds, m),
                    _sums(keys, np.ones(len(keys)), n_folds, m),
                )
            )
        return tables


def _sums(keys: IntArray, values: FloatArray, n_folds: int, n_groups: int) -> FloatArray:
    out = np.bincount(keys, weights=values, minlength=n_folds * n_groups).astype(float)
    shaped: FloatArray = out.reshape(n_folds, n_groups)
    return shaped


@dataclass(frozen=True, slots=True)
class Choice:
    """One setting per group, and what it did on the rows it was chosen on (means)."""

    per_group: tuple[int, ...]
    quality: float
    cost: float


def _means(table: Table, folds: BoolArray, per_group: Sequence[int]) -> tuple[float, float]:
    n = float(table.rows[folds].sum())
    if n == 0:
        return 0.0, 0.0
    q = sum(float(table.quality[s][folds, g].sum()) for g, s in enumerate(per_group))
    c = sum(float(table.cost[s][folds, g].sum()) for g, s in enumerate(per_group))
    return q / n, c / n


def _tops(table: Table, folds: BoolArray) -> tuple[float, float]:
    n = float(table.rows[folds].sum())
    if n == 0:
        return 0.0, 0.0
    return float(table.top_quality[folds].sum()) / n, float(table.top_cost[folds].sum()) / n


def shared_index(table: Table, rule_start: Sequence[int]) -> IntArray:
    """Per shared threshold vector (the settings starting at tier 0), the setting each group
    runs with when it starts at its rule's tier: ``(vectors, groups)``; vectors some group
    cannot run are left out. Cached on the table."""
    key = ("shared", tuple(rule_start))
    found = table.cache.get(key)
    if found is not None:
        cached: IntArray = found
        return cached
    index = {st: i for i, st in enumerate(table.settings)}
    out = []
    for s0, ts in table.settings:
        if s0 != 0:
            continue
        keys = [(s, (0.0,) * s + ts[s:]) for s in rule_start]
        if all(k in index for k in keys):
            out.append([index[k] for k in keys])
    picks = np.asarray(out, dtype=np.int64).reshape(len(out), len(rule_start))
    table.cache[key] = picks
    return picks


def choose_shared(
    table: Table, folds: BoolArray, rule_start: Sequence[int], objective: Objective
) -> Choice:
    """The same thresholds for every group, each group starting at its rule's tier."""
    picks = shared_index(table, rule_start)
    cols = np.arange(picks.shape[1])
    n = float(table.rows[folds].sum()) or 1.0
    q = table.quality[:, folds].sum(axis=1)[picks, cols].sum(axis=1) / n
    c = table.cost[:, folds].sum(axis=1)[picks, cols].sum(axis=1) / n
    i = objective.pick_index(q, c, *_tops(table, folds))
    return Choice(tuple(int(p) for p in picks[i]), float(q[i]), float(c[i]))


def choose_per_group(table: Table, folds: BoolArray, objective: Objective) -> Choice:
    """Any setting per group (start tier included): for each price of cost λ, every group takes
    the setting maximising quality − λ·cost; the objective picks among the λ outcomes."""
    q_all = table.quality[:, folds].sum(axis=1)  # (settings, groups)
    c_all = table.cost[:, folds].sum(axis=1)
    n = float(table.rows[folds].sum()) or 1.0
    top_q, top_c = _tops(table, folds)
    unit = 1.0 / top_c if top_c > 0 else 1.0
    # On equal utility the cheaper setting: quality − (λ + ε)·cost.
    lambdas = np.concatenate([[0.0], np.geomspace(1e-4, 1e4, 161)]) * unit + 1e-9 * unit
    groups = q_all.shape[1]
    picks = np.zeros((len(lambdas) + 1, groups), dtype=np.int64)
    for g in range(groups):
        # Only settings on the group's cost–quality frontier can maximise a utility.
        order = np.lexsort((np.arange(len(q_all)), -q_all[:, g], c_all[:, g]))
        best = np.maximum.accumulate(q_all[order, g])
        keep = order[np.concatenate([[True], best[1:] > best[:-1]])]
        utility = q_all[keep, g][None, :] - lambdas[:, None] * c_all[keep, g][None, :]
        picks[:-1, g] = keep[utility.argmax(axis=1)]
        picks[-1, g] = keep[0]  # the cheapest
    cols = np.arange(groups)
    q = q_all[picks, cols].sum(axis=1) / n
    c = c_all[picks, cols].sum(axis=1) / n
    i = objective.pick_index(q, c, top_q, top_c)
    chosen = [int(p) for p in picks[i]]
    if objective.max_cost_share is not None:
        chosen = fill_budget(q_all, c_all, chosen, objective.max_cost_share * top_c * n)
    q_sum = sum(float(q_all[s, g]) for g, s in enumerate(chosen))
    c_sum = sum(float(c_all[s, g]) for g, s in enumerate(chosen))
    return Choice(tuple(chosen), q_sum / n, c_sum / n)


def fill_budget(
    quality: FloatArray, cost: FloatArray, chosen: Sequence[int], budget: float
) -> list[int]:
    """Spend what a per-group choice leaves of *budget* (sums, not means): while some group's
    dearer setting on its cost–quality frontier still fits, move the group whose move buys the
    most quality per dollar. The Lagrangian choice alone stops at the last price of cost whose
    total fits, which can leave several points of the budget unspent (a knapsack's greedy fill).
    """
    picks = list(chosen)
    spent = sum(float(cost[s, g]) for g, s in enumerate(picks))
    while True:
        best: tuple[float, int, int] | None = None
        for g, s in enumerate(picks):
            dq = quality[:, g] - quality[s, g]
            dc = cost[:, g] - cost[s, g]
            ok = (dq > 1e-12) & (spent + dc <= budget + 1e-12)
            if not ok.any():
                continue
            rate = np.where(ok, dq / np.maximum(dc, 1e-12), -np.inf)
            j = int(rate.argmax())
            if best is None or rate[j] > best[0]:
                best = (float(rate[j]), g, j)
        if best is None:
            return picks
        _, g, j = best
        spent += float(cost[j, g] - cost[picks[g], g])
        picks[g] = j


def cross_fit(
    table_for: Any,
    n_folds: int,
    choose: Any,
) -> tuple[float, float, float, float]:
    """Mean quality and cost of a scheme on rows it was not chosen on, and the top tier's there.

    *table_for(f)* is the :class:`Table` to choose on when fold *f* is held out (``f = -1``: the
    table of every fold), *choose(table, folds)* a :class:`Choice`.
    """
    sums = np.zeros(4)
    n = 0.0
    for f in range(n_folds):
        table: Table = table_for(f)
        train = np.arange(n_folds) != f
        choice: Choice = choose(table, train)
        held = ~train
        rows = float(table.rows[held].sum())
        sums += rows * np.array([*_means(table, held, choice.per_group), *_tops(table, held)])
        n += rows
    q, c, tq, tc = (float(v) for v in sums / (n or 1.0))
    return q, c, tq, tc


#: Cost budgets (shares of the top tier's cost) a scheme's held-out curve is traced at.
CURVE_BUDGETS = tuple(float(b) for b in np.round(np.linspace(0.1, 1.0, 10), 2))


def held_out_curve(
    table_for: Any, n_folds: int, choose_for: Any, budgets: Sequence[float] = CURVE_BUDGETS
) -> tuple[list[tuple[float, float]], float]:
    """A scheme's cost–quality curve on rows it was not chosen on: for each budget, the
    cross-fitted (cost share of the top tier, quality). *choose_for(objective)* gives the
    scheme's chooser for an objective. Returns the points and the top tier's quality."""
    points = []
    top = 0.0
    for b in budgets:
        q, c, tq, tc = cross_fit(table_for, n_folds, choose_for(Objective(max_cost_share=b)))
        points.append((c / tc if tc > 0 else 0.0, q))
        top = tq
    return points, top


def curve_area(points: Sequence[tuple[float, float]], lo: float = 0.1, hi: float = 1.0) -> float:
    """Mean quality of a held-out curve over cost shares *lo*..*hi* (its upper envelope,
    interpolated; flat beyond its ends) — one number to compare schemes at equal cost."""
    ordered = sorted(points)
    xs, ys = [], []
    best = -np.inf
    for x, y in ordered:
        best = max(best, y)
        xs.append(x)
        ys.append(best)
    grid = np.linspace(lo, hi, 91)
    return float(np.interp(grid, xs, ys).mean())


# -- probability calibration -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Isotonic:
    """A monotone map of raw ``P(correct)`` to calibrated ``P(correct)`` (piecewise linear)."""

    x: tuple[float, ...]
    y: tuple[float, ...]

    @classmethod
    def fit(cls, raw: FloatArray, correct: FloatArray) -> Isotonic:
        from sklearn.isotonic import IsotonicRegression

        model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        model.fit(raw, correct)
        xs = np.asarray(model.X_thresholds_, dtype=float)
        ys = np.asarray(model.y_thresholds_, dtype=float)
        return cls(tuple(float(v) for v in xs), tuple(float(v) for v in ys))

    def __call__(self, raw: FloatArray) -> FloatArray:
        if not self.x:
            return raw
        out: FloatArray = np.interp(raw, self.x, self.y)
        return out

    def as_dict(self) -> dict[str, list[float]]:
        return {"x": list(self.x), "y": list(self.y)}


def isotonic_maps(probs: FloatArray, correct: FloatArray, rows: BoolArray) -> list[Isotonic]:
    """One :class:`Isotonic` per judged tier, fitted on *rows*."""
    return [Isotonic.fit(probs[rows, i], correct[rows, i]) for i in range(probs.shape[1])]


def apply_maps(probs: FloatArray, maps: Sequence[Isotonic]) -> FloatArray:
    out = probs.copy()
    for i, m in enumerate(maps):
        out[:, i] = m(probs[:, i])
    return out


__all__ = [
    "CV_FOLDS",
    "GRID",
    "OTHER",
    "CascadeArrays",
    "Choice",
    "Isotonic",
    "Objective",
    "Setting",
    "Table",
    "best_within",
    "cheapest_meeting",
    "choose_per_group",
    "choose_shared",
    "cross_fit",
    "curve_area",
    "fill_budget",
    "folds_for",
    "held_out_curve",
    "kfold",
    "settings_for",
    "shared_index",
]
