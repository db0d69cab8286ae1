"""One evaluation run: load, split into folds, train, replay every strategy, summarise.

:func:`evaluate` is what ``tierwise eval`` runs; it returns an :class:`EvalReport` whose
:meth:`~EvalReport.as_dict` is the ``--json`` output (a ``strategies`` list whose entries carry
``name``, ``quality``, ``cost_per_query_usd`` and ``cost_share``, so scripts can compare runs).

Training data never overlaps the rows reported. With ``train`` pointing at another folder, the
model is trained there and every row of the evaluated folder is reported; a folder with its own
``train`` split and another split is trained on the first and reported on the others. Otherwise
the folder is cut into folds (:mod:`~tierwise.evaluation.folds`): each row is reported once, by
models trained on the other folds, and every figure comes with its spread across folds. Inside
each fold's training rows, the learned router and the verifier are calibrated by
cross-validation (:mod:`~tierwise.evaluation.calibration`), and the report says where each
fold's dev point landed against the calibration's target.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tierwise.evaluation.calibration import Objective
from tierwise.evaluation.dataset import Dataset, DatasetError, Ladder, Row
from tierwise.evaluation.folds import (
    DEFAULT_FOLDS,
    FoldResult,
    FoldSpec,
    Progress,
    fold_info,
    run_fold,
    scores_for,
    split,
    step,
    train_ladders,
    train_models,
)
from tierwise.evaluation.metrics import Summary, fold_figures, summarize
from tierwise.evaluation.routing import RoutingSection, routing_sections
from tierwise.evaluation.strategies import (
    BOUND,
    SINGLE,
    Replayer,
    StrategyRun,
    oracle,
    perfect_verifier,
    served_policy,
    single_model,
)

if TYPE_CHECKING:
    from tierwise.evaluation.learned import LearnedRouter
    from tierwise.evaluation.verifier import ResponseVerifier
    from tierwise.policy import Policy

#: The product's claim is the reference's quality at no more than this share of its cost; the
#: report names the best strategy within it.
CLAIM_SHARE = 0.4


@dataclass(slots=True)
class EvalReport:
    """Everything one ``tierwise eval`` run measured."""

    dataset: dict[str, Any]
    evaluated_on: str
    ladder: Ladder
    reference: str
    strategies: list[Summary]
    routing: list[RoutingSection] = field(default_factory=list)
    router: dict[str, Any] | None = None
    ledger: str = ""
    notes: list[str] = field(default_factory=list)
    seed: int = 0
    folds: int = 1
    objective: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready report."""
        best = self.best_within(CLAIM_SHARE)
        return {
            "dataset": self.dataset,
            "evaluated_on": self.evaluated_on,
            "seed": self.seed,
            "folds": self.folds,
            "objective": self.objective,
            "ladder": dict(self.ladder),
            "reference": self.reference,
            "strategies": [s.as_dict() for s in self.strategies],
            "best_within": {
                "max_cost_share": CLAIM_SHARE,
                "strategy": best.name if best else None,
                "reaches_reference": self.reaches_reference(best) if best else None,
            },
            "routing": [r.as_dict() for r in self.routing],
            "router": self.router,
            "ledger": self.ledger,
            "notes": self.notes,
        }

    def strategy(self, name: str) -> Summary:
        """The summary called *name*."""
        return next(s for s in self.strategies if s.name == name)

    def best_within(self, share: float) -> Summary | None:
        """The best-quality strategy or single model (bounds excluded) at no more than *share*
        of the reference's cost; ``None`` when none is costed that low."""
        fits = [
            s
            for s in self.strategies
            if s.group != BOUND and s.cost_share is not None and s.cost_share <= share + 1e-12
        ]
        if not fits:
            return None
        return max(fits, key=lambda s: (s.quality.value, -(s.cost_share or 0.0)))

    @staticmethod
    def reaches_reference(summary: Summary) -> bool | None:
        """Whether the reference's quality is within reach: the 95% interval of the paired
        difference to it reaches 0 (``None`` for the reference itself)."""
        diff = summary.vs_reference_quality
        return None if diff is None else diff.high >= 0


def _same(a: str | Path, b: str | Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def coverage(dataset: Dataset, ladder: Ladder) -> str:
    """How many rows have a result for every ladder model, and which tiers the others lack."""
    complete = sum(1 for r in dataset.rows if all(m in r.results for m in ladder.models))
    lacking = {
        f"{tier} ({model})": sum(1 for r in dataset.rows if model not in r.results)
        for tier, model in ladder
    }
    missing = ", ".join(f"{name} on {n}" for name, n in lacking.items() if n)
    text = f"kept {complete} of {len(dataset)} rows with a result for every ladder tier"
    if missing:
        text += f"; the others lack {missing}"
    if dataset.rows and any(r.served is not None for r in dataset.rows) and missing:
        text += (
            " (a ledger task has results only for the tiers it tried, unless shadow mode sent "
            "it to the others: [kinds.NAME] shadow = 0.05)"
        )
    return text


def _reportable(dataset: Dataset, ladder: Ladder, notes: list[str]) -> Dataset:
    """The rows every ladder model answered; and, when that loses at most 2% of them, only rows
    every model answered, so that every single model is compared on the same rows."""
    report = dataset.complete_for(ladder.models)
    if len(report) < len(dataset):
        notes.append(coverage(dataset, ladder))
    everyone = report.complete_for(dataset.models)
    if len(everyone) < len(report) and len(everyone) >= 0.98 * len(report):
        notes.append(
            f"{len(report) - len(everyone)} rows without a result for every model left out, "
            "so every single model is compared on the same rows"
        )
        return everyone
    return report


def _limited(rows: Sequence[Row], limit: int | None, seed: int, base: Dataset) -> list[Row]:
    return list(rows) if limit is None else list(base.with_rows(rows).sample(limit, seed).rows)


def _plan_folds(
    dataset: Dataset,
    ladder: Ladder,
    *,
    path: str | Path,
    train_set: Dataset | None,
    train: str | Path | None,
    needs_training: bool,
    folds: int,
    seed: int,
    limit: int | None,
    notes: list[str],
) -> tuple[list[FoldSpec], str]:
    """What to train on and what to report on (see the module docstring)."""

    def complete(rows: Sequence[Row]) -> list[Row]:
        return [r for r in rows if all(m in r.results for m in ladder.models)]

    def capped(rows: list[Row]) -> list[Row]:
        if limit is None or len(rows) <= 4 * limit:
            return rows
        picked = sorted(np.random.default_rng(seed).choice(len(rows), 4 * limit, replace=False))
        return [rows[int(i)] for i in picked]

    suffix = ""
    if train_set is not None:
        report = _limited(_reportable(dataset, ladder, notes).rows, limit, seed, dataset)
        if limit is not None:
            suffix = f"; limited to {len(report)} rows"
        spec = FoldSpec(0, 1, tuple(capped(complete(train_set.rows))), tuple(report))
        return [spec], f"all {len(report)} rows of {path}; trained on {train}{suffix}"
    splits = dataset.splits
    if (train is not None or needs_training) and "train" in splits and len(splits) > 1:
        rest = dataset.with_rows((r for r in dataset.rows if r.split != "train"), split="test")
        report = _limited(_reportable(rest, ladder, notes).rows, limit, seed, dataset)
        if limit is not None:
            suffix = f"; limited to {len(report)} rows"
        trained = capped(complete([r for r in dataset.rows if r.split == "train"]))
        spec = FoldSpec(0, 1, tuple(trained), tuple(report))
        return [spec], f"the folder's non-train split(s) ({len(report)} rows){suffix}"
    if train is not None or needs_training:
        return split(_reportable(dataset, ladder, notes), folds, seed, limit, ladder)
    report = _limited(_reportable(dataset, ladder, notes).rows, limit, seed, dataset)
    if limit is not None:
        suffix = f"; limited to {len(report)} rows"
    return [FoldSpec(0, 1, (), tuple(report))], f"all {len(report)} rows{suffix}"


def evaluate(
    path: str | Path,
    *,
    train: str | Path | None = None,
    router_file: str | Path | None = None,
    save_router: str | Path | None = None,
    tiers: Ladder | None = None,
    policy: Policy | None = None,
    ledger_url: str | None = None,
    limit: int | None = None,
    prices: str | Path | None = None,
    seed: int = 0,
    tolerance: float = 0.01,
    max_cost_share: float | None = None,
    folds: int = DEFAULT_FOLDS,
    progress: Progress | None = None,
) -> EvalReport:
    """Evaluate every strategy the data allows on the recorded results at *path*.

    Args:
        path: the folder to report on.
        train: a folder to train the learned router (and fit per-kind tiers) on; the same
            folder as *path* means "use its train split, or split it into folds".
        router_file: a learned router saved earlier (instead of training one).
        save_router: write the trained router here (JSON); with several folds, one trained on
            every training row of the run.
        tiers: tier → model; default: the loader's ladder for the data (a priced one when that
            has models without a price).
        policy: replay this policy's rules and validators as the "policy" strategy.
        ledger_url: where the replay ledger goes; default a temporary file, removed after.
        limit: report on at most this many rows in total (a seeded sample); each fold trains on
            at most 4× as many.
        prices: a JSON price file for results recorded without a cost.
        seed: every random choice (folds, samples, bootstrap, random router) uses it.
        tolerance: quality the learned router and the verifier may give up against the top tier
            (their calibration target), unless *max_cost_share* is given.
        max_cost_share: calibrate them for the best quality at no more than this share of the
            top tier's cost instead.
        folds: how many folds a folder that must be split is cut into (1: one seeded 80/20 dev
            split).

    Raises:
        DatasetError: missing or unreadable data, unknown models in *tiers*, a router trained
            for another ladder.
    """
    from tierwise.evaluation.loaders import load_dataset
    from tierwise.evaluation.prices import load_price_file, price_dataset, priced_ladder
    from tierwise.pricing import PriceCatalog

    objective = Objective(tolerance=tolerance, max_cost_share=max_cost_share)
    table = load_price_file(prices) if prices is not None else None
    catalog = PriceCatalog(policy.model.prices if policy is not None else None)
    dataset = load_dataset(path)
    dataset, _ = price_dataset(dataset, table, catalog)
    notes = list(dataset.notes)
    ladder = tiers
    if ladder is None:
        ladder, why = priced_ladder(dataset)
        if why:
            notes.append(why)
    unknown = [m for m in ladder.models if m not in dataset.models]
    if unknown:
        raise DatasetError(
            f"--tiers names models without results in {path}: {', '.join(unknown)}; "
            f"it has {', '.join(dataset.models)}"
        )
    loaded, loaded_verifier = _load_models(router_file, ladder)
    kinds = {r.kind for r in dataset.rows}
    train_set = None
    if train is not None and not _same(train, path):
        train_set = load_dataset(train)
        if "train" in train_set.splits:
            train_set = train_set.split_by_name("train")
        train_set, _ = price_dataset(train_set, table, catalog)
    specs, evaluated_on = _plan_folds(
        dataset,
        ladder,
        path=path,
        train_set=train_set,
        train=train,
        needs_training=loaded is None and (dataset.has_text or len(kinds) > 1),
        folds=folds,
        seed=seed,
        limit=limit,
        notes=notes,
    )
    rows = [r for s in specs for r in s.report]
    if not rows:
        raise DatasetError(f"{path}: no rows to compare strategies on: {coverage(dataset, ladder)}")

    results = _replay(
        dataset,
        ladder,
        specs,
        policy,
        (loaded, loaded_verifier),
        objective,
        seed,
        ledger_url,
        notes,
        progress,
    )
    ledger_label = ledger_url or "a temporary file (removed after the run)"
    router_info = _router_info(results, router_file, ladder)
    if save_router is not None and router_info is not None:
        _save_models(results, specs, dataset, ladder, objective, seed, save_router, progress)
        router_info["saved_to"] = str(save_router)
    if not dataset.has_responses(ladder.models):
        notes.append("no response text for the ladder models: cascades with validators skipped")
    if not dataset.has_text:
        notes.append("no prompt text: no learned router")

    # -- pooled runs and summaries ---------------------------------------------------------------
    runs = _pooled(results, rows, dataset, ladder, notes)
    singles = [r for r in runs if r.group == SINGLE]
    priced = [r for r in singles if all(t.cost is not None for t in r.traces)]
    best = max(priced or singles, key=lambda r: (np.mean([t.score for t in r.traces]), r.name))
    orc = next(r for r in runs if r.name.startswith("oracle"))
    sizes = [len(s.report) for s in specs]
    summaries = []
    for r in runs:
        summary = summarize(
            r.name,
            r.traces,
            group=r.group,
            threshold=dataset.pass_threshold,
            oracle=orc.traces,
            reference=None if r is best else best.traces,
            top_tier=ladder.top,
            seed=seed,
            note=r.note,
        )
        if len(specs) > 1:
            summary = replace(summary, folds=fold_figures(r.traces, best.traces, sizes))
        summaries.append(summary)
    routing: list[RoutingSection] = []
    if len(ladder) == 2:
        routing = _routing(results, rows, ladder, runs, seed)
        if any(res.verifier is not None for res in results):
            notes.append(
                "the verifier cascade's routing curve sweeps its acceptance threshold; its x axis "
                "is the strong-call share as RouteLLM defines it, but a cascade always pays the "
                "weak call too (its cost is in the strategies table, not on that axis)"
            )
    return EvalReport(
        dataset={
            "name": dataset.name,
            "path": str(path),
            "rows": len(dataset),
            "models": list(dataset.models),
            "kinds": len(kinds),
            "pass_threshold": dataset.pass_threshold,
        },
        evaluated_on=evaluated_on,
        ladder=ladder,
        reference=best.name,
        strategies=summaries,
        routing=routing,
        router=router_info,
        ledger=ledger_label,
        notes=list(dict.fromkeys(notes)),
        seed=seed,
        folds=len(specs),
        objective={**objective.as_dict(), "description": objective.describe()},
    )


def _load_models(
    router_file: str | Path | None, ladder: Ladder
) -> tuple[LearnedRouter | None, ResponseVerifier | None]:
    """The router (and verifier) saved in *router_file*, checked against *ladder*."""
    if router_file is None:
        return None, None
    from tierwise.evaluation.learned import LearnedRouter

    router = LearnedRouter.load(router_file)
    verifier = _load_verifier(router_file)
    if tuple(router.models) != ladder.models or tuple(router.tiers) != ladder.tiers:
        raise DatasetError(
            f"the router in {router_file} was trained for the ladder "
            + ",".join(f"{t}={m}" for t, m in zip(router.tiers, router.models, strict=True))
            + f"; this run's ladder is {ladder.format()} (pass --tiers to match)"
        )
    if verifier is not None and (
        verifier.models != ladder.models or verifier.tiers != ladder.tiers
    ):
        raise DatasetError(
            f"the response verifier in {router_file} was trained for another ladder "
            f"({','.join(verifier.models)}); this run's ladder is {ladder.format()}"
        )
    return router, verifier


def _replay(
    dataset: Dataset,
    ladder: Ladder,
    specs: Sequence[FoldSpec],
    policy: Policy | None,
    loaded: tuple[LearnedRouter | None, ResponseVerifier | None],
    objective: Objective,
    seed: int,
    ledger_url: str | None,
    notes: list[str],
    progress: Progress | None,
) -> list[FoldResult]:
    """Train (unless *loaded*) and replay every fold into one ledger."""
    from tierwise.ledger import open_ledger

    temp_dir = None
    if ledger_url is None:
        temp_dir = tempfile.TemporaryDirectory(prefix="tierwise-eval-")
        target = str(Path(temp_dir.name) / "replay.db")
    else:
        target = ledger_url
    results = []
    try:
        with open_ledger(target) as ledger:
            replayer = Replayer(
                dataset,
                ladder,
                ledger=ledger,
                run_id=uuid.uuid4().hex[:8],
                on_row=progress.advance if progress is not None else None,
            )
            for spec in specs:
                router, verifier = loaded
                ladders = None
                if router is None:
                    router, verifier, fold_notes = train_models(
                        spec, dataset, ladder, objective, seed, progress
                    )
                    notes.extend(fold_notes)
                    ladders = train_ladders(
                        spec, dataset, ladder, verifier, objective, seed, progress
                    )
                results.append(
                    run_fold(
                        spec,
                        dataset,
                        ladder,
                        replayer,
                        policy=policy,
                        router=router,
                        verifier=verifier,
                        progress=progress,
                        ladders=ladders,
                    )
                )
    finally:
        if temp_dir is not None:
            temp_dir.cleanup()
    return results


def _pooled(
    results: Sequence[FoldResult],
    rows: Sequence[Row],
    dataset: Dataset,
    ladder: Ladder,
    notes: list[str],
) -> list[StrategyRun]:
    """Single models and bounds over every reported row, and each replayed strategy's traces
    joined fold after fold (in the same row order)."""
    complete = [m for m in dataset.models if all(m in r.results for r in rows)]
    tier_of = dict(zip(ladder.models, ladder.tiers, strict=True))
    ladder_first = sorted(complete, key=lambda m: (m not in tier_of, _position(ladder, m), m))
    runs = [single_model(rows, m, tier_of.get(m)) for m in ladder_first]
    served = served_policy(rows, ladder)
    if served is not None:
        runs.append(served)
    runs.append(oracle(rows, ladder))
    runs.append(perfect_verifier(rows, ladder, dataset.pass_threshold))
    names = list(dict.fromkeys(r.name for res in results for r in res.runs))
    for name in names:
        parts = [next((r for r in res.runs if r.name == name), None) for res in results]
        if any(p is None for p in parts):
            notes.append(f"{name}: not run in every fold, so left out of the table")
            continue
        first = parts[0]
        assert first is not None
        traces = tuple(t for p in parts if p is not None for t in p.traces)
        runs.append(StrategyRun(name, first.group, traces, note=first.note))
    return runs


def _routing(
    results: Sequence[FoldResult],
    rows: Sequence[Row],
    ladder: Ladder,
    runs: Sequence[StrategyRun],
    seed: int,
) -> list[RoutingSection]:
    scores = [scores_for(res, ladder) for res in results]
    learned = (
        np.concatenate([s[0] for s in scores if s[0] is not None])
        if all(s[0] is not None for s in scores)
        else None
    )
    verified = (
        np.concatenate([s[1] for s in scores if s[1] is not None])
        if all(s[1] is not None for s in scores)
        else None
    )
    return routing_sections(rows, ladder, runs, seed, learned=learned, verified=verified)


def _router_info(
    results: Sequence[FoldResult], router_file: str | Path | None, ladder: Ladder
) -> dict[str, Any] | None:
    if all(res.router is None and res.verifier is None for res in results):
        return None
    trained = [len(res.spec.train) for res in results]
    source = (
        str(router_file)
        if router_file
        else (
            f"trained on {trained[0]} rows"
            if len(trained) == 1
            else f"trained per fold on {min(trained)}–{max(trained)} rows"
        )
    )
    return {"source": source, "folds": [fold_info(res, ladder) for res in results]}


def _save_models(
    results: Sequence[FoldResult],
    specs: Sequence[FoldSpec],
    dataset: Dataset,
    ladder: Ladder,
    objective: Objective,
    seed: int,
    path: str | Path,
    progress: Progress | None,
) -> None:
    """Save the fold's models (one fold), or models trained on every training row (several)."""
    router, verifier = results[0].router, results[0].verifier
    if len(specs) > 1:
        seen: dict[str, Row] = {}
        for spec in specs:
            for r in spec.train:
                seen.setdefault(r.prompt_id, r)
        everything = FoldSpec(0, 1, tuple(seen.values()), ())
        step(progress, f"training the saved models on all {len(seen)} training rows")
        router, verifier, _ = train_models(everything, dataset, ladder, objective, seed, progress)
    if router is not None:
        _save(router, verifier, path)


def _position(ladder: Ladder, model: str) -> int:
    return ladder.models.index(model) if model in ladder.models else 0


def _save(router: LearnedRouter, verifier: ResponseVerifier | None, path: str | Path) -> None:
    """The router's JSON, with the response verifier under ``"verifier"`` when there is one."""
    import json

    data = router.to_json()
    if verifier is not None:
        data["verifier"] = verifier.to_json()
    Path(path).write_text(json.dumps(data), encoding="utf-8")


def _load_verifier(path: str | Path) -> ResponseVerifier | None:
    """The response verifier saved with a router file, or ``None`` when it has none."""
    import json

    from tierwise.evaluation.verifier import ResponseVerifier

    data = json.loads(Path(path).read_text(encoding="utf-8"))  # LearnedRouter.load read it
    found = data.get("verifier") if isinstance(data, dict) else None
    return None if found is None else ResponseVerifier.from_json(found)


__all__ = ["CLAIM_SHARE", "EvalReport", "Progress", "RoutingSection", "evaluate"]
