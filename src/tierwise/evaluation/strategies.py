"""The strategies an evaluation compares, each producing one :class:`Trace` per row.

Computed from recorded scores (no cascade needed):

* **single model** — always the same model;
* **oracle** (a bound) — per row, the cheapest ladder model that answered correctly;
* **perfect-verifier cascade** (a bound) — climb the ladder and stop at the first correct
  answer, paying for every attempt on the way.

Replayed through the real :class:`~tierwise.cascade.Cascade` (router, validators, escalation
and ledger code as in production, ``role="replay"``, providers from
:class:`~tierwise.evaluation.replay.ReplaySource`):

* **policy** — the policy's rules by task kind (a policy file, or per-kind tiers fitted on the
  training rows), no validators;
* **cascade: checks** — start at the bottom, validators by answer format (option letter,
  code that imports, arithmetic), climb on failure;
* **cascade: checks + agreement** — start one tier up and also require the cheaper tiers to
  give the same answer (multiple choice and numbers);
* **learned router** — start where :class:`~tierwise.evaluation.learned.LearnedRouter`
  proposes, no validators;
* **learned router + cascade** — start there, validators on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from tierwise.evaluation.dataset import Dataset, Ladder, Row
from tierwise.evaluation.metrics import FloatArray, Step, Trace

if TYPE_CHECKING:
    from tierwise.cascade import Cascade, Scorer
    from tierwise.cascade.result import AttemptRecord
    from tierwise.cascade.validators import Validator
    from tierwise.ledger import Ledger
    from tierwise.policy import Policy
    from tierwise.policy.schema import Tier
    from tierwise.providers.base import CompletionRequest
    from tierwise.task import Task

SINGLE = "single"
STRATEGY = "strategy"
BOUND = "bound"

#: The python validators a replayed cascade uses, by answer format.
CHECKS: dict[str, dict[str, str]] = {
    "choice": {"type": "python", "callable": "tierwise.evaluation.checks:multiple_choice"},
    "code": {"type": "python", "callable": "tierwise.evaluation.checks:python_code"},
    "number": {"type": "python", "callable": "tierwise.evaluation.checks:arithmetic"},
    "agreement": {
        "type": "python",
        "callable": "tierwise.evaluation.checks:agreement_with_cheaper_tiers",
    },
    "not_refusal": {"type": "not_refusal"},
}
#: Replayed rows are committed to the ledger this many at a time (one transaction each): a
#: replay is not live traffic, and per-row commits would make large sets slow.
BATCH_ROWS = 500
_FORMAT_CHECK = {"choice": "choice", "code": "code", "number": "number", "text": "not_refusal"}
AGREEMENT_MODES = {"choice": "choice", "number": "number"}


@dataclass(frozen=True, slots=True)
class StrategyRun:
    """One strategy's traces over the evaluated rows (in row order)."""

    name: str
    group: str
    traces: tuple[Trace, ...]
    note: str = ""
    #: For routing curves on two-tier ladders: how much each row was judged to need the top tier.
    router_scores: FloatArray | None = None


# -- computed from scores ---------------------------------------------------------------------


def _cost(row: Row, model: str) -> float | None:
    c = row.results[model].cost_usd
    return float(c) if c is not None else None


def _sum(costs: Sequence[float | None]) -> float | None:
    return None if any(c is None for c in costs) else float(sum(c for c in costs if c is not None))


def single_model(rows: Sequence[Row], model: str, tier: str | None = None) -> StrategyRun:
    """Always *model*."""
    label = tier or model
    traces = tuple(
        Trace(
            r.prompt_id,
            r.kind,
            model,
            label,
            r.results[model].score,
            _cost(r, model),
            (Step(label, model, _cost(r, model), r.results[model].score, True),),
        )
        for r in rows
    )
    return StrategyRun(model, SINGLE, traces, note=f"tier {tier}" if tier else "")


def _cheapness(rows: Sequence[Row], ladder: Ladder) -> list[str]:
    """Ladder models from cheapest to dearest (by mean cost when known, else ladder order)."""
    known = all(r.results[m].cost_usd is not None for r in rows for m in ladder.models)
    if not known:
        return list(ladder.models)
    mean = {m: sum(float(r.results[m].cost_usd or 0) for r in rows) for m in ladder.models}
    return sorted(ladder.models, key=lambda m: (mean[m], ladder.models.index(m)))


def oracle(rows: Sequence[Row], ladder: Ladder) -> StrategyRun:
    """Per row, the cheapest ladder model with the best recorded score (a bound)."""
    order = _cheapness(rows, ladder)
    tier_of = dict(zip(ladder.models, ladder.tiers, strict=True))
    traces = []
    for r in rows:
        best = max(r.results[m].score for m in order)
        model = next(m for m in order if r.results[m].score >= best)
        score = r.results[model].score
        step = Step(tier_of[model], model, _cost(r, model), score, True)
        traces.append(
            Trace(r.prompt_id, r.kind, model, tier_of[model], score, _cost(r, model), (step,))
        )
    return StrategyRun(
        "oracle (bound)", BOUND, tuple(traces), note="cheapest ladder model with the best score"
    )


def perfect_verifier(rows: Sequence[Row], ladder: Ladder, threshold: float) -> StrategyRun:
    """Climb from the bottom; a verifier that knows the recorded score stops at the first pass."""
    traces = []
    for r in rows:
        steps: list[Step] = []
        chosen = len(ladder) - 1
        for i, (tier, model) in enumerate(ladder):
            res = r.results[model]
            ok = res.score >= threshold or i == len(ladder) - 1
            steps.append(Step(tier, model, _cost(r, model), res.score, ok, judged=True))
            if ok:
                chosen = i
                break
        model = ladder.models[chosen]
        traces.append(
            Trace(
                r.prompt_id,
                r.kind,
                model,
                ladder.tiers[chosen],
                r.results[model].score,
                _sum([s.cost for s in steps]),
                tuple(steps),
            )
        )
    return StrategyRun(
        "perfect-verifier cascade (bound)",
        BOUND,
        tuple(traces),
        note="bottom up, stops at the first answer whose recorded score passes",
    )


#: The name of the strategy read from the ledger's own record of what the live policy did.
SERVED = "current policy (as served)"


def served_policy(rows: Sequence[Row], ladder: Ladder) -> StrategyRun | None:
    """What the policy in force did with each row's task when it ran live (``served`` in a
    ledger export): the answer it delivered, at what the task cost its caller. ``None`` when
    any row lacks that record (benchmark data has none)."""
    if not rows or any(r.served is None for r in rows):
        return None
    traces = []
    for r in rows:
        served = r.served
        assert served is not None
        steps = []
        for tier in served.tiers:
            model = ladder.model(tier) if tier in ladder.tiers else (served.model or tier)
            if tier == served.tier and served.model is not None:
                model = served.model
            found = r.results.get(model)
            cost = None if found is None or found.cost_usd is None else float(found.cost_usd)
            score = found.score if found is not None else 0.0
            steps.append(Step(tier, model, cost, score, tier == served.tier, judged=True))
        exhausted = served.tier is None
        last = steps[-1] if steps else None
        model = served.model or (last.model if last else ladder.models[-1])
        tier = served.tier or (last.tier if last else ladder.top)
        cost = None if served.cost_usd is None else float(served.cost_usd)
        traces.append(
            Trace(r.prompt_id, r.kind, model, tier, served.score, cost, tuple(steps), exhausted)
        )
    return StrategyRun(
        SERVED,
        STRATEGY,
        tuple(traces),
        note="what the policy in force did live: its answer (scored as exported) at the task's "
        "cost, failed attempts and validator calls included",
    )


# -- policies ---------------------------------------------------------------------------------


def fit_kind_tiers(
    rows: Sequence[Row], ladder: Ladder, *, tolerance: float = 0.01
) -> dict[str, str]:
    """Per kind, the cheapest tier whose mean training quality is within *tolerance* of the
    kind's best tier; ``"*"`` maps to the same choice over all rows (for unseen kinds)."""
    by_kind: dict[str, list[Row]] = {"*": list(rows)}
    for r in rows:
        by_kind.setdefault(r.kind, []).append(r)
    out: dict[str, str] = {}
    for kind, group in by_kind.items():
        quality = [np.mean([r.results[m].score for r in group]) for m in ladder.models]
        best = max(quality)
        index = next(i for i, q in enumerate(quality) if q >= best - tolerance)
        out[kind] = ladder.tiers[index]
    return out


def eval_policy(
    dataset: Dataset,
    ladder: Ladder,
    *,
    kind_tiers: Mapping[str, str] | None = None,
    checks: bool = False,
    agreement: bool = False,
) -> Policy:
    """A policy over the eval ladder: per-kind rules and/or the format validators.

    Tiers use ``provider = "openai"`` as a placeholder; a replay never calls a provider.
    """
    from tierwise.policy import Policy, PolicyModel

    kinds = sorted({r.kind for r in dataset.rows})
    validators: dict[str, Any] = {}
    kind_settings: dict[str, Any] = {}
    for kind in kinds:
        fmt = dataset.format_of(kind)
        names: list[str] = []
        if checks:
            names.append(_FORMAT_CHECK.get(fmt, "not_refusal"))
            if agreement and fmt in AGREEMENT_MODES:
                names.append("agreement")
        for name in names:
            validators[name] = CHECKS[name]
        kind_settings[kind] = {"validators": names, "doubt": "cheap"}
    rules = []
    if kind_tiers:
        default = kind_tiers.get("*", ladder.bottom)
        for kind in kinds:
            rules.append(
                {
                    "name": f"kind {kind}",
                    "when": {"kind": kind},
                    "tier": kind_tiers.get(kind, default),
                }
            )
    data = {
        "version": 1,
        "tiers": [{"name": t, "provider": "openai", "model": m} for t, m in ladder],
        "rules": rules,
        "defaults": {"doubt": "cheap", "validators": []},
        "kinds": kind_settings,
        "validators": validators,
        "retry": {"attempts": 1, "backoff_s": 0},
    }
    return Policy(PolicyModel.model_validate(data))


def policy_on_ladder(policy: Policy, ladder: Ladder) -> Policy:
    """A team's policy with each tier's model replaced by the ladder's model of that name.

    Raises:
        ValueError: the policy names a tier the ladder does not map.
    """
    from tierwise.policy import Policy, PolicyModel

    missing = [t for t in policy.ladder if t not in ladder.tiers]
    if missing:
        raise ValueError(
            f"the policy's tiers {', '.join(policy.ladder)} need models: pass --tiers "
            + ",".join(f"{t}=MODEL" for t in policy.ladder)
            + f" (missing {', '.join(missing)})"
        )
    data = policy.model.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["tiers"] = [
        {**_tier_fields(t), "model": ladder.model(t["name"]), "provider": "openai"}
        for t in data["tiers"]
    ]
    data["retry"] = {"attempts": 1, "backoff_s": 0}
    return Policy(PolicyModel.model_validate(data), source=policy.source, base_dir=policy.base_dir)


def _tier_fields(tier: dict[str, Any]) -> dict[str, Any]:
    keep = ("name", "max_tokens", "timeout_s")
    return {k: v for k, v in tier.items() if k in keep}


# -- replay through the cascade ---------------------------------------------------------------


def _replay_request_builder(
    task: Task, tier: Tier, model: str, max_tokens: int, failure: Any
) -> CompletionRequest:
    """The cascade's default request, with the dataset row's id as the replay key."""
    from tierwise.cascade import default_request_builder

    request = default_request_builder(task, tier, model, max_tokens, failure)
    prompt_id = task.metadata.get("prompt_id", task.id)
    return replace(request, extra={**request.extra, "prompt_id": prompt_id})


class Replayer:
    """Replays rows through the real cascade, one strategy at a time, into one ledger.

    Args:
        dataset: the recorded results (the replay provider answers from it).
        ladder: tier → model.
        ledger: where every attempt is recorded (``role="replay"``); ``None`` keeps budgets in
            memory and records nothing.
        run_id: makes task ids unique when the same ledger sees several runs.
        on_row: called after each replayed row (progress bars).
    """

    def __init__(
        self,
        dataset: Dataset,
        ladder: Ladder,
        *,
        ledger: Ledger | None = None,
        run_id: str = "eval",
        on_row: Callable[[], None] | None = None,
    ) -> None:
        from tierwise.evaluation.replay import ReplaySource
        from tierwise.pricing import PriceCatalog

        self.dataset = dataset
        self.ladder = ladder
        self.ledger = ledger
        self.run_id = run_id
        self.on_row = on_row
        self.source = ReplaySource(dataset, ladder)
        self.catalog = PriceCatalog()
        self._batch: AbstractContextManager[None] | None = None

    def run(
        self,
        name: str,
        policy: Policy,
        rows: Sequence[Row],
        *,
        scorer: Scorer | None = None,
        start_tier: str | None = None,
        agreement: bool = False,
        validators: Sequence[Validator] = (),
        note: str = "",
    ) -> StrategyRun:
        """Run every row through a cascade built from *policy*; one trace per row.

        *validators* run after the policy's own for every kind (validator objects that a
        policy file cannot name, such as a trained :class:`~.verifier.ResponseVerifier`).
        """
        from tierwise.errors import BudgetExceededError, EscalationExhaustedError

        slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
        cascade = _cascade_with(validators)(
            policy,
            providers=self.source,
            ledger=self.ledger,
            scorer=scorer,
            catalog=self.catalog,
            role="replay",
            request_builder=_replay_request_builder,
            sleep=lambda _s: None,
        )
        ladder_csv = ",".join(self.ladder.tiers)
        traces = []
        try:
            for i, row in enumerate(rows):
                if self.ledger is not None and i % BATCH_ROWS == 0:
                    self._commit()
                    self._batch = self.ledger.batch()
                    self._batch.__enter__()
                meta = {"prompt_id": row.prompt_id, "ladder": ladder_csv}
                mode = AGREEMENT_MODES.get(self.dataset.format_of(row.kind))
                if agreement and mode:
                    meta["agreement"] = mode
                task = _task(row, f"{row.prompt_id}@{slug}@{self.run_id}", meta, self.run_id, slug)
                try:
                    result = cascade.run(task, start_tier=start_tier)
                    trace = self._trace(row, result.attempts, exhausted=False)
                except (EscalationExhaustedError, BudgetExceededError) as exc:
                    trace = self._trace(row, exc.attempts, exhausted=True)
                traces.append(trace)
                if self.on_row is not None:
                    self.on_row()
        finally:
            self._commit()
            cascade.close()
        return StrategyRun(name, STRATEGY, tuple(traces), note=note)

    def _commit(self) -> None:
        if self._batch is not None:
            batch, self._batch = self._batch, None
            batch.__exit__(None, None, None)

    def _trace(self, row: Row, attempts: Sequence[AttemptRecord], *, exhausted: bool) -> Trace:
        top = self.ladder.top
        steps = []
        for a in attempts:
            res = row.results.get(a.model)
            score = res.score if res is not None else 0.0
            known = res is not None and res.cost_usd is not None
            cost = float(a.cost_usd) if known else None
            if a.role == "validator":
                steps.append(Step(a.tier, a.model, cost, score, True, validator=True))
            else:
                steps.append(
                    Step(
                        a.tier,
                        a.model,
                        cost,
                        score,
                        a.outcome == "accepted",
                        judged=bool(a.verdicts) and a.tier != top,
                    )
                )
        answers = [s for s in steps if not s.validator]
        final = (
            next((s for s in answers if s.accepted), answers[-1])
            if answers
            else Step(top, self.ladder.model(top), None, 0.0, False)
        )
        return Trace(
            prompt_id=row.prompt_id,
            kind=row.kind,
            model=final.model,
            tier=final.tier,
            score=final.score if answers else 0.0,
            cost=_sum([s.cost for s in steps]),
            steps=tuple(steps),
            exhausted=exhausted,
        )


def _cascade_with(extra: Sequence[Validator]) -> type[Cascade]:
    """The real :class:`~tierwise.cascade.Cascade`, or a subclass whose every kind also runs
    *extra* validators after the policy's (the loop, ledger and escalation are unchanged)."""
    from tierwise.cascade import Cascade

    if not extra:
        return Cascade
    added = tuple(extra)

    class _WithValidators(Cascade):
        def validators_for(self, task: Task) -> tuple[Validator, ...]:
            return (*super().validators_for(task), *added)

    return _WithValidators


def _task(row: Row, task_id: str, meta: dict[str, str], run_id: str, slug: str) -> Task:
    from tierwise.task import Task

    return Task.create(
        row.kind,
        row.prompt or "",
        annotate="",
        id=task_id,
        session=f"eval:{run_id}:{slug}",
        metadata=meta,
    )


def rejected_at_bottom(run: StrategyRun) -> FloatArray:
    """1 where the run's first answer attempt was not accepted (a cascade's routing signal)."""
    out = []
    for t in run.traces:
        first = next((s for s in t.steps if not s.validator), None)
        out.append(0.0 if first is not None and first.accepted else 1.0)
    return np.asarray(out, dtype=float)


__all__ = [
    "BOUND",
    "CHECKS",
    "SINGLE",
    "STRATEGY",
    "Replayer",
    "StrategyRun",
    "eval_policy",
    "fit_kind_tiers",
    "oracle",
    "perfect_verifier",
    "policy_on_ladder",
    "rejected_at_bottom",
    "single_model",
]
