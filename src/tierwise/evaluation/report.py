"""One evaluation run: load, split, train, replay every strategy, summarise.

:func:`evaluate` is what ``tierwise eval`` runs; it returns an :class:`EvalReport` whose
:meth:`~EvalReport.as_dict` is the ``--json`` output (a ``strategies`` list whose entries carry
``name``, ``quality``, ``cost_per_query_usd`` and ``cost_share``, so scripts can compare runs).

Training data never overlaps the rows reported: with ``train`` pointing at the evaluated folder
(or with no training source at all), the folder's own ``train`` split is used when it has
another split to report on, else its rows are split at random (seeded, stratified by kind) into
80% for training — of which the learned router keeps a quarter to calibrate on — and 20% dev
rows that every strategy is reported on.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from tierwise.evaluation.dataset import Dataset, DatasetError, Ladder, Row
from tierwise.evaluation.metrics import (
    Curve,
    RouterCurve,
    Summary,
    apgr,
    cpt,
    oracle_router,
    random_router,
    router_curve,
    routing_curve,
    summarize,
)
from tierwise.evaluation.strategies import (
    AGREEMENT_MODES,
    SINGLE,
    STRATEGY,
    Replayer,
    StrategyRun,
    eval_policy,
    fit_kind_tiers,
    oracle,
    perfect_verifier,
    policy_on_ladder,
    rejected_at_bottom,
    single_model,
)

if TYPE_CHECKING:
    from tierwise.cascade import Scorer
    from tierwise.cascade.validators import Validator
    from tierwise.evaluation.learned import LearnedRouter
    from tierwise.evaluation.verifier import ResponseVerifier
    from tierwise.policy import Policy

#: Share of a folder held out as dev rows when it has to be split for training.
DEV_FRACTION = 0.2
#: Per-benchmark routing sections are shown when a set mixes at most this many benchmarks.
MAX_SECTIONS = 6
#: Random-router draws averaged into the sanity curve.
RANDOM_DRAWS = 100
#: The strategy name of the response-verifier cascade.
VERIFIER_CASCADE = "cascade: learned verifier"


class Progress(Protocol):
    """What :func:`evaluate` reports while it replays (the CLI draws a progress bar)."""

    def start(self, label: str, total: int) -> None: ...

    def advance(self) -> None: ...


@dataclass(frozen=True, slots=True)
class RoutingSection:
    """RouteLLM metrics for one two-model group of rows (a benchmark, or all rows)."""

    source: str
    n: int
    weak: str
    strong: str
    weak_quality: float
    strong_quality: float
    routers: tuple[RouterCurve, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "n": self.n,
            "weak": self.weak,
            "strong": self.strong,
            "weak_quality": self.weak_quality,
            "strong_quality": self.strong_quality,
            "routers": [r.as_dict() for r in self.routers],
        }


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

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready report."""
        return {
            "dataset": self.dataset,
            "evaluated_on": self.evaluated_on,
            "seed": self.seed,
            "ladder": dict(self.ladder),
            "reference": self.reference,
            "strategies": [s.as_dict() for s in self.strategies],
            "routing": [r.as_dict() for r in self.routing],
            "router": self.router,
            "ledger": self.ledger,
            "notes": self.notes,
        }

    def strategy(self, name: str) -> Summary:
        """The summary called *name*."""
        return next(s for s in self.strategies if s.name == name)


def _same(a: str | Path, b: str | Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def _split_for_training(dataset: Dataset, seed: int) -> tuple[list[Row], Dataset, str]:
    """Training rows and the rows to report on, never overlapping."""
    splits = dataset.splits
    if "train" in splits and len(splits) > 1:
        train = [r for r in dataset.rows if r.split == "train"]
        rest = dataset.with_rows((r for r in dataset.rows if r.split != "train"), split="test")
        return train, rest, f"the folder's non-train split(s) ({len(rest)} rows)"
    train_part, dev = dataset.partition(
        [1 - DEV_FRACTION, DEV_FRACTION], seed=seed, names=["train", "dev"]
    )
    what = (
        f"a seeded dev split ({DEV_FRACTION:.0%} of the folder, seed {seed}, stratified by "
        f"kind: {len(dev)} rows); trained on the other {len(train_part)}"
    )
    return list(train_part.rows), dev, what


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
    progress: Progress | None = None,
) -> EvalReport:
    """Evaluate every strategy the data allows on the recorded results at *path*.

    Args:
        path: the folder to report on.
        train: a folder to train the learned router (and fit per-kind tiers) on; the same
            folder as *path* means "use its train split, or a seeded dev split".
        router_file: a learned router saved earlier (instead of training one).
        save_router: write the trained router here (JSON).
        tiers: tier → model; default: the loader's ladder for the data.
        policy: replay this policy's rules and validators as the "policy" strategy.
        ledger_url: where the replay ledger goes; default a temporary file, removed after.
        limit: report on at most this many rows (a seeded sample); train on at most 4× as many.
        prices: a JSON price file for results recorded without a cost.
        seed: every random choice (splits, samples, bootstrap, random router) uses it.
        tolerance: quality the learned router may give up against the top tier (calibration).

    Raises:
        DatasetError: missing or unreadable data, unknown models in *tiers*, a router trained
            for another ladder.
    """
    from tierwise.evaluation.loaders import load_dataset
    from tierwise.evaluation.prices import load_price_file, price_dataset, priced_ladder
    from tierwise.pricing import PriceCatalog

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

    # -- what to train on, what to report on --------------------------------------------------
    loaded: LearnedRouter | None = None
    loaded_verifier: ResponseVerifier | None = None
    if router_file is not None:
        from tierwise.evaluation.learned import LearnedRouter

        loaded = LearnedRouter.load(router_file)
        loaded_verifier = _load_verifier(router_file)
        if tuple(loaded.models) != ladder.models or tuple(loaded.tiers) != ladder.tiers:
            raise DatasetError(
                f"the router in {router_file} was trained for the ladder "
                + ",".join(f"{t}={m}" for t, m in zip(loaded.tiers, loaded.models, strict=True))
                + f"; this run's ladder is {ladder.format()} (pass --tiers to match)"
            )
    kinds = {r.kind for r in dataset.rows}
    needs_training = loaded is None and (dataset.has_text or len(kinds) > 1)
    train_rows: list[Row] = []
    evaluated_on = f"all {len(dataset)} rows"
    report_set = dataset
    if train is not None and not _same(train, path):
        train_set = load_dataset(train)
        if "train" in train_set.splits:
            train_set = train_set.split_by_name("train")
        train_set, _ = price_dataset(train_set, table, catalog)
        train_rows = list(train_set.rows)
        evaluated_on = f"all {len(dataset)} rows of {path}; trained on {train}"
    elif train is not None or needs_training:
        train_rows, report_set, evaluated_on = _split_for_training(dataset, seed)
    report_set = report_set.complete_for(ladder.models)
    everyone = report_set.complete_for(dataset.models)
    if len(everyone) < len(report_set) and len(everyone) >= 0.98 * len(report_set):
        notes.append(
            f"{len(report_set) - len(everyone)} rows without a result for every model left out, "
            "so every single model is compared on the same rows"
        )
        report_set = everyone
    train_rows = [r for r in train_rows if all(m in r.results for m in ladder.models)]
    if limit is not None:
        report_set = report_set.sample(limit, seed)
        if len(train_rows) > 4 * limit:
            picked = sorted(np.random.default_rng(seed).choice(len(train_rows), 4 * limit, False))
            train_rows = [train_rows[int(i)] for i in picked]
        evaluated_on += f"; limited to {len(report_set)} rows"
    rows = list(report_set.rows)
    if not rows:
        raise DatasetError(f"{path}: no rows with results for every ladder model")

    # -- the learned router -------------------------------------------------------------------
    router = loaded
    router_info: dict[str, Any] | None = None
    if router is None and dataset.has_text and train_rows:
        from tierwise.evaluation.learned import LearnedRouter

        if progress is not None:
            progress.start("training the learned router", 1)
        try:
            router = LearnedRouter.train(
                train_rows, ladder, threshold=dataset.pass_threshold, seed=seed, tolerance=tolerance
            )
        except DatasetError as exc:
            notes.append(f"no learned router: {exc}")
        if progress is not None:
            progress.advance()
    verifier = loaded_verifier
    has_responses = dataset.has_responses(ladder.models)
    below = ladder.models[:-1]
    answered = any(all(r.results[m].response is not None for m in below) for r in train_rows)
    if verifier is None and loaded is None and dataset.has_text and answered:
        from tierwise.evaluation.verifier import ResponseVerifier

        if progress is not None:
            progress.start("training the response verifier", 1)
        try:
            verifier = ResponseVerifier.train(
                train_rows,
                ladder,
                {k: dataset.format_of(k) for k in kinds},
                threshold=dataset.pass_threshold,
                seed=seed,
                tolerance=tolerance,
            )
        except DatasetError as exc:
            notes.append(f"no response verifier: {exc}")
        if progress is not None:
            progress.advance()
    if verifier is not None and (
        verifier.models != ladder.models or verifier.tiers != ladder.tiers
    ):
        raise DatasetError(
            f"the response verifier in {router_file} was trained for another ladder "
            f"({','.join(verifier.models)}); this run's ladder is {ladder.format()}"
        )
    if router is not None:
        router_info = {
            "source": str(router_file) if router_file else f"trained on {len(train_rows)} rows",
            "margin": router.margin,
            "features": len(router.features.vocabulary),
            "calibration": router.calibration.as_dict() if router.calibration else None,
        }
        if verifier is not None:
            router_info["verifier"] = {
                "thresholds": list(verifier.thresholds),
                "calibration": verifier.calibration.as_dict() if verifier.calibration else None,
            }
        if save_router is not None:
            _save(router, verifier, save_router)
            router_info["saved_to"] = str(save_router)

    # -- strategies -----------------------------------------------------------------------------
    runs: list[StrategyRun] = []
    complete = [m for m in dataset.models if all(m in r.results for r in rows)]
    tier_of = dict(zip(ladder.models, ladder.tiers, strict=True))
    ladder_first = sorted(complete, key=lambda m: (m not in tier_of, _position(ladder, m), m))
    runs.extend(single_model(rows, m, tier_of.get(m)) for m in ladder_first)
    runs.append(oracle(rows, ladder))
    runs.append(perfect_verifier(rows, ladder, dataset.pass_threshold))

    replay_set = report_set
    temp_dir = None
    if ledger_url is None:
        temp_dir = tempfile.TemporaryDirectory(prefix="tierwise-eval-")
        ledger_target: str = str(Path(temp_dir.name) / "replay.db")
        ledger_label = "a temporary file (removed after the run)"
    else:
        ledger_target = ledger_url
        ledger_label = ledger_url
    from tierwise.ledger import open_ledger

    plans = _plans(dataset, ladder, policy, train_rows, router, has_responses, kinds, verifier)
    try:
        with open_ledger(ledger_target) as ledger:
            replayer = Replayer(
                replay_set,
                ladder,
                ledger=ledger,
                run_id=uuid.uuid4().hex[:8],
                on_row=progress.advance if progress is not None else None,
            )
            for plan in plans:
                if progress is not None:
                    progress.start(plan.name, len(rows))
                runs.append(
                    replayer.run(
                        plan.name,
                        plan.policy,
                        rows,
                        scorer=plan.scorer,
                        start_tier=plan.start_tier,
                        agreement=plan.agreement,
                        validators=plan.validators,
                        note=plan.note,
                    )
                )
    finally:
        if temp_dir is not None:
            temp_dir.cleanup()
    if not has_responses:
        notes.append("no response text for the ladder models: cascades with validators skipped")
    if not dataset.has_text:
        notes.append("no prompt text: no learned router")

    # -- summaries ------------------------------------------------------------------------------
    singles = [r for r in runs if r.group == SINGLE]
    best = max(singles, key=lambda r: (np.mean([t.score for t in r.traces]), r.name))
    orc = next(r for r in runs if r.name.startswith("oracle"))
    summaries = [
        summarize(
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
        for r in runs
    ]
    routing = _routing(rows, ladder, router, runs, seed, verifier) if len(ladder) == 2 else []
    if routing and verifier is not None:
        notes.append(
            "the verifier cascade's routing curve sweeps its acceptance threshold; its x axis is "
            "the strong-call share as RouteLLM defines it, but a cascade always pays the weak "
            "call too (its cost is in the strategies table, not on that axis)"
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
        notes=notes,
        seed=seed,
    )


def _position(ladder: Ladder, model: str) -> int:
    return ladder.models.index(model) if model in ladder.models else 0


@dataclass(frozen=True, slots=True)
class _Plan:
    name: str
    policy: Policy
    scorer: Scorer | None = None
    start_tier: str | None = None
    agreement: bool = False
    validators: tuple[Validator, ...] = ()
    note: str = ""


def _plans(
    dataset: Dataset,
    ladder: Ladder,
    policy: Policy | None,
    train_rows: Sequence[Row],
    router: LearnedRouter | None,
    has_responses: bool,
    kinds: set[str],
    verifier: ResponseVerifier | None = None,
) -> list[_Plan]:
    """The cascade strategies this data allows."""
    plans: list[_Plan] = []
    if policy is not None:
        try:
            replayed = policy_on_ladder(policy, ladder)
        except ValueError as exc:
            raise DatasetError(str(exc)) from None
        where = str(policy.source) if policy.source else "the default policy"
        plans.append(_Plan(f"policy ({Path(where).name})", replayed, note=f"{where}, replayed"))
    elif train_rows and len(kinds) > 1:
        fitted = fit_kind_tiers(train_rows, ladder)
        plans.append(
            _Plan(
                "policy by kind (fitted)",
                eval_policy(dataset, ladder, kind_tiers=fitted),
                note="per kind, the cheapest tier within 1 point of the best on training rows",
            )
        )
    agree = len(ladder) >= 3 and any(dataset.format_of(k) in AGREEMENT_MODES for k in kinds)
    if has_responses:
        plans.append(
            _Plan(
                "cascade: checks",
                eval_policy(dataset, ladder, checks=True),
                start_tier=ladder.bottom,
                note="bottom up; answer-format / code / arithmetic checks",
            )
        )
        if agree:
            start = ladder.tiers[-2]
            plans.append(
                _Plan(
                    "cascade: checks + agreement",
                    eval_policy(dataset, ladder, checks=True, agreement=True),
                    start_tier=start,
                    agreement=True,
                    note=f"starts at {start}; cheaper tiers must agree",
                )
            )
    if verifier is not None and has_responses:
        ts = "/".join(f"{t:.3f}" for t in verifier.thresholds)
        plans.append(
            _Plan(
                VERIFIER_CASCADE,
                eval_policy(dataset, ladder),
                scorer=verifier,
                validators=(verifier.validator(),),
                note=(
                    "P(correct) from prompt + answer (+ agreement of the cheaper tiers for "
                    f"choice/number); escalates below thresholds {ts} calibrated on training rows"
                ),
            )
        )
    if router is not None:
        plans.append(
            _Plan(
                "learned router",
                eval_policy(dataset, ladder),
                scorer=router,
                note="starts at the router's tier; no validators",
            )
        )
        if has_responses:
            plans.append(
                _Plan(
                    "learned router + cascade",
                    eval_policy(dataset, ladder, checks=True, agreement=agree),
                    scorer=router,
                    agreement=agree,
                    note="starts at the router's tier; checks" + (" + agreement" if agree else ""),
                )
            )
    return plans


def _routing(
    rows: Sequence[Row],
    ladder: Ladder,
    router: LearnedRouter | None,
    runs: Sequence[StrategyRun],
    seed: int,
    verifier: ResponseVerifier | None = None,
) -> list[RoutingSection]:
    """RouteLLM's curves for a two-tier ladder, for all rows and per benchmark."""
    weak_model, strong_model = ladder.models
    groups: dict[str, list[int]] = {"all": list(range(len(rows)))}
    sources = sorted({r.source for r in rows if r.source})
    if 1 < len(sources) <= MAX_SECTIONS:
        for name in sources:
            groups[name] = [i for i, r in enumerate(rows) if r.source == name]
    learned = router.strong_score(router.probabilities_for(rows)) if router is not None else None
    cascades = [
        r
        for r in runs
        if r.group == STRATEGY and r.name.startswith("cascade") and r.name != VERIFIER_CASCADE
    ]
    answered = [i for i, r in enumerate(rows) if r.results[weak_model].response is not None]
    verified = np.full(len(rows), np.nan)
    if verifier is not None and answered:
        probs = verifier.probabilities_for([rows[i] for i in answered])
        verified[answered] = 1.0 - probs[:, 0]
    verifier_run = next((r for r in runs if r.name == VERIFIER_CASCADE), None)
    sections = []
    for source, idx in groups.items():
        sub = [rows[i] for i in idx]
        w = np.array([r.results[weak_model].score for r in sub], dtype=float)
        s = np.array([r.results[strong_model].score for r in sub], dtype=float)
        curves = [router_curve("oracle router (bound)", oracle_router(w, s), w, s)]
        curves.append(_random_curve(w, s, seed))
        if learned is not None:
            curves.append(router_curve("learned router", learned[idx], w, s))
        if not np.isnan(verified[idx]).any():
            point = None
            if verifier_run is not None:
                traces = [verifier_run.traces[i] for i in idx]
                point = (
                    float(np.mean([t.tier == ladder.top for t in traces])),
                    float(np.mean([t.score for t in traces])),
                )
            curves.append(
                router_curve(
                    "learned verifier cascade (threshold swept)",
                    verified[idx],
                    w,
                    s,
                    operating_point=point,
                )
            )
        for run in cascades:
            traces = [run.traces[i] for i in idx]
            point = (
                float(np.mean([t.tier == ladder.top for t in traces])),
                float(np.mean([t.score for t in traces])),
            )
            flags = rejected_at_bottom(StrategyRun(run.name, run.group, tuple(traces)))
            curves.append(router_curve(run.name, flags, w, s, operating_point=point))
        sections.append(
            RoutingSection(
                source=source,
                n=len(sub),
                weak=weak_model,
                strong=strong_model,
                weak_quality=float(w.mean()),
                strong_quality=float(s.mean()),
                routers=tuple(curves),
            )
        )
    return sections


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


def _random_curve(w: np.ndarray, s: np.ndarray, seed: int) -> RouterCurve:
    """The random router as the mean curve of many seeded draws (its APGR should be ≈ 0.5)."""
    n = len(w)
    total = np.zeros(n + 1)
    shares = np.arange(n + 1) / n
    for draw in range(RANDOM_DRAWS):
        c = routing_curve(random_router(n, seed + draw), w, s)
        total += np.interp(shares, c.shares, c.qualities)
    mean = Curve(shares, total / RANDOM_DRAWS)
    wq, sq = float(w.mean()), float(s.mean())
    return RouterCurve(
        name=f"random router (mean of {RANDOM_DRAWS})",
        curve=mean,
        apgr=apgr(mean, wq, sq),
        cpt50=cpt(mean, wq, sq, 0.5),
        cpt80=cpt(mean, wq, sq, 0.8),
    )


__all__ = ["EvalReport", "Progress", "RoutingSection", "evaluate"]
