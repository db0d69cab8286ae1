"""RouteLLM's view of a two-tier ladder: quality against the share of calls to the strong model.

For every router that gives each row a score (how much it needs the strong model), the curve of
every threshold on that score, with APGR and CPT(50%/80%); the oracle and a random router are the
bounds and the sanity line. Cascades appear by their routing signal (rejected at the bottom) and
their operating point as run. Sections: all rows, and each benchmark when a set mixes a few.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tierwise.evaluation.dataset import Ladder, Row
from tierwise.evaluation.metrics import (
    Curve,
    FloatArray,
    RouterCurve,
    apgr,
    cpt,
    oracle_router,
    random_router,
    router_curve,
    routing_curve,
)
from tierwise.evaluation.strategies import STRATEGY, StrategyRun, rejected_at_bottom

#: Per-benchmark routing sections are shown when a set mixes at most this many benchmarks.
MAX_SECTIONS = 6
#: Random-router draws averaged into the sanity curve.
RANDOM_DRAWS = 100
#: The strategy name of the response-verifier cascade.
VERIFIER_CASCADE = "cascade: learned verifier"


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


def routing_sections(
    rows: Sequence[Row],
    ladder: Ladder,
    runs: Sequence[StrategyRun],
    seed: int,
    *,
    learned: FloatArray | None = None,
    verified: FloatArray | None = None,
) -> list[RoutingSection]:
    """RouteLLM's curves for a two-tier ladder, for all rows and per benchmark.

    Args:
        learned: per row, the learned router's strong score (``None``: no router).
        verified: per row, ``1 − P(weak answer correct)`` from the verifier (NaN where it could
            not judge).
    """
    weak_model, strong_model = ladder.models
    groups: dict[str, list[int]] = {"all": list(range(len(rows)))}
    sources = sorted({r.source for r in rows if r.source})
    if 1 < len(sources) <= MAX_SECTIONS:
        for name in sources:
            groups[name] = [i for i, r in enumerate(rows) if r.source == name]
    cascades = [
        r
        for r in runs
        if r.group == STRATEGY and r.name.startswith("cascade") and r.name != VERIFIER_CASCADE
    ]
    verifier_run = next((r for r in runs if r.name == VERIFIER_CASCADE), None)
    sections = []
    for source, idx in groups.items():
        sub = [rows[i] for i in idx]
        w = np.array([r.results[weak_model].score for r in sub], dtype=float)
        s = np.array([r.results[strong_model].score for r in sub], dtype=float)
        curves = [router_curve("oracle router (bound)", oracle_router(w, s), w, s)]
        curves.append(random_curve(w, s, seed))
        if learned is not None:
            curves.append(router_curve("learned router", learned[idx], w, s))
        if verified is not None and not np.isnan(verified[idx]).any():
            point = _point(verifier_run, idx, ladder) if verifier_run is not None else None
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
            flags = rejected_at_bottom(
                StrategyRun(run.name, run.group, tuple(run.traces[i] for i in idx))
            )
            curves.append(
                router_curve(run.name, flags, w, s, operating_point=_point(run, idx, ladder))
            )
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


def _point(run: StrategyRun, idx: Sequence[int], ladder: Ladder) -> tuple[float, float]:
    """A run's operating point on rows *idx*: (share answered by the top tier, quality)."""
    traces = [run.traces[i] for i in idx]
    return (
        float(np.mean([t.tier == ladder.top for t in traces])),
        float(np.mean([t.score for t in traces])),
    )


def random_curve(w: FloatArray, s: FloatArray, seed: int) -> RouterCurve:
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


__all__ = ["MAX_SECTIONS", "VERIFIER_CASCADE", "RoutingSection", "random_curve", "routing_sections"]
