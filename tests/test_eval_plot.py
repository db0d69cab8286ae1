"""The cost–quality plot stays readable: no label covers another, every label stays inside its
axes, and single models without a price are left off a cost axis (and counted)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from tierwise.evaluation.dataset import Ladder
from tierwise.evaluation.metrics import Interval, Summary
from tierwise.evaluation.plot import LABEL, cost_quality_figure, plot_report
from tierwise.evaluation.report import EvalReport

LADDER = Ladder(("cheap", "mid", "strong"), ("model-00", "model-01", "model-29"))


def summary(
    name: str, group: str, quality: float, cost: float | None, top_share: float = 0.0
) -> Summary:
    return Summary(
        name=name,
        group=group,
        n=100,
        quality=Interval(quality, quality - 0.04, quality + 0.04),
        cost_per_query=cost,
        cost_share=None if cost is None else cost / 0.01,
        escalation_rate=0.0,
        wasted_per_query=None,
        false_accept_rate=None,
        false_escalate_rate=None,
        exhausted_rate=0.0,
        top_share=top_share,
        delta_oracle_quality=0.0,
        delta_oracle_cost=None,
    )


def crowded(priced: bool) -> EvalReport:
    """Thirty single models within a few points of each other (as on MMLU-Pro, where every
    single model sits at top share 0 when there are no costs), plus cascades and bounds."""
    singles = [
        summary(
            f"org/model-{i:02d}-instruct-long-name",
            "single",
            0.30 + 0.004 * i,
            (0.0002 * (1 + i % 3) if i in (0, 1, 2) else None) if priced else None,
        )
        for i in range(29)
    ]
    singles.append(summary("model-29", "single", 0.75, 0.01 if priced else None, top_share=1.0))
    singles[0] = summary("model-00", "single", 0.30, 0.0002 if priced else None)
    singles[1] = summary("model-01", "single", 0.304, 0.0004 if priced else None)
    others = [
        summary("oracle (bound)", "bound", 0.85, 0.001 if priced else None, 0.1),
        summary("cascade: checks", "strategy", 0.33, 0.0003 if priced else None, 0.0),
        summary("cascade: learned verifier", "strategy", 0.72, 0.004 if priced else None, 0.5),
    ]
    return EvalReport(
        dataset={"name": "crowded", "path": "x", "rows": 100, "models": [], "kinds": 1},
        evaluated_on="all 100 rows",
        ladder=LADDER,
        reference="model-29",
        strategies=singles + others,
    )


def label_boxes(report: EvalReport) -> tuple[list[object], object, list[str]]:
    fig = cost_quality_figure(report)
    fig.canvas.draw()
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    texts = [t for t in ax.texts if t.get_gid() == LABEL]
    return (
        [t.get_window_extent(renderer) for t in texts],
        ax.get_window_extent(renderer),
        [t.get_text() for t in texts],
    )


@pytest.mark.parametrize("priced", [False, True])
def test_labels_never_overlap_and_stay_inside(priced: bool, tmp_path: Path) -> None:
    """Thirty crowded single models: every label readable, none off the axes."""
    report = crowded(priced)
    boxes, axes, names = label_boxes(report)
    assert len(boxes) == (30 if not priced else 4) + priced  # + the reference line's note
    for (a, na), (b, nb) in itertools.combinations(zip(boxes, names, strict=True), 2):
        assert not a.overlaps(b), f"{na!r} overlaps {nb!r}"  # type: ignore[attr-defined]
    for box, name in zip(boxes, names, strict=True):
        assert axes.x0 <= box.x0 and box.x1 <= axes.x1, name  # type: ignore[attr-defined]
        assert axes.y0 <= box.y0 and box.y1 <= axes.y1, name  # type: ignore[attr-defined]
    plot_report(report, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unpriced_single_models_are_left_off_a_cost_axis_and_counted() -> None:
    fig = cost_quality_figure(crowded(priced=True))
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "26 single models without a price not shown" in texts
    assert fig.axes[0].get_xscale() == "log"
