"""The cost–quality plot of an evaluation (PNG, matplotlib's Agg backend, no global state).

Left: every strategy as a point — quality against cost per query (log scale), or against the
share of rows answered by the top tier when the set has no costs — single models in grey,
bounds as stars, strategies with their 95% interval. Single models without a price are left off
a cost axis (a footnote counts them). Labels that would overlap are pushed apart and tied to
their point with a thin line, so many models at one x (every single model sits at share 0 on a
set without costs) stay readable. Right, for two-model sets: RouteLLM's quality against
strong-call share curves (oracle, random, learned router, cascades).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from tierwise.evaluation.metrics import Summary
    from tierwise.evaluation.report import EvalReport

#: The gid of every point label (tests find them by it).
LABEL = "label"
#: Pixels kept between two labels.
GAP = 2.0


def _short(name: str, limit: int = 28) -> str:
    name = name.rsplit("/", 1)[-1]
    return name if len(name) <= limit else name[: limit - 1] + "…"


def plot_report(report: EvalReport, path: str | Path) -> None:
    """Write the report's cost–quality plot to *path* (PNG).

    Raises:
        ImportError: matplotlib is not installed (``pip install 'tierwise[eval]'``).
    """
    cost_quality_figure(report).savefig(str(path), dpi=120)


def cost_quality_figure(report: EvalReport) -> Figure:
    """The report's figure (see the module docstring), laid out and ready to save.

    Raises:
        ImportError: matplotlib is not installed (``pip install 'tierwise[eval]'``).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - matplotlib is in the eval extra
        raise ImportError("plotting needs matplotlib: pip install 'tierwise[eval]'") from exc

    section = next((s for s in report.routing if s.source == "all"), None)
    panels = 2 if section is not None else 1
    fig = Figure(figsize=(7.5 * panels, 6.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, panels, 1)
    labels, obstacles = _strategies(ax, report)
    if section is not None:
        _curves(fig.add_subplot(1, 2, 2), section)
    fig.canvas.draw()  # lay out once, then freeze it so the labels can be placed in pixels
    fig.set_layout_engine("none")
    _spread_labels(ax, labels, obstacles)
    return fig


Label = tuple[Any, tuple[float, float]]
#: A point the labels must not cover: x, y, and the y range of its interval (data coordinates).
Obstacle = tuple[float, float, float, float]


def _strategies(ax: Axes, report: EvalReport) -> tuple[list[Label], list[Obstacle]]:
    """Draw the strategy points; return each label with its anchor, and the marked points
    (with their intervals) labels must keep clear of (data coordinates)."""
    ladder = set(report.ladder.models)
    costed = [s for s in report.strategies if s.group != "single" or s.name in ladder]
    with_cost = bool(costed) and all(s.cost_per_query is not None for s in costed)
    shown = [s for s in report.strategies if not with_cost or s.cost_per_query is not None]
    left_out = len(report.strategies) - len(shown)
    markers = iter("osD^vP<>XdhH" * 3)
    stars = iter(["gold", "limegreen", "orchid", "cyan"] * 3)
    labels: list[Label] = []
    obstacles: list[Obstacle] = []
    for s in shown:
        x = _x(s, with_cost)
        y = s.quality.value
        if s.group != "single":
            low, high = (s.quality.low, s.quality.high) if s.group != "bound" else (y, y)
            obstacles.append((x, y, low, high))
        if s.group == "single":
            ax.scatter([x], [y], color="0.55", s=22, zorder=2)
            text = ax.text(x, y, _short(s.name), fontsize=7, color="0.35", va="center", gid=LABEL)
            labels.append((text, (x, y)))
        elif s.group == "bound":
            ax.scatter(
                [x],
                [y],
                marker="*",
                s=180,
                zorder=3,
                label=s.name,
                color=next(stars),
                edgecolors="k",
                linewidths=0.4,
            )
        else:
            ax.errorbar(
                [x],
                [y],
                yerr=[[y - s.quality.low], [s.quality.high - y]],
                fmt=next(markers),
                ms=7,
                capsize=3,
                zorder=4,
                label=s.name,
            )
    ref = next((s for s in report.strategies if s.name == report.reference), None)
    if with_cost and ref is not None and ref.cost_per_query:
        ax.axhline(ref.quality.value, color="0.3", lw=0.7, ls="--")
        ax.axvline(0.4 * ref.cost_per_query, color="0.3", lw=0.7, ls=":")
        note = ax.text(
            0.4 * ref.cost_per_query,
            ref.quality.value,
            f"{_short(ref.name)} quality / 40% of its cost",
            fontsize=7,
            color="0.3",
            ha="right",
            va="bottom",
            gid=LABEL,
        )
        labels.append((note, (0.4 * ref.cost_per_query, ref.quality.value)))
    # Below the axes, so that no point or label is ever hidden behind it.
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.11), ncol=3, frameon=False)
    if with_cost:
        ax.set_xscale("log")
        ax.set_xlabel("cost per query (USD, log scale)")
        xs = [_x(s, True) for s in shown if _x(s, True) > 0]
        if xs:  # room on the right of the dearest point for its label
            ax.set_xlim(min(xs) / 1.6, max(xs) * 4.0)
    else:
        ax.set_xlabel("share of rows answered by the top tier (no costs in this set)")
        ax.set_xlim(-0.05, 1.35)  # room on the right of x = 0 and x = 1 for the labels
        ax.set_xticks([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_ylabel("mean quality")
    n = report.strategies[0].n if report.strategies else 0
    title = f"{report.dataset['name']}: quality vs cost, {n} rows reported"
    if report.folds > 1:
        title += f" ({report.folds} folds)"
    ax.set_title(title, fontsize=9)
    if left_out:
        ax.annotate(
            f"{left_out} single models without a price not shown",
            (0.01, 0.01),
            xycoords="axes fraction",
            fontsize=6,
            color="0.4",
        )
    ax.grid(alpha=0.3)
    return labels, obstacles


def _x(s: Summary, with_cost: bool) -> float:
    if with_cost and s.cost_per_query is not None:
        return s.cost_per_query
    return s.top_share


def _spread_labels(ax: Axes, labels: list[Label], obstacles: list[Obstacle]) -> None:
    """Place labels so that none overlaps another or a marked point: each starts beside its
    point (moved off a marker it would cover), labels whose spans overlap sideways share a
    column, each column is stacked with the least movement (:func:`_stack`) inside the axes,
    and a label moved away from its point is tied to it with a thin line."""
    if not labels:
        return
    renderer = ax.figure.canvas.get_renderer()  # type: ignore[attr-defined]
    to_px = ax.transData
    box = ax.get_window_extent(renderer)
    markers = []  # (x0, y0, x1, y1) in pixels
    for x, y, _low, _high in obstacles:
        px, py = to_px.transform((x, y))
        markers.append((px - 8, py - 8, px + 8, py + 8))
    items = []  # [x0, y0 wanted, width, height, anchor y px, text, anchor]
    for text, anchor in labels:
        ext = text.get_window_extent(renderer)
        px, py = to_px.transform(anchor)
        x0 = px + 10 if text.get_ha() != "right" else px - 10 - ext.width
        x0 = min(max(x0, box.x0 + 2), box.x1 - ext.width - 2)
        y0 = py - ext.height / 2
        for bx0, by0, bx1, by1 in markers:
            if x0 < bx1 and bx0 < x0 + ext.width and y0 < by1 and by0 < y0 + ext.height:
                up, down = by1 + GAP - y0, y0 + ext.height + GAP - by0
                y0 += up if up <= down else -down
        items.append([x0, y0, ext.width, ext.height, py, text, anchor])
    for column in _columns(items):
        placed = _stack([(it[1], it[3]) for it in column], box.y0 + 2, box.y1 - 2)
        for it, y0 in zip(column, placed, strict=True):
            it[1] = y0
    back = to_px.inverted()
    ax.set_autoscale_on(False)  # leader lines must not move the limits the pixels came from
    for x0, y0, _w, h, py, text, anchor in items:
        x, y = back.transform((x0, y0 + h / 2))
        text.set_position((x, y))
        text.set_ha("left")
        if abs(y0 + h / 2 - py) > h / 2:
            ax.plot([anchor[0], x], [anchor[1], y], color="0.7", lw=0.5, zorder=1)


def _columns(items: list[list[Any]]) -> list[list[list[Any]]]:
    """Groups of labels whose horizontal spans overlap (directly or through another)."""
    order = sorted(items, key=lambda it: it[0])
    columns: list[list[list[Any]]] = []
    right = -float("inf")
    for it in order:
        if columns and it[0] < right:
            columns[-1].append(it)
            right = max(right, it[0] + it[2])
        else:
            columns.append([it])
            right = it[0] + it[2]
    return columns


def _stack(wanted: list[tuple[float, float]], bottom: float, top: float) -> list[float]:
    """Bottoms for boxes ``(wanted bottom, height)`` so that none overlaps the next (GAP apart),
    each run of touching boxes centred where its boxes wanted to be, all within
    [*bottom*, *top*] when they fit (pool-adjacent-violators on the box centres)."""
    order = sorted(range(len(wanted)), key=lambda i: wanted[i][0])
    clusters: list[list[int]] = []  # indices, bottom to top
    starts: list[float] = []

    def size(cluster: list[int]) -> float:
        return sum(wanted[i][1] + GAP for i in cluster) - GAP

    def start_of(cluster: list[int]) -> float:
        # Centre the run on the mean of the centres its boxes wanted.
        offset, shift = 0.0, 0.0
        for i in cluster:
            shift += wanted[i][0] - offset
            offset += wanted[i][1] + GAP
        s = shift / len(cluster)
        return min(max(s, bottom), max(bottom, top - size(cluster)))

    for i in order:
        clusters.append([i])
        starts.append(start_of([i]))
        while len(clusters) > 1 and starts[-2] + size(clusters[-2]) + GAP > starts[-1]:
            merged = clusters[-2] + clusters[-1]
            clusters[-2:] = [merged]
            starts[-2:] = [start_of(merged)]
    out = [0.0] * len(wanted)
    for cluster, start in zip(clusters, starts, strict=True):
        y = start
        for i in cluster:
            out[i] = y
            y += wanted[i][1] + GAP
    return out


def _curves(ax: Axes, section: Any) -> None:
    for r in section.routers:
        xs, ys = r.curve.shares, r.curve.qualities
        style = "--" if "oracle" in r.name else ":" if "random" in r.name else "-"
        label = f"{r.name} (APGR {r.apgr:.3f})" if r.apgr is not None else r.name
        line = ax.plot(xs, ys, style, label=label)[0]
        if r.operating_point is not None:
            ax.scatter(
                [r.operating_point[0]], [r.operating_point[1]], color=line.get_color(), zorder=4
            )
    ax.axhline(section.weak_quality, color="0.5", lw=0.8)
    ax.axhline(section.strong_quality, color="0.2", lw=0.8)
    ax.set_xlabel(f"share of calls to the strong model ({_short(section.strong)})")
    ax.set_ylabel("mean quality")
    ax.set_title(f"routing curves, {section.n} rows (weak: {_short(section.weak)})", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)


__all__ = ["cost_quality_figure", "plot_report"]
