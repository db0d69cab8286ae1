"""What a strategy achieved on a dataset: quality, cost, escalations, validator errors, CIs.

Every strategy, replayed through the cascade or computed from recorded scores, produces one
:class:`Trace` per row: the answer it returned, what it cost, and each call it made. Everything
here is computed from traces, so the same numbers mean the same thing for every strategy.

Two-model sets also get RouteLLM's routing metrics (Ong et al., 2024, arXiv 2406.18665): a
router is a score per prompt (higher = more in need of the strong model); sweeping a threshold
gives quality as a function of the share of calls sent to the strong model. ``APGR`` is the
area under the performance-gap-recovered curve, ``(quality − weak) / (strong − weak)`` over the
strong-call share from 0 to 1; ``CPT(x)`` is the smallest strong-call share that recovers
``x`` of the gap. A random router's expected APGR is 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

#: Bootstrap resamples for confidence intervals (95%, percentile method).
N_BOOT = 1000


@dataclass(frozen=True, slots=True)
class Step:
    """One model call a strategy made for a row.

    ``validator`` marks a call made by a validator (``agreement``) rather than an answer
    attempt; ``judged`` marks an answer attempt that validators could have rejected; ``score``
    is the recorded quality of this answer — used to grade validators, never shown to them.
    """

    tier: str
    model: str
    cost: float | None
    score: float
    accepted: bool
    validator: bool = False
    judged: bool = False


@dataclass(frozen=True, slots=True)
class Trace:
    """What a strategy did for one row: the answer it returned, its cost, and its calls."""

    prompt_id: str
    kind: str
    model: str
    tier: str
    score: float
    cost: float | None
    steps: tuple[Step, ...]
    exhausted: bool = False

    @property
    def escalated(self) -> bool:
        """More than one tier answered (validator calls do not count)."""
        return len({s.tier for s in self.steps if not s.validator}) > 1

    @property
    def wasted(self) -> float | None:
        """Spend on answer attempts that were not accepted, other than the answer returned
        (an exhausted ladder returns its last, rejected, answer)."""
        answers = [s for s in self.steps if not s.validator]
        if self.exhausted and answers:
            answers = answers[:-1]
        costs = [s.cost for s in answers if not s.accepted]
        if any(c is None for c in costs):
            return None
        return float(sum(c for c in costs if c is not None))


@dataclass(frozen=True, slots=True)
class Interval:
    """A point estimate with its 95% bootstrap interval."""

    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


@dataclass(frozen=True, slots=True)
class FoldFigure:
    """A strategy's mean quality and cost share on one fold's rows."""

    n: int
    quality: float
    cost_share: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return {"n": self.n, "quality": self.quality, "cost_share": self.cost_share}


def fold_figures(
    traces: Sequence[Trace], reference: Sequence[Trace], sizes: Sequence[int]
) -> tuple[FoldFigure, ...]:
    """Per fold (consecutive blocks of *sizes* rows), quality and cost share of *reference*."""
    out = []
    start = 0
    for size in sizes:
        block = traces[start : start + size]
        ref = reference[start : start + size]
        start += size
        if not block:
            continue
        costs, ref_costs = _costs(block), _costs(ref)
        share = None
        if costs is not None and ref_costs is not None and float(ref_costs.mean()) > 0:
            share = float(costs.mean() / ref_costs.mean())
        out.append(FoldFigure(len(block), float(np.mean([t.score for t in block])), share))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Summary:
    """One strategy's numbers on one set of rows."""

    name: str
    group: str  # "single" | "strategy" | "bound"
    n: int
    quality: Interval
    cost_per_query: float | None
    cost_share: float | None
    escalation_rate: float
    wasted_per_query: float | None
    false_accept_rate: float | None
    false_escalate_rate: float | None
    exhausted_rate: float
    top_share: float
    delta_oracle_quality: float
    delta_oracle_cost: float | None
    vs_reference_quality: Interval | None = None
    vs_reference_cost: Interval | None = None
    win: str | None = None
    note: str = ""
    #: Per fold, when the rows were reported fold by fold (the spread of the pooled figures).
    folds: tuple[FoldFigure, ...] = ()

    def spread(self) -> tuple[tuple[float, float], tuple[float, float] | None] | None:
        """(min, max) of the per-fold quality and cost share; ``None`` with fewer than 2 folds."""
        if len(self.folds) < 2:
            return None
        q = [f.quality for f in self.folds]
        shares = [f.cost_share for f in self.folds]
        c = (
            (min(x for x in shares if x is not None), max(x for x in shares if x is not None))
            if all(x is not None for x in shares)
            else None
        )
        return (min(q), max(q)), c

    def as_dict(self) -> dict[str, object]:
        """JSON-ready (``quality``, ``cost_per_query_usd`` and ``cost_share`` at the top)."""
        return {
            "name": self.name,
            "group": self.group,
            "n": self.n,
            "quality": self.quality.value,
            "quality_ci": [self.quality.low, self.quality.high],
            "cost_per_query_usd": self.cost_per_query,
            "cost_share": self.cost_share,
            "escalation_rate": self.escalation_rate,
            "wasted_usd_per_query": self.wasted_per_query,
            "false_accept_rate": self.false_accept_rate,
            "false_escalate_rate": self.false_escalate_rate,
            "exhausted_rate": self.exhausted_rate,
            "top_tier_share": self.top_share,
            "delta_oracle_quality": self.delta_oracle_quality,
            "delta_oracle_cost_usd": self.delta_oracle_cost,
            "vs_reference_quality": _opt(self.vs_reference_quality),
            "vs_reference_cost_usd": _opt(self.vs_reference_cost),
            "win": self.win,
            "note": self.note,
            "folds": [f.as_dict() for f in self.folds],
        }


def _opt(i: Interval | None) -> dict[str, float] | None:
    return i.as_dict() if i is not None else None


# -- bootstrap --------------------------------------------------------------------------------


def _resample_means(values: FloatArray, seed: int, n_boot: int = N_BOOT) -> FloatArray:
    """Means of *n_boot* resamples (with replacement) of *values*; resampled in chunks."""
    n = len(values)
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    chunk = max(1, min(n_boot, 2_000_000 // max(n, 1)))
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = values[idx].mean(axis=1)
    return out


def bootstrap_mean(values: Sequence[float] | FloatArray, seed: int = 0) -> Interval:
    """The mean of *values* with a 95% percentile-bootstrap interval (seeded)."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    means = _resample_means(arr, seed)
    low, high = np.percentile(means, [2.5, 97.5])
    return Interval(float(arr.mean()), float(low), float(high))


def paired_difference(
    a: Sequence[float] | FloatArray, b: Sequence[float] | FloatArray, seed: int = 0
) -> Interval:
    """Mean of ``a − b`` over paired rows, with a 95% paired-bootstrap interval."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in length: {x.shape} vs {y.shape}")
    return bootstrap_mean(x - y, seed)


# -- summaries --------------------------------------------------------------------------------


def _costs(traces: Sequence[Trace]) -> FloatArray | None:
    if any(t.cost is None for t in traces):
        return None
    return np.array([t.cost for t in traces], dtype=float)


def _validator_errors(
    traces: Sequence[Trace], threshold: float
) -> tuple[float | None, float | None]:
    """(false-accept rate, false-escalate rate) over judged answer attempts.

    False accept: P(accepted | recorded answer wrong). False escalate: P(rejected | right).
    """
    wrong = right = accepted_wrong = rejected_right = 0
    for t in traces:
        for s in t.steps:
            if s.validator or not s.judged:
                continue
            if s.score >= threshold:
                right += 1
                rejected_right += not s.accepted
            else:
                wrong += 1
                accepted_wrong += s.accepted
    fa = accepted_wrong / wrong if wrong else None
    fe = rejected_right / right if right else None
    return fa, fe


def summarize(
    name: str,
    traces: Sequence[Trace],
    *,
    group: str,
    threshold: float,
    oracle: Sequence[Trace],
    reference: Sequence[Trace] | None = None,
    top_tier: str | None = None,
    seed: int = 0,
    margin: float = 0.01,
    note: str = "",
) -> Summary:
    """Aggregate one strategy's traces (aligned row by row with *oracle* and *reference*).

    Args:
        reference: the baseline every cost share and win is measured against (always the
            single best-quality model); ``None`` for the reference itself.
        margin: non-inferiority margin on quality for a "cheaper" win (default one point).
    """
    n = len(traces)
    scores = np.array([t.score for t in traces], dtype=float)
    quality = bootstrap_mean(scores, seed)
    costs = _costs(traces)
    ref_costs = _costs(reference) if reference is not None else costs
    cost = float(costs.mean()) if costs is not None and n else None
    share = None
    if costs is not None and ref_costs is not None and float(ref_costs.mean()) > 0:
        share = float(costs.mean() / ref_costs.mean())
    wasted_values = [t.wasted for t in traces]
    wasted = (
        None
        if costs is None or any(w is None for w in wasted_values)
        else float(np.mean([w for w in wasted_values if w is not None]))
        if n
        else 0.0
    )
    fa, fe = _validator_errors(traces, threshold)
    oracle_scores = np.array([t.score for t in oracle], dtype=float)
    oracle_costs = _costs(oracle)
    vs_q = vs_c = None
    win = None
    if reference is not None and reference is not traces:
        ref_scores = np.array([t.score for t in reference], dtype=float)
        vs_q = paired_difference(scores, ref_scores, seed)
        if costs is not None and ref_costs is not None:
            vs_c = paired_difference(costs, ref_costs, seed)
        win = _win(vs_q, vs_c, margin)
    return Summary(
        name=name,
        group=group,
        n=n,
        quality=quality,
        cost_per_query=cost,
        cost_share=share,
        escalation_rate=float(np.mean([t.escalated for t in traces])) if n else 0.0,
        wasted_per_query=wasted,
        false_accept_rate=fa,
        false_escalate_rate=fe,
        exhausted_rate=float(np.mean([t.exhausted for t in traces])) if n else 0.0,
        top_share=float(np.mean([t.tier == top_tier for t in traces])) if n and top_tier else 0.0,
        delta_oracle_quality=float(scores.mean() - oracle_scores.mean()) if n else 0.0,
        delta_oracle_cost=(
            float(costs.mean() - oracle_costs.mean())
            if costs is not None and oracle_costs is not None and n
            else None
        ),
        vs_reference_quality=vs_q,
        vs_reference_cost=vs_c,
        win=win,
        note=note,
    )


def _win(quality: Interval, cost: Interval | None, margin: float) -> str | None:
    """Name the win the intervals support, if any.

    ``better``: quality higher (interval above 0). ``cheaper``: cost lower (interval below 0)
    while quality is no more than *margin* worse (interval's low end above ``-margin``).
    """
    better = quality.low > 0
    cheaper = cost is not None and cost.high < 0 and quality.low > -margin
    if better and cost is not None and cost.high < 0:
        return "better and cheaper"
    if better:
        return "better"
    if cheaper:
        return "cheaper, no worse"
    return None


# -- two-model routing curves ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Curve:
    """Quality against the share of calls sent to the strong model (shares ascending)."""

    shares: FloatArray
    qualities: FloatArray

    def as_dict(self, points: int = 21) -> dict[str, list[float]]:
        """The curve resampled at *points* evenly spaced shares (for JSON and plots)."""
        xs = np.linspace(0.0, 1.0, points)
        ys = np.interp(xs, self.shares, self.qualities)
        return {"strong_share": [round(float(x), 4) for x in xs], "quality": ys.tolist()}


def routing_curve(
    router_scores: Sequence[float] | FloatArray,
    weak: Sequence[float] | FloatArray,
    strong: Sequence[float] | FloatArray,
) -> Curve:
    """The quality of every threshold on *router_scores*: rows scoring highest go strong first.

    Rows with tied scores cannot be separated by a threshold, so the curve has a point only
    where the score changes (a constant router gives the straight line from weak to strong).
    """
    s = np.asarray(router_scores, dtype=float)
    w = np.asarray(weak, dtype=float)
    g = np.asarray(strong, dtype=float)
    n = len(s)
    if n == 0:
        return Curve(np.array([0.0, 1.0]), np.array([0.0, 0.0]))
    order = np.argsort(-s, kind="stable")
    gain = np.concatenate([[0.0], np.cumsum((g - w)[order])])
    quality = (w.sum() + gain) / n
    sorted_scores = s[order]
    # A threshold can stop only after the last row of a group of equal scores.
    boundaries = np.concatenate([[0], np.nonzero(np.diff(sorted_scores) != 0)[0] + 1, [n]]).astype(
        int
    )
    return Curve(boundaries / n, quality[boundaries])


def apgr(curve: Curve, weak_quality: float, strong_quality: float) -> float | None:
    """Average performance gap recovered: area under ``(q − weak)/(strong − weak)`` on [0, 1]."""
    gap = strong_quality - weak_quality
    if gap == 0:
        return None
    pgr = (curve.qualities - weak_quality) / gap
    return float(np.trapezoid(pgr, curve.shares))


def cpt(curve: Curve, weak_quality: float, strong_quality: float, level: float) -> float | None:
    """Call-performance threshold: the smallest strong-call share recovering *level* of the gap.

    Linear between curve points; ``None`` when the curve never gets there.
    """
    gap = strong_quality - weak_quality
    if gap == 0:
        return None
    target = weak_quality + level * gap
    xs, ys = curve.shares, curve.qualities
    if ys[0] >= target:
        return 0.0
    for i in range(1, len(xs)):
        if ys[i] >= target:
            x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
            return float(x0 + (target - y0) * (x1 - x0) / (y1 - y0)) if y1 != y0 else float(x1)
    return None


def random_router(n: int, seed: int = 0) -> FloatArray:
    """Scores of a random router (a seeded permutation; no ties)."""
    scores: FloatArray = np.random.default_rng(seed).permutation(n).astype(float)
    return scores


def oracle_router(
    weak: Sequence[float] | FloatArray, strong: Sequence[float] | FloatArray
) -> FloatArray:
    """Scores of the oracle router: the recorded gain of the strong model on each row."""
    gain: FloatArray = np.asarray(strong, dtype=float) - np.asarray(weak, dtype=float)
    return gain


@dataclass(frozen=True, slots=True)
class RouterCurve:
    """One router's curve and RouteLLM metrics on a two-model set."""

    name: str
    curve: Curve
    apgr: float | None
    cpt50: float | None
    cpt80: float | None
    operating_point: tuple[float, float] | None = None  # (strong share, quality) as deployed

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "apgr": self.apgr,
            "cpt50": self.cpt50,
            "cpt80": self.cpt80,
            "operating_point": (
                {"strong_share": self.operating_point[0], "quality": self.operating_point[1]}
                if self.operating_point
                else None
            ),
            "curve": self.curve.as_dict(),
        }


def router_curve(
    name: str,
    router_scores: Sequence[float] | FloatArray,
    weak: Sequence[float] | FloatArray,
    strong: Sequence[float] | FloatArray,
    operating_point: tuple[float, float] | None = None,
) -> RouterCurve:
    """A router's curve with APGR, CPT(50%) and CPT(80%)."""
    curve = routing_curve(router_scores, weak, strong)
    wq, sq = float(np.mean(weak)), float(np.mean(strong))
    return RouterCurve(
        name=name,
        curve=curve,
        apgr=apgr(curve, wq, sq),
        cpt50=cpt(curve, wq, sq, 0.5),
        cpt80=cpt(curve, wq, sq, 0.8),
        operating_point=operating_point,
    )
