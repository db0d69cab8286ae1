"""The cost–quality plot of an evaluation (PNG, matplotlib's Agg backend, no global state).

Left: every strategy as a point — quality against cost per query (log scale), or against the
share of rows answered by the top tier when the set has no costs — single models in grey,
bounds as stars. Right, for two-model sets: RouteLLM's quality against strong-call share
curves (oracle, random, learned router, cascades).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tierwise.evaluation.report import EvalReport


def _short(name: str, limit: int = 28) -> str:
    name = name.rsplit("/", 1)[-1]
    return name if len(name) <= limit else name[: limit - 1] + "…"


def plot_report(report: EvalReport, path: str | Path) -> None:
    """Write the report's cost–quality plot to *path* (PNG).

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
    fig = Figure(figsize=(7.5 * panels, 5.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, panels, 1)
    with_cost = all(s.cost_per_query is not None for s in report.strategies)
    markers = iter("osD^vP<>XdhH" * 3)
    stars = iter(["gold", "limegreen", "orchid", "cyan"] * 3)
    for s in report.strategies:
        x = s.cost_per_query if with_cost and s.cost_per_query is not None else s.top_share
        y = s.quality.value
        if s.group == "single":
            ax.scatter([x], [y], color="0.6", s=24, zorder=2)
            ax.annotate(
                _short(s.name),
                (x, y),
                fontsize=7,
                color="0.45",
                xytext=(4, -3),
                textcoords="offset points",
            )
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
        ax.annotate(
            f"{_short(ref.name)} quality / 40% of its cost",
            (0.4 * ref.cost_per_query, ref.quality.value),
            fontsize=7,
            color="0.3",
            xytext=(-4, 4),
            textcoords="offset points",
            ha="right",
        )
    ax.legend(fontsize=7, loc="lower right")
    if with_cost:
        ax.set_xscale("log")
        ax.set_xlabel("cost per query (USD, log scale)")
    else:
        ax.set_xlabel("share of rows answered by the top tier (no costs in this set)")
    ax.set_ylabel("mean quality")
    n = report.strategies[0].n if report.strategies else 0
    ax.set_title(f"{report.dataset['name']}: quality vs cost, {n} rows reported", fontsize=9)
    ax.grid(alpha=0.3)
    if section is not None:
        ax2 = fig.add_subplot(1, 2, 2)
        for r in section.routers:
            xs, ys = r.curve.shares, r.curve.qualities
            style = "--" if "oracle" in r.name else ":" if "random" in r.name else "-"
            label = f"{r.name} (APGR {r.apgr:.3f})" if r.apgr is not None else r.name
            line = ax2.plot(xs, ys, style, label=label)[0]
            if r.operating_point is not None:
                ax2.scatter(
                    [r.operating_point[0]], [r.operating_point[1]], color=line.get_color(), zorder=4
                )
        ax2.axhline(section.weak_quality, color="0.5", lw=0.8)
        ax2.axhline(section.strong_quality, color="0.2", lw=0.8)
        ax2.set_xlabel(f"share of calls to the strong model ({_short(section.strong)})")
        ax2.set_ylabel("mean quality")
        ax2.set_title(
            f"routing curves, {section.n} rows (weak: {_short(section.weak)})", fontsize=9
        )
        ax2.legend(fontsize=7, loc="lower right")
        ax2.grid(alpha=0.3)
    fig.savefig(str(path), dpi=120)


__all__ = ["plot_report"]
