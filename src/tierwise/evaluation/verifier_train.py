"""Training the response verifier, with calibration by cross-validation inside the training rows.

:func:`train_verifier` cuts the usable training rows into *k* folds and scores each fold with a
verifier fitted on the others, so every training row gets an out-of-fold ``P(correct)`` per
tier. Thresholds are chosen on those probabilities for the run's
:class:`~tierwise.evaluation.calibration.Objective`; the verifier deployed is fitted on all the
rows. Four schemes compete, simplest first, and a richer one is kept only when it wins on rows it
was not chosen on (:func:`~tierwise.evaluation.calibration.cross_fit`):

* ``shared``: one threshold per tier; kinds start where the rule says (agreement kinds one tier
  below the top, others at the bottom);
* ``per source``: a start tier and thresholds per source (benchmark) with enough rows;
* ``shared, isotonic`` and ``per source, isotonic``: the same on probabilities passed through an
  isotonic map per tier (fitted on out-of-fold probabilities).

Schemes are judged by :func:`merit`: under a cost budget, held-out quality at that budget; else
the mean quality of the held-out cost–quality curve. Per source, a budget is spent as a
knapsack (:func:`~tierwise.evaluation.calibration.choose_per_group`): each source's setting at
an equal price of cost, then what is left filled where it buys the most.

With explicit *calibration* rows the old way is kept: fit on the rows, shared thresholds chosen
on the calibration rows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tierwise.evaluation.calibration import (
    OTHER,
    CascadeArrays,
    Choice,
    Isotonic,
    Objective,
    Setting,
    Table,
    apply_maps,
    choose_per_group,
    choose_shared,
    cross_fit,
    curve_area,
    folds_for,
    held_out_curve,
    isotonic_maps,
    kfold,
    settings_for,
)
from tierwise.evaluation.dataset import DatasetError, Ladder, Row
from tierwise.evaluation.learned import (
    FloatArray,
    IntArray,
    TextCounts,
    _fit_logistic,
    router_text,
)
from tierwise.evaluation.verifier import ResponseVerifier
from tierwise.evaluation.verifier_features import AGREEMENT, DENSE, FeatureCache, tier_features

#: A richer scheme is kept only when its :func:`merit` beats the simplest scheme's by more
#: than this.
KEEP_MARGIN = 0.002


@dataclass(frozen=True, slots=True)
class SchemeResult:
    """A calibration scheme judged on rows it was not chosen on.

    ``area``: mean quality of its held-out cost–quality curve over 10–100% of the top tier's
    cost (:func:`~tierwise.evaluation.calibration.curve_area`); ``quality``/``cost``: its
    held-out figures under the run's objective, with the top tier's on the same rows.
    """

    name: str
    area: float
    quality: float
    cost: float
    top_quality: float
    top_cost: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "area": self.area,
            "quality": self.quality,
            "cost": self.cost,
            "top_quality": self.top_quality,
            "top_cost": self.top_cost,
        }


@dataclass(frozen=True, slots=True)
class VerifierCalibration:
    """How the thresholds were chosen.

    ``quality``/``cost`` are the chosen settings' figures on the rows they were chosen on
    (out-of-fold probabilities of the training rows, or the calibration rows given);
    ``held_out_quality``/``held_out_cost`` the scheme's figures on folds it was not chosen on —
    the estimate of what new rows will see. ``target_quality`` is what the objective asked for
    (quality mode) on the calibration rows.
    """

    rows: int
    thresholds: tuple[float, ...]
    quality: float
    cost: float
    target_quality: float
    top_cost: float
    top_quality: float = 0.0
    folds: int = 0
    scheme: str = "shared"
    objective: dict[str, float | None] = field(default_factory=dict)
    held_out_quality: float | None = None
    held_out_cost: float | None = None
    schemes: tuple[SchemeResult, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "folds": self.folds,
            "objective": self.objective,
            "scheme": self.scheme,
            "thresholds": list(self.thresholds),
            "quality": self.quality,
            "cost": self.cost,
            "target_quality": self.target_quality,
            "top_quality": self.top_quality,
            "top_cost": self.top_cost,
            "held_out_quality": self.held_out_quality,
            "held_out_cost": self.held_out_cost,
            "schemes": [s.as_dict() for s in self.schemes],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VerifierCalibration:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["thresholds"] = tuple(known.get("thresholds", ()))
        known["schemes"] = tuple(SchemeResult(**s) for s in known.get("schemes", ()))
        return cls(**known)


#: How far over its budget a scheme's held-out cost may land and still count as within it
#: (share of the top tier's cost): held-out folds never land exactly on the budget.
BUDGET_SLACK = 0.01


def merit(result: SchemeResult, objective: Objective) -> float:
    """What a scheme is judged by, on rows it was not chosen on.

    With a cost budget, its held-out quality at that budget — a scheme that spends the budget
    where it buys the most (thresholds per source, a knapsack across sources) should win
    there, not on average over every budget; one whose held-out cost overshoots the budget by
    more than :data:`BUDGET_SLACK` loses to any that does not. Without one, the mean quality of
    its held-out cost–quality curve (:attr:`SchemeResult.area`).
    """
    share = objective.max_cost_share
    if share is None:
        return result.area
    over = result.top_cost > 0 and result.cost > (share + BUDGET_SLACK) * result.top_cost
    return result.quality - (1.0 if over else 0.0)


def _usable(ladder: Ladder) -> Callable[[Row], bool]:
    below = ladder.models[:-1]

    def usable(r: Row) -> bool:
        return (
            bool(r.prompt)
            and all(m in r.results and r.results[m].response is not None for m in below)
            and ladder.models[-1] in r.results
        )

    return usable


class Design:
    """The training rows' inputs, computed once for every fold: the prompts' and the answers'
    token counts (every judged tier's answers stacked, tier by tier), the dense features per
    tier, and whether each tier's recorded answer was right."""

    def __init__(
        self,
        rows: Sequence[Row],
        ladder: Ladder,
        formats: Mapping[str, str],
        threshold: float,
    ) -> None:
        cache = FeatureCache()
        self.ladder = ladder
        self.formats = dict(formats)
        self.n = len(rows)
        judged = len(ladder) - 1
        self.prompts = TextCounts.of([router_text(r.kind, r.prompt) for r in rows])
        texts: list[str] = []
        self.dense: list[FloatArray] = []
        for i in range(judged):
            asks = [i > 0 and formats.get(r.kind, "text") in AGREEMENT for r in rows]
            _, _, found, dense = tier_features(rows, ladder.models, formats, i, asks, cache)
            texts.extend(found)
            self.dense.append(np.asarray(dense, dtype=float).reshape(self.n, len(DENSE)))
        self.answers = TextCounts.of(texts)
        self.labels = np.array(
            [[r.results[m].score >= threshold for m in ladder.models[:-1]] for r in rows],
            dtype=int,
        ).reshape(self.n, judged)

    def _x(self, i: int, prompts: Any, answers: Any, rows: IntArray) -> Any:
        import scipy.sparse as sp  # type: ignore[import-untyped]

        return sp.hstack([prompts, answers, sp.csr_matrix(self.dense[i][rows])]).tocsr()

    def fit(self, rows: IntArray, c: float, seed: int) -> tuple[ResponseVerifier, Any]:
        """A verifier fitted on *rows* (thresholds 0.5, uncalibrated), and what
        :meth:`probabilities` needs to score other rows with it."""
        judged = len(self.ladder) - 1
        stacked = np.concatenate([rows + i * self.n for i in range(judged)])
        prompt_features, p_cols, prompts = self.prompts.fit(rows)
        answer_features, a_cols, answers = self.answers.fit(stacked)
        width = len(prompt_features.vocabulary) + len(answer_features.vocabulary) + len(DENSE)
        coef = np.zeros((judged, width))
        intercept = np.zeros(judged)
        m = len(rows)
        for i in range(judged):
            x = self._x(i, prompts, answers[i * m : (i + 1) * m], rows)
            coef[i], intercept[i] = _fit_logistic(x, self.labels[rows, i], c, seed)
        verifier = ResponseVerifier(
            self.ladder.tiers,
            self.ladder.models,
            self.formats,
            prompt_features,
            answer_features,
            coef,
            intercept,
            [0.5] * judged,
        )
        return verifier, (p_cols, a_cols)

    def probabilities(self, verifier: ResponseVerifier, columns: Any, rows: IntArray) -> FloatArray:
        """Raw ``P(correct)`` per row of *rows* and judged tier, by a verifier from :meth:`fit`."""
        p_cols, a_cols = columns
        prompts = self.prompts.matrix(p_cols, verifier.prompt_features.idf, rows)
        out = np.zeros((len(rows), len(self.ladder) - 1))
        for i in range(out.shape[1]):
            answers = self.answers.matrix(a_cols, verifier.response_features.idf, rows + i * self.n)
            z = np.asarray(self._x(i, prompts, answers, rows) @ verifier.coef[i]).ravel()
            out[:, i] = 1.0 / (1.0 + np.exp(-(z + verifier.intercept[i])))
        return out


def train_verifier(
    rows: Sequence[Row],
    ladder: Ladder,
    formats: Mapping[str, str],
    *,
    threshold: float,
    objective: Objective,
    calibration: Sequence[Row] | None = None,
    folds: int = 5,
    seed: int = 0,
    c: float = 0.5,
) -> ResponseVerifier:
    """Fit a verifier on *rows* and calibrate it (see the module docstring).

    Raises:
        DatasetError: fewer than 20 rows with prompt text and every non-top tier's answer.
    """
    usable = _usable(ladder)
    good = [r for r in rows if usable(r)]
    if len(good) < 20:
        raise DatasetError(
            "a response verifier needs prompt text and the answers of every tier below the "
            f"top; {len(good)} usable training rows"
        )
    kinds = sorted({r.kind for r in good})
    fmts = {k: formats.get(k, "text") for k in kinds}
    design = Design(good, ladder, fmts, threshold)
    every = np.arange(len(good))
    final, _ = design.fit(every, c, seed)
    if calibration is not None:
        return _on_given_rows(final, [r for r in calibration if usable(r)], objective)
    k = folds_for(len(good), folds)
    fold = kfold(good, k, seed)
    oof = np.zeros((len(good), len(ladder) - 1))
    for f in range(k):
        fitted, held = np.nonzero(fold != f)[0], np.nonzero(fold == f)[0]
        model, columns = design.fit(fitted, c, seed)
        oof[held] = design.probabilities(model, columns, held)
    arrays = final.arrays(good, oof)
    correct = design.labels.astype(float)
    return _calibrate(final, good, arrays, correct, fold, k, objective)


def _on_given_rows(
    verifier: ResponseVerifier, cal: Sequence[Row], objective: Objective
) -> ResponseVerifier:
    """Shared thresholds chosen on explicit calibration rows."""
    if not cal:
        return verifier
    arrays = verifier.arrays(cal, verifier.raw_probabilities_for(cal))
    starts = np.array([verifier.rule_start(r.kind) for r in cal], dtype=np.int64)
    n_tiers = len(verifier.tiers)
    settings = settings_for(n_tiers, range(n_tiers - 1))
    [table] = Table.build(arrays, settings, np.zeros_like(starts), [(starts, n_tiers - 1)], 1)
    choice = choose_shared(table, np.ones(1, dtype=bool), list(range(n_tiers - 1)), objective)
    thresholds = _shared_thresholds(table, choice)
    top_q, top_c = float(arrays.scores[:, -1].mean()), float(arrays.costs[:, -1].mean())
    verifier.thresholds = thresholds
    verifier.calibration = VerifierCalibration(
        rows=len(cal),
        thresholds=thresholds,
        quality=choice.quality,
        cost=choice.cost,
        target_quality=objective.target(top_q),
        top_cost=top_c,
        top_quality=top_q,
        objective=objective.as_dict(),
    )
    return verifier


def _shared_thresholds(table: Table, choice: Choice) -> tuple[float, ...]:
    """The full threshold vector behind a shared choice: the setting of start class 0."""
    return table.settings[choice.per_group[0]][1]


def _groups(rows: Sequence[Row]) -> tuple[dict[str, str], list[str], IntArray]:
    """kind → source group (sources with too few rows share :data:`OTHER`), the group names,
    and each row's group index."""
    from tierwise.evaluation.calibration import MIN_GROUP_ROWS

    source = {r.kind: r.source or r.kind for r in rows}
    count: dict[str, int] = {}
    for r in rows:
        count[source[r.kind]] = count.get(source[r.kind], 0) + 1
    by_kind = {k: s if count[s] >= MIN_GROUP_ROWS else OTHER for k, s in source.items()}
    names = sorted(set(by_kind.values()))
    index = np.array([names.index(by_kind[r.kind]) for r in rows], dtype=np.int64)
    return by_kind, names, index


def _calibrate(
    verifier: ResponseVerifier,
    rows: Sequence[Row],
    arrays: CascadeArrays,
    correct: FloatArray,
    fold: IntArray,
    k: int,
    objective: Objective,
) -> ResponseVerifier:
    """Choose the scheme and its settings on out-of-fold probabilities; see the module doc."""
    n_tiers = len(verifier.tiers)
    starts = np.array([verifier.rule_start(r.kind) for r in rows], dtype=np.int64)
    by_kind, names, group = _groups(rows)
    all_settings = settings_for(n_tiers, range(n_tiers - 1))
    everything = np.ones(k, dtype=bool)
    start_classes = list(range(n_tiers - 1))

    def tables(probs: FloatArray) -> tuple[Table, Table]:
        shared, per_source = Table.build(
            arrays.with_probs(probs),
            all_settings,
            fold,
            [(starts, n_tiers - 1), (group, len(names))],
            k,
        )
        return shared, per_source

    def shared_for(goal: Objective) -> Callable[[Table, Any], Choice]:
        return lambda t, on: choose_shared(t, on, start_classes, goal)

    def per_group_for(goal: Objective) -> Callable[[Table, Any], Choice]:
        return lambda t, on: choose_per_group(t, on, goal)

    raw_tables = tables(arrays.probs)
    iso_cache: dict[int, tuple[Table, Table]] = {}

    def iso_tables(f: int) -> tuple[Table, Table]:
        if f not in iso_cache:
            fitted_on = fold != f if f >= 0 else np.ones(len(rows), dtype=bool)
            maps = isotonic_maps(arrays.probs, correct, fitted_on)
            iso_cache[f] = tables(apply_maps(arrays.probs, maps))
        return iso_cache[f]

    richer = len(names) > 1 or n_tiers > 2
    candidates: list[tuple[str, Callable[[int], Table], Any]] = [
        ("shared", lambda f: raw_tables[0], shared_for),
        *([("per source", lambda f: raw_tables[1], per_group_for)] if richer else []),
        ("shared, isotonic", lambda f: iso_tables(f)[0], shared_for),
        *([("per source, isotonic", lambda f: iso_tables(f)[1], per_group_for)] if richer else []),
    ]
    results = []
    for name, table_for, chooser in candidates:
        points, _ = held_out_curve(table_for, k, chooser)
        q, cost, tq, tc = cross_fit(table_for, k, chooser(objective))
        results.append(SchemeResult(name, curve_area(points), q, cost, tq, tc))
    # The simplest scheme stays unless a richer one is clearly better where it will be used.
    kept = results[0]
    for r in results[1:]:
        if merit(r, objective) > max(
            merit(kept, objective), merit(results[0], objective) + KEEP_MARGIN
        ):
            kept = r
    _, table_for, chooser = next(c for c in candidates if c[0] == kept.name)
    final_table = table_for(-1)
    choice = chooser(objective)(final_table, everything)
    shared_table = iso_tables(-1)[0] if "isotonic" in kept.name else raw_tables[0]
    thresholds = _shared_thresholds(shared_table, shared_for(objective)(shared_table, everything))
    settings: dict[str, Setting] = {}
    groups: dict[str, str] = {}
    if kept.name.startswith("per source"):
        settings = {
            g: table_for(-1).settings[p] for g, p in zip(names, choice.per_group, strict=True)
        }
        groups = by_kind
    calibrators: list[Isotonic] | None = None
    if "isotonic" in kept.name:
        calibrators = isotonic_maps(arrays.probs, correct, np.ones(len(rows), dtype=bool))
    verifier.thresholds = thresholds
    verifier.groups = groups
    verifier.settings = settings
    verifier.calibrators = tuple(calibrators) if calibrators is not None else None
    row_top_q = float(arrays.scores[:, -1].mean())
    verifier.calibration = VerifierCalibration(
        rows=len(rows),
        thresholds=thresholds,
        quality=choice.quality,
        cost=choice.cost,
        target_quality=objective.target(row_top_q),
        top_cost=float(arrays.costs[:, -1].mean()),
        top_quality=row_top_q,
        folds=k,
        scheme=kept.name,
        objective=objective.as_dict(),
        held_out_quality=kept.quality,
        held_out_cost=kept.cost,
        schemes=tuple(results),
    )
    return verifier


__all__ = [
    "BUDGET_SLACK",
    "KEEP_MARGIN",
    "Design",
    "SchemeResult",
    "VerifierCalibration",
    "merit",
    "train_verifier",
]
