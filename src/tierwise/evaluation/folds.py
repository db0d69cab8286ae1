"""One fold of an evaluation: train on its training rows, replay every strategy on its own rows.

:func:`split` decides the folds: a separate training folder or the folder's own train split gives
one fold (train there, report on the rest); otherwise the folder's rows are cut into *k* folds
(seeded, stratified by kind) and each is reported by models trained on the other *k − 1* — every
row reported once, never by a model that saw it, and the spread across folds says how much a
figure moves with the rows drawn. ``k = 1`` is the single seeded 80/20 dev split.

:func:`run_fold` trains the learned router and the response verifier (calibrated by
cross-validation inside the fold's training rows), fits per-kind tiers, and replays the policy,
the cascades, the verifier cascade and the router through the real cascade.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from tierwise.evaluation.dataset import Dataset, DatasetError, Ladder, Row
from tierwise.evaluation.metrics import FloatArray
from tierwise.evaluation.routing import VERIFIER_CASCADE
from tierwise.evaluation.strategies import (
    AGREEMENT_MODES,
    Replayer,
    StrategyRun,
    eval_policy,
    fit_kind_tiers,
    policy_on_ladder,
)

if TYPE_CHECKING:
    from tierwise.cascade import Scorer
    from tierwise.cascade.validators import Validator
    from tierwise.evaluation.calibration import Objective
    from tierwise.evaluation.ladders import SourceLadders
    from tierwise.evaluation.learned import LearnedRouter
    from tierwise.evaluation.verifier import ResponseVerifier
    from tierwise.policy import Policy

#: Share of a folder held out as dev rows by the single split (``folds = 1``).
DEV_FRACTION = 0.2
#: Folds when the folder itself is split (each row reported once).
DEFAULT_FOLDS = 5


class Progress(Protocol):
    """What an evaluation reports while it works (the CLI draws a bar or prints lines)."""

    def start(self, label: str, total: int) -> None: ...

    def advance(self) -> None: ...


@dataclass(frozen=True, slots=True)
class FoldSpec:
    """Rows to train on and rows to report on (never overlapping)."""

    index: int
    count: int
    train: tuple[Row, ...]
    report: tuple[Row, ...]

    @property
    def label(self) -> str:
        return f"fold {self.index + 1}/{self.count}: " if self.count > 1 else ""


def split(
    base: Dataset, folds: int, seed: int, limit: int | None, ladder: Ladder
) -> tuple[list[FoldSpec], str]:
    """Cut *base* into folds (see the module docstring); with *limit*, report on that many rows
    in total and train each fold on at most four times as many. Returns the folds and a
    sentence saying what was reported on."""
    if folds <= 1:
        train_part, dev = base.partition(
            [1 - DEV_FRACTION, DEV_FRACTION], seed=seed, names=["train", "dev"]
        )
        parts = [(list(train_part.rows), list(dev.rows))]
        what = (
            f"a seeded dev split ({DEV_FRACTION:.0%} of the folder, seed {seed}, stratified by "
            f"kind: {len(dev)} rows); trained on the other {len(train_part)}"
        )
    else:
        pieces = base.partition([1.0 / folds] * folds, seed=seed)
        parts = [
            ([r for j, p in enumerate(pieces) if j != i for r in p.rows], list(piece.rows))
            for i, piece in enumerate(pieces)
        ]
        what = (
            f"{folds} folds of the folder (seed {seed}, stratified by kind): each of its "
            f"{len(base)} rows reported once, by models trained on the other {folds - 1} folds "
            f"(~{len(base) - len(base) // folds} rows)"
        )
    specs = []
    for i, (train, report) in enumerate(parts):
        train = [r for r in train if all(m in r.results for m in ladder.models)]
        if limit is not None:
            share = limit // len(parts) + (1 if i < limit % len(parts) else 0)
            report = list(base.with_rows(report).sample(share, seed + i).rows)
            if len(train) > 4 * limit:
                picked = sorted(
                    np.random.default_rng(seed + i).choice(len(train), 4 * limit, replace=False)
                )
                train = [train[int(j)] for j in picked]
        specs.append(FoldSpec(i, len(parts), tuple(train), tuple(report)))
    if limit is not None:
        what += f"; limited to {sum(len(s.report) for s in specs)} rows"
    return specs, what


@dataclass(slots=True)
class FoldResult:
    """What one fold trained and replayed."""

    spec: FoldSpec
    runs: list[StrategyRun] = field(default_factory=list)
    router: LearnedRouter | None = None
    verifier: ResponseVerifier | None = None
    notes: list[str] = field(default_factory=list)
    ladders: SourceLadders | None = None


def train_models(
    spec: FoldSpec,
    dataset: Dataset,
    ladder: Ladder,
    objective: Objective,
    seed: int,
    progress: Progress | None,
) -> tuple[LearnedRouter | None, ResponseVerifier | None, list[str]]:
    """The learned router and the response verifier for *spec*'s training rows (``None`` where
    the data cannot train one, with a note saying why)."""
    notes: list[str] = []
    router: LearnedRouter | None = None
    verifier: ResponseVerifier | None = None
    rows = list(spec.train)
    if not rows or not dataset.has_text:
        return None, None, notes
    from tierwise.evaluation.learned import LearnedRouter

    step(progress, f"{spec.label}training the learned router")
    try:
        router = LearnedRouter.train(
            rows, ladder, threshold=dataset.pass_threshold, seed=seed, objective=objective
        )
    except DatasetError as exc:
        notes.append(f"no learned router: {exc}")
    done(progress)
    below = ladder.models[:-1]
    if any(all(r.results[m].response is not None for m in below) for r in rows):
        from tierwise.evaluation.verifier import ResponseVerifier

        step(progress, f"{spec.label}training the response verifier")
        kinds = {r.kind for r in dataset.rows}
        try:
            verifier = ResponseVerifier.train(
                rows,
                ladder,
                {k: dataset.format_of(k) for k in kinds},
                threshold=dataset.pass_threshold,
                seed=seed,
                objective=objective,
            )
        except DatasetError as exc:
            notes.append(f"no response verifier: {exc}")
        done(progress)
    return router, verifier, notes


def train_ladders(
    spec: FoldSpec,
    dataset: Dataset,
    ladder: Ladder,
    verifier: ResponseVerifier | None,
    objective: Objective,
    seed: int,
    progress: Progress | None,
) -> SourceLadders | None:
    """A ladder per source for *spec*'s training rows when it beats *verifier* on held-out
    training folds (:func:`~tierwise.evaluation.ladders.fit_source_ladders`); else ``None``."""
    if verifier is None or len({r.source or r.kind for r in spec.train}) < 2:
        return None
    from tierwise.evaluation.ladders import fit_source_ladders

    step(progress, f"{spec.label}trying a ladder per source")
    kinds = {r.kind for r in dataset.rows}
    found = fit_source_ladders(
        list(spec.train),
        ladder,
        {k: dataset.format_of(k) for k in kinds},
        verifier,
        threshold=dataset.pass_threshold,
        objective=objective,
        seed=seed,
    )
    done(progress)
    return found


def step(progress: Progress | None, label: str, total: int = 1) -> None:
    if progress is not None:
        progress.start(label, total)


def done(progress: Progress | None) -> None:
    if progress is not None:
        progress.advance()


def run_fold(
    spec: FoldSpec,
    dataset: Dataset,
    ladder: Ladder,
    replayer: Replayer,
    *,
    policy: Policy | None,
    router: LearnedRouter | None,
    verifier: ResponseVerifier | None,
    progress: Progress | None,
    ladders: SourceLadders | None = None,
) -> FoldResult:
    """Replay every cascade strategy on *spec*'s report rows with this fold's models (and the
    verifier cascade on a ladder per source when *ladders* won on training folds)."""
    kinds = {r.kind for r in dataset.rows}
    result = FoldResult(spec, router=router, verifier=verifier, ladders=ladders)
    has_responses = dataset.has_responses(ladder.models)
    for plan in plans(dataset, ladder, policy, spec.train, router, has_responses, kinds, verifier):
        step(progress, f"{spec.label}{plan.name}", len(spec.report))
        result.runs.append(
            replayer.run(
                plan.name,
                plan.policy,
                spec.report,
                scorer=plan.scorer,
                start_tier=plan.start_tier,
                agreement=plan.agreement,
                validators=plan.validators,
                note=plan.note,
            )
        )
    if ladders is not None:
        from tierwise.evaluation.ladders import VERIFIER_LADDERS, replay_source_ladders

        plain = next((r for r in result.runs if r.name == VERIFIER_CASCADE), None)
        if ladders.kept or plain is None:
            step(progress, f"{spec.label}{VERIFIER_LADDERS}", len(spec.report))
            result.runs.append(replay_source_ladders(ladders, dataset, replayer, spec.report))
        else:
            # Lost on training folds: every kind stays on the run's ladder, which is exactly
            # the verifier cascade just replayed.
            note = "no ladder per source in this fold (it lost on training folds): the run's"
            result.runs.append(replace(plain, name=VERIFIER_LADDERS, note=note + " ladder"))
    return result


def scores_for(result: FoldResult, ladder: Ladder) -> tuple[FloatArray | None, FloatArray | None]:
    """Per report row: the learned router's strong score and ``1 − P(weak answer correct)``
    from the verifier (NaN where the weak answer is missing); two-tier ladders only."""
    rows = list(result.spec.report)
    learned = None
    if result.router is not None:
        learned = result.router.strong_score(result.router.probabilities_for(rows))
    verified = None
    if result.verifier is not None:
        weak = ladder.models[0]
        answered = [i for i, r in enumerate(rows) if r.results[weak].response is not None]
        verified = np.full(len(rows), np.nan)
        if answered:
            probs = result.verifier.probabilities_for([rows[i] for i in answered])
            verified[answered] = 1.0 - probs[:, 0]
    return learned, verified


@dataclass(frozen=True, slots=True)
class Plan:
    """One replayed strategy: its policy, scorer, start tier and extra validators."""

    name: str
    policy: Policy
    scorer: Scorer | None = None
    start_tier: str | None = None
    agreement: bool = False
    validators: tuple[Validator, ...] = ()
    note: str = ""


def plans(
    dataset: Dataset,
    ladder: Ladder,
    policy: Policy | None,
    train_rows: Sequence[Row],
    router: LearnedRouter | None,
    has_responses: bool,
    kinds: set[str],
    verifier: ResponseVerifier | None = None,
) -> list[Plan]:
    """The cascade strategies this data allows."""
    out: list[Plan] = []
    if policy is not None:
        try:
            replayed = policy_on_ladder(policy, ladder)
        except ValueError as exc:
            raise DatasetError(str(exc)) from None
        where = str(policy.source) if policy.source else "the default policy"
        out.append(Plan(f"policy ({Path(where).name})", replayed, note=f"{where}, replayed"))
    elif train_rows and len(kinds) > 1:
        fitted = fit_kind_tiers(train_rows, ladder)
        out.append(
            Plan(
                "policy by kind (fitted)",
                eval_policy(dataset, ladder, kind_tiers=fitted),
                note="per kind, the cheapest tier within 1 point of the best on training rows",
            )
        )
    agree = len(ladder) >= 3 and any(dataset.format_of(k) in AGREEMENT_MODES for k in kinds)
    if has_responses:
        out.append(
            Plan(
                "cascade: checks",
                eval_policy(dataset, ladder, checks=True),
                start_tier=ladder.bottom,
                note="bottom up; answer-format / code / arithmetic checks",
            )
        )
        if agree:
            start = ladder.tiers[-2]
            out.append(
                Plan(
                    "cascade: checks + agreement",
                    eval_policy(dataset, ladder, checks=True, agreement=True),
                    start_tier=start,
                    agreement=True,
                    note=f"starts at {start}; cheaper tiers must agree",
                )
            )
    if verifier is not None and has_responses:
        out.append(
            Plan(
                VERIFIER_CASCADE,
                eval_policy(dataset, ladder),
                scorer=verifier,
                validators=(verifier.validator(),),
                note=(
                    "P(correct) from prompt + answer (+ agreement of the cheaper tiers for "
                    f"choice/number); {describe_verifier(verifier)}"
                ),
            )
        )
    if router is not None:
        out.append(
            Plan(
                "learned router",
                eval_policy(dataset, ladder),
                scorer=router,
                note="starts at the router's tier; no validators",
            )
        )
        if has_responses:
            out.append(
                Plan(
                    "learned router + cascade",
                    eval_policy(dataset, ladder, checks=True, agreement=agree),
                    scorer=router,
                    agreement=agree,
                    note="starts at the router's tier; checks" + (" + agreement" if agree else ""),
                )
            )
    return out


def describe_verifier(verifier: ResponseVerifier) -> str:
    """Its thresholds (and per-source settings), in one phrase."""
    ts = "/".join(f"{t:.3f}" for t in verifier.thresholds)
    scheme = verifier.calibration.scheme if verifier.calibration else "shared"
    text = f"escalates below thresholds {ts} ({scheme})"
    if verifier.settings:
        text += "; per source: " + ", ".join(
            f"{g} from {verifier.tiers[start]} at {'/'.join(f'{t:.3f}' for t in cut[start:])}"
            for g, (start, cut) in sorted(verifier.settings.items())
        )
    return text


def dev_point(run: StrategyRun, rows: Sequence[Row], ladder: Ladder) -> dict[str, Any]:
    """A run's mean quality and cost on *rows*, with the top tier's on the same rows."""
    top = ladder.models[-1]
    costs = [t.cost for t in run.traces]
    top_costs = [r.results[top].cost_usd for r in rows]
    return {
        "rows": len(rows),
        "quality": float(np.mean([t.score for t in run.traces])) if rows else None,
        "cost": float(np.mean([c for c in costs if c is not None]))
        if rows and all(c is not None for c in costs)
        else None,
        "top_quality": float(np.mean([r.results[top].score for r in rows])) if rows else None,
        "top_cost": float(np.mean([float(c) for c in top_costs if c is not None]))
        if rows and all(c is not None for c in top_costs)
        else None,
    }


def fold_info(result: FoldResult, ladder: Ladder) -> dict[str, Any]:
    """What one fold trained, what its calibration aimed at, and where its dev point landed."""
    rows = list(result.spec.report)
    by_name = {r.name: r for r in result.runs}
    info: dict[str, Any] = {
        "fold": result.spec.index + 1,
        "train_rows": len(result.spec.train),
        "report_rows": len(rows),
    }
    if result.router is not None:
        run = by_name.get("learned router")
        info["router"] = {
            "margin": result.router.margin,
            "features": len(result.router.features.vocabulary),
            "calibration": result.router.calibration.as_dict()
            if result.router.calibration
            else None,
            "dev": dev_point(run, rows, ladder) if run is not None else None,
        }
    if result.verifier is not None:
        v = result.verifier
        run = by_name.get(VERIFIER_CASCADE)
        info["verifier"] = {
            "tiers": list(v.tiers),
            "thresholds": list(v.thresholds),
            "settings": {
                g: {"start": v.tiers[s], "thresholds": list(t)} for g, (s, t) in v.settings.items()
            },
            "calibrators": v.calibrators is not None,
            "calibration": v.calibration.as_dict() if v.calibration else None,
            "dev": dev_point(run, rows, ladder) if run is not None else None,
        }
    if result.ladders is not None:
        from tierwise.evaluation.ladders import VERIFIER_LADDERS

        run = by_name.get(VERIFIER_LADDERS)
        info["ladders"] = {
            **result.ladders.as_dict(),
            "dev": dev_point(run, rows, ladder) if run is not None else None,
        }
    return info


__all__ = [
    "DEFAULT_FOLDS",
    "DEV_FRACTION",
    "FoldResult",
    "FoldSpec",
    "Plan",
    "Progress",
    "dev_point",
    "fold_info",
    "plans",
    "run_fold",
    "scores_for",
    "split",
    "train_ladders",
    "train_models",
]
