"""A ladder per source for the verifier cascade, chosen inside the training rows.

One ladder rarely suits every source: on RouterBench, Yi-34B is ARC's and Winogrande's best
cheap model, while on MBPP it is nearly the worst and GPT-3.5 the best. Under a cost budget the
sources also compete for the same money (a knapsack: the budget should go where the next dollar
buys the most quality). :func:`fit_source_ladders` tries, besides the run's ladder, a two-tier
ladder ``MODEL → top`` for each source's best cheap model, fits a response verifier for each
ladder by cross-validation inside the training rows, stacks every ladder's settings per source
and lets :func:`~tierwise.evaluation.calibration.choose_per_group` pick one ladder and setting per
source. It is kept only when it beats the run's own verifier on folds it was not chosen on
(:func:`~tierwise.evaluation.verifier_train.merit`), like any richer scheme.

The replay then sends each source's rows through the real cascade on that source's ladder
(:func:`~tierwise.evaluation.folds.run_fold`): a policy has one ladder, so this is what a team
running one policy per kind would see. Every call is priced and recorded as usual.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tierwise.evaluation.calibration import (
    CV_FOLDS,
    Objective,
    Setting,
    Table,
    choose_per_group,
    cross_fit,
    curve_area,
    folds_for,
    held_out_curve,
    kfold,
    settings_for,
)
from tierwise.evaluation.dataset import Dataset, Ladder, Row
from tierwise.evaluation.strategies import STRATEGY, Replayer, StrategyRun, eval_policy
from tierwise.evaluation.verifier import ResponseVerifier
from tierwise.evaluation.verifier_train import (
    KEEP_MARGIN,
    Design,
    SchemeResult,
    _groups,
    _usable,
    merit,
)

#: The strategy name of the verifier cascade with a ladder per source.
VERIFIER_LADDERS = "cascade: learned verifier, ladder per source"
#: A source's cheap model for a two-tier ladder costs at most this share of the top's there.
CHEAP_SHARE = 0.25
#: At most this many two-tier ladders are tried (each costs a cross-validated verifier).
MAX_ALTERNATIVES = 2


@dataclass(frozen=True, slots=True)
class SourceLadders:
    """Per kind, the ladder its rows climb and the verifier that judges them.

    ``ladders[0]`` is the run's ladder (kinds not in ``by_kind`` use it); ``verifiers[i]``
    judges the rows of ladder *i*; ``held_out`` is the scheme's figure on training folds it was
    not chosen on, ``baseline`` the run's verifier's on the same folds.
    """

    ladders: tuple[Ladder, ...]
    verifiers: tuple[ResponseVerifier, ...]
    by_kind: Mapping[str, int]
    held_out: SchemeResult
    baseline: SchemeResult
    #: False when it lost on held-out folds: every kind then stays on the run's ladder.
    kept: bool = True

    def ladder_of(self, kind: str) -> int:
        """The index of the ladder *kind*'s rows climb."""
        return self.by_kind.get(kind, 0)

    def describe(self) -> str:
        """Each kind and its ladder, in one phrase."""
        return "; ".join(
            f"{kind}: {' → '.join(self.ladders[i].models)}"
            for kind, i in sorted(self.by_kind.items())
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "kept": self.kept,
            "by_kind": {k: list(self.ladders[i].models) for k, i in sorted(self.by_kind.items())},
            "held_out": self.held_out.as_dict(),
            "baseline": self.baseline.as_dict(),
        }


def candidate_models(rows: Sequence[Row], ladder: Ladder) -> list[str]:
    """Per source, its best cheap model on *rows* (the highest mean score among models with an
    answer on every row that cost at most :data:`CHEAP_SHARE` of the top's there); the ones not
    already the run's bottom tier, most sources first, at most :data:`MAX_ALTERNATIVES`."""
    top = ladder.models[-1]
    by_source: dict[str, list[Row]] = {}
    for r in rows:
        by_source.setdefault(r.source or r.kind, []).append(r)
    votes: dict[str, int] = {}
    for group in by_source.values():
        top_cost = sum(float(r.results[top].cost_usd or 0) for r in group)
        best: tuple[float, str] | None = None
        for m in sorted({m for r in group for m in r.results}):
            if m == top or not all(
                m in r.results
                and r.results[m].cost_usd is not None
                and r.results[m].response is not None
                for r in group
            ):
                continue
            cost = sum(float(r.results[m].cost_usd or 0) for r in group)
            if top_cost <= 0 or cost > CHEAP_SHARE * top_cost:
                continue
            quality = float(np.mean([r.results[m].score for r in group]))
            if best is None or quality > best[0]:
                best = (quality, m)
        if best is not None and best[1] != ladder.models[0]:
            votes[best[1]] = votes.get(best[1], 0) + 1
    return sorted(votes, key=lambda m: (-votes[m], m))[:MAX_ALTERNATIVES]


def two_tier(model: str, ladder: Ladder) -> Ladder:
    """``model → top`` with a tier name of the model's own (policy tier names are plain)."""
    tail = model.rsplit("/", 1)[-1]
    name = "alt-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in tail)
    return Ladder((name, ladder.tiers[-1]), (model, ladder.models[-1]))


def fit_source_ladders(
    rows: Sequence[Row],
    ladder: Ladder,
    formats: Mapping[str, str],
    verifier: ResponseVerifier,
    *,
    threshold: float,
    objective: Objective,
    seed: int = 0,
    c: float = 0.5,
) -> SourceLadders | None:
    """A ladder and verifier setting per source, kept when that beats *verifier* (the run's
    own, already calibrated on the same rows) on held-out folds; ``None`` when there is no
    cheap model to try."""
    alternatives = [two_tier(m, ladder) for m in candidate_models(rows, ladder)]
    cal = verifier.calibration
    if not alternatives or cal is None or not cal.schemes:
        return None
    ladders = [ladder, *alternatives]
    usable = [_usable(lad) for lad in ladders]
    good = [r for r in rows if all(u(r) for u in usable)]
    if len(good) != sum(1 for r in rows if usable[0](r)):
        return None  # the alternatives lack answers the run's verifier was calibrated with
    k = folds_for(len(good), cal.folds or CV_FOLDS)
    fold = kfold(good, k, seed)
    by_kind, names, group = _groups(good)
    kinds = sorted({r.kind for r in good})
    fmts = {kind: formats.get(kind, "text") for kind in kinds}
    tables: list[Table] = []
    finals: list[ResponseVerifier] = []
    for lad in ladders:
        design = Design(good, lad, fmts, threshold)
        final, _ = design.fit(np.arange(len(good)), c, seed)
        oof = np.zeros((len(good), len(lad) - 1))
        for f in range(k):
            fitted, held = np.nonzero(fold != f)[0], np.nonzero(fold == f)[0]
            model, columns = design.fit(fitted, c, seed)
            oof[held] = design.probabilities(model, columns, held)
        settings = settings_for(len(lad), range(len(lad) - 1))
        [table] = Table.build(final.arrays(good, oof), settings, fold, [(group, len(names))], k)
        tables.append(table)
        finals.append(final)
    stacked = Table.stack(tables)  # every source may take any setting of any ladder

    def chooser(goal: Objective) -> Any:
        return lambda t, on: choose_per_group(t, on, goal)

    points, _ = held_out_curve(lambda f: stacked, k, chooser)
    q, cost, tq, tc = cross_fit(lambda f: stacked, k, chooser(objective))
    held_out = SchemeResult("ladder per source", curve_area(points), q, cost, tq, tc)
    baseline = next(s for s in cal.schemes if s.name == cal.scheme)
    lost = SourceLadders((ladder,), (verifier,), {}, held_out, baseline, kept=False)
    if merit(held_out, objective) <= merit(baseline, objective) + KEEP_MARGIN:
        return lost
    choice = chooser(objective)(stacked, np.ones(k, dtype=bool))
    bounds = np.cumsum([0] + [len(t.settings) for t in tables])
    picked: dict[str, tuple[int, Setting]] = {}
    for g, s in enumerate(choice.per_group):
        i = int(np.searchsorted(bounds, s, side="right") - 1)
        picked[names[g]] = (i, tables[i].settings[s - int(bounds[i])])
    used = sorted({i for i, _ in picked.values()} | {0})
    if used == [0]:
        return lost
    for i in used:
        mine = {g: st for g, (j, st) in picked.items() if j == i}
        finals[i].groups = {kind: g for kind, g in by_kind.items() if g in mine}
        finals[i].settings = mine
        if i == 0:
            finals[i].thresholds = verifier.thresholds
    index = {i: n for n, i in enumerate(used)}
    return SourceLadders(
        tuple(ladders[i] for i in used),
        tuple(finals[i] for i in used),
        {kind: index[picked[g][0]] for kind, g in by_kind.items() if g in picked},
        held_out,
        baseline,
    )


def replay_source_ladders(
    found: SourceLadders, dataset: Dataset, replayer: Replayer, rows: Sequence[Row]
) -> StrategyRun:
    """Each row through the real cascade on its kind's ladder, judged by that ladder's
    verifier (one replay per ladder, into *replayer*'s ledger); traces in *rows*' order."""
    traces: dict[str, Any] = {}
    for i, (lad, verifier) in enumerate(zip(found.ladders, found.verifiers, strict=True)):
        mine = [r for r in rows if found.ladder_of(r.kind) == i]
        if not mine:
            continue
        own = Replayer(
            dataset,
            lad,
            ledger=replayer.ledger,
            run_id=replayer.run_id,
            on_row=replayer.on_row,
        )
        run = own.run(
            VERIFIER_LADDERS,
            eval_policy(dataset, lad),
            mine,
            scorer=verifier,
            validators=(verifier.validator(),),
        )
        traces.update({t.prompt_id: t for t in run.traces})
    note = f"per source, the ladder and thresholds chosen on training folds: {found.describe()}"
    return StrategyRun(
        VERIFIER_LADDERS, STRATEGY, tuple(traces[r.prompt_id] for r in rows), note=note
    )


__all__ = [
    "CHEAP_SHARE",
    "MAX_ALTERNATIVES",
    "VERIFIER_LADDERS",
    "SourceLadders",
    "candidate_models",
    "fit_source_ladders",
    "replay_source_ladders",
    "two_tier",
]
