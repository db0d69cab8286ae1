"""`tierwise eval`: replay recorded multi-model results through the cascade; compare strategies."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import typer

from tierwise.cli._common import EXIT_INVALID, JsonOption, fail, print_json

if TYPE_CHECKING:
    from rich.console import Console

    from tierwise.evaluation.metrics import Summary
    from tierwise.evaluation.report import EvalReport

#: Seconds between progress lines when stderr is not a terminal.
PROGRESS_EVERY = 10.0


def _usd(value: float | None) -> str:
    return "n/a" if value is None else f"${value:.6f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _quality(s: Summary) -> str:
    half = (s.quality.high - s.quality.low) / 2
    return f"{s.quality.value:.3f} ± {half:.3f}"


def _name(name: str) -> str:
    return name.rsplit("/", 1)[-1] if "/" in name and " " not in name else name


def _spread(s: Summary) -> tuple[str, str]:
    found = s.spread()
    if found is None:
        return "", ""
    (qlo, qhi), shares = found
    share = f"{shares[0]:.0%}–{shares[1]:.0%}" if shares is not None else "n/a"
    return f"{qlo:.3f}–{qhi:.3f}", share


def shown(report: EvalReport) -> tuple[list[Summary], list[str]]:
    """The strategies the table shows, and the single models it leaves out: when costs are
    known, single models without a price (they would print n/a in every cost column)."""
    costed = any(s.cost_per_query is not None for s in report.strategies if s.group != "single")
    if not costed:
        return list(report.strategies), []
    keep, hidden = [], []
    for s in report.strategies:
        if s.group == "single" and s.cost_per_query is None and s.name not in report.ladder.models:
            hidden.append(s.name)
        else:
            keep.append(s)
    return keep, hidden


def render(report: EvalReport) -> None:
    """Print the report's tables on stdout."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 200)
    d = report.dataset
    console.print(
        f"[bold]{d['name']}[/bold] {d['path']}: {d['rows']} rows, {len(d['models'])} models; "
        f"reported on {report.evaluated_on}"
    )
    console.print(f"ladder: {report.ladder.format()}")
    strategies, hidden = shown(report)
    folds = report.folds > 1
    table = Table(
        title=f"strategies (reference for cost share and wins: {report.reference})"
        + (f"; fold ranges over {report.folds} folds" if folds else ""),
        title_justify="left",
    )
    columns = ["strategy", "quality (95% CI)", *(["folds"] if folds else []), "$/query"]
    columns += ["cost share", *(["folds"] if folds else []), "escalated", "wasted $/q"]
    columns += ["false acc.", "false esc.", "Δ oracle", "vs reference (95% CI)"]
    for col in columns:
        table.add_column(col, overflow="fold")
    for s in strategies:
        style = "dim" if s.group == "single" else "green" if s.group == "bound" else None
        vs = ""
        if s.vs_reference_quality is not None:
            diff = s.vs_reference_quality
            vs = f"{diff.value:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}]" + (
                f" {s.win}" if s.win else ""
            )
        q_range, c_range = _spread(s)
        cells = [_name(s.name), _quality(s), *([q_range] if folds else []), _usd(s.cost_per_query)]
        cells += [_pct(s.cost_share), *([c_range] if folds else []), _pct(s.escalation_rate)]
        cells += [_usd(s.wasted_per_query), _pct(s.false_accept_rate)]
        cells += [_pct(s.false_escalate_rate), f"{s.delta_oracle_quality:+.3f}", vs]
        table.add_row(*cells, style=style)
    console.print(table)
    if hidden:
        console.print(
            f"[dim]not shown: {len(hidden)} single models without a price "
            f"({', '.join(_name(h) for h in hidden)}); they are in --json[/dim]"
        )
    _claim(console, report)
    _routing_tables(console, report)
    _models(console, report)
    console.print(f"replay ledger: {report.ledger}")
    for note in report.notes:
        console.print(f"[dim]note: {note}[/dim]")


def _claim(console: Console, report: EvalReport) -> None:
    """One line: the best strategy within the claim's cost share, and whether it reaches the
    reference's quality."""
    from tierwise.evaluation.report import CLAIM_SHARE

    best = report.best_within(CLAIM_SHARE)
    if best is None:
        if any(s.cost_share is not None for s in report.strategies):
            console.print(
                f"nothing runs at ≤ {CLAIM_SHARE:.0%} of {_name(report.reference)}'s cost"
            )
        return
    reaches = report.reaches_reference(best)
    diff = best.vs_reference_quality
    verdict = (
        ""
        if diff is None
        else f", Δ {diff.value:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}]: "
        + ("reaches" if reaches else "does not reach")
        + f" {_name(report.reference)}'s quality (95% CI of the difference "
        + ("includes 0)" if reaches else "below 0)")
    )
    spread = best.spread()
    folds = ""
    if spread is not None:
        folds = f"; folds {spread[0][0]:.3f}–{spread[0][1]:.3f}"
    console.print(
        f"[bold]best at ≤ {CLAIM_SHARE:.0%} of {_name(report.reference)}'s cost:[/bold] "
        f"{_name(best.name)}, quality {_quality(best)}{folds}, cost share "
        f"{_pct(best.cost_share)}{verdict}"
    )


def _routing_tables(console: Console, report: EvalReport) -> None:
    from rich.table import Table

    for section in report.routing:
        rt = Table(
            title=f"routing curves: {section.source}, {section.n} rows (weak "
            f"{_name(section.weak)} {section.weak_quality:.3f}, strong {_name(section.strong)} "
            f"{section.strong_quality:.3f})",
            title_justify="left",
        )
        for col in ("router", "APGR", "CPT(50%)", "CPT(80%)", "as run: strong share, quality"):
            rt.add_column(col)
        for r in section.routers:
            point = (
                f"{r.operating_point[0]:.1%}, {r.operating_point[1]:.3f}"
                if r.operating_point
                else ""
            )
            rt.add_row(
                r.name,
                "n/a" if r.apgr is None else f"{r.apgr:.3f}",
                _pct(r.cpt50),
                _pct(r.cpt80),
                point,
            )
        console.print(rt)


def _share(cost: float | None, top: float | None) -> float | None:
    return None if cost is None or not top else cost / top


def calibration_cells(cal: dict[str, Any], dev: dict[str, Any] | None) -> list[str]:
    """Target, figures on the rows the setting was chosen on, on rows it was not (verifier),
    on the fold's dev rows, and the dev point's distance from the target — quality as the gap
    to the top tier, cost as its share of the top tier's."""
    budget = (cal.get("objective") or {}).get("max_cost_share")
    top_q = cal.get("top_quality") or 0.0
    target_gap = cal["target_quality"] - top_q
    target = f"≤ {budget:.0%} cost" if budget is not None else f"{target_gap:+.3f} quality"
    chosen = f"{cal['quality'] - top_q:+.3f}, {_pct(_share(cal['cost'], cal['top_cost']))}"
    held = ""
    if cal.get("held_out_quality") is not None:
        share = _share(cal["held_out_cost"], cal["top_cost"])
        held = f"{cal['held_out_quality'] - top_q:+.3f}, {_pct(share)}"
    on_dev = distance = ""
    if dev and dev.get("quality") is not None and dev.get("top_quality") is not None:
        gap = dev["quality"] - dev["top_quality"]
        share = _share(dev.get("cost"), dev.get("top_cost"))
        on_dev = f"{gap:+.3f}, {_pct(share)}"
        if budget is None:
            distance = f"{gap - target_gap:+.3f} quality"
        elif share is not None:
            distance = f"{share - budget:+.1%} cost"
    return [target, chosen, held, on_dev, distance]


def _tier_index(verifier: dict[str, Any], setting: dict[str, Any]) -> int:
    """Where a per-source setting starts, as an index into its thresholds."""
    tiers: list[str] = verifier.get("tiers", [])
    return tiers.index(setting["start"]) if setting["start"] in tiers else 0


def _models(console: Console, report: EvalReport) -> None:
    """Per fold: the learned router's and the verifier's setting, calibration and dev point."""
    from rich.table import Table

    if not report.router:
        return
    table = Table(
        title=f"learned models ({report.router['source']}), calibrated by cross-validation inside "
        "their training rows; quality as the gap to the top tier, cost as its share",
        title_justify="left",
    )
    for col in (
        "fold",
        "model",
        "setting",
        "target",
        "where chosen",
        "not chosen on",
        "dev rows",
        "dev vs target",
    ):
        table.add_column(col)
    schemes: dict[str, list[str]] = {}
    budget: float | None = None
    for fold in report.router.get("folds", []):
        router = fold.get("router")
        if router and router.get("calibration"):
            cells = calibration_cells(router["calibration"], router.get("dev"))
            table.add_row(str(fold["fold"]), "router", f"margin {router['margin']:.3f}", *cells)
        ver = fold.get("verifier")
        if ver and ver.get("calibration"):
            cal = ver["calibration"]
            scheme = cal.get("scheme", "shared")
            if ver.get("settings"):
                setting = f"{scheme}: " + "; ".join(
                    f"{g} from {v['start']} at "
                    + "/".join(f"{t:.2f}" for t in v["thresholds"][_tier_index(ver, v) :])
                    for g, v in sorted(ver["settings"].items())
                )
            else:
                setting = f"{scheme}: " + "/".join(f"{t:.3f}" for t in ver["thresholds"])
            cells = calibration_cells(cal, ver.get("dev"))
            table.add_row(str(fold["fold"]), "verifier", setting, *cells)
            budget = (cal.get("objective") or {}).get("max_cost_share")
            for scheme in cal.get("schemes", []):
                schemes.setdefault(scheme["name"], []).append(
                    _at_budget(scheme) if budget is not None else f"{scheme['area']:.3f}"
                )
    console.print(table)
    if schemes:
        judged = (
            "held-out quality and cost share at the budget"
            if budget is not None
            else "mean held-out quality over 10–100% of the top tier's cost"
        )
        console.print(
            f"verifier schemes, {judged} (per fold; a richer one is kept only when it beats "
            "'shared' by more than 0.002): "
            + "; ".join(f"{name} {' '.join(v)}" for name, v in schemes.items())
        )
    tried = [(f["fold"], f["ladders"]) for f in report.router.get("folds", []) if f.get("ladders")]
    if tried:
        won = [lad for _, lad in tried if lad.get("kept")]
        chosen = "; ".join(
            f"{kind}: {' → '.join(m.rsplit('/', 1)[-1] for m in models)}"
            for kind, models in (won[0]["by_kind"].items() if won else [])
        )
        console.print(
            f"ladder per source, kept in {len(won)} of {len(tried)} folds (held-out on training "
            "folds, vs the verifier's scheme): "
            + "; ".join(
                f"fold {n} {_at_budget(lad['held_out'])} vs {_at_budget(lad['baseline'])}"
                + ("" if lad.get("kept") else " (not kept)")
                for n, lad in tried
            )
            + (f"; e.g. {chosen}" if chosen else "")
        )


def _at_budget(scheme: dict[str, Any]) -> str:
    """A scheme's held-out quality and cost share, as ``0.862@39%``."""
    share = scheme["cost"] / scheme["top_cost"] if scheme.get("top_cost") else 0.0
    return f"{scheme['quality']:.3f}@{share:.0%}"


class Progress:
    """Progress on stderr: a rich bar on a terminal; elsewhere (a pipe, a CI log) one line when
    a stage starts and one every *every* seconds while it runs, so a long run shows it is alive.
    """

    def __init__(
        self,
        every: float = PROGRESS_EVERY,
        *,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        terminal: bool | None = None,
    ) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
        from rich.progress import Progress as Bar

        self._stream = stream
        console = Console(stderr=True, file=stream)
        self.terminal = console.is_terminal if terminal is None else terminal
        self._bar = Bar(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=console,
            transient=True,
            disable=not self.terminal,
        )
        self._task: Any = None
        self._every = every
        self._clock = clock
        self._label = ""
        self._done = 0
        self._total = 0
        self._last = 0.0
        self._began = clock()

    def __enter__(self) -> Progress:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()
        if not self.terminal and exc[0] is None:
            self._line(f"done in {self._clock() - self._began:.0f} s")

    def _line(self, text: str) -> None:
        out = self._stream if self._stream is not None else sys.stderr
        print(f"tierwise eval: {text}", file=out, flush=True)

    def start(self, label: str, total: int) -> None:
        if self._task is not None:
            self._bar.remove_task(self._task)
        self._task = self._bar.add_task(label, total=total)
        self._label, self._done, self._total = label, 0, total
        self._last = self._clock()
        if not self.terminal:
            self._line(f"{label} (0/{total})" if total > 1 else label)

    def advance(self) -> None:
        if self._task is not None:
            self._bar.advance(self._task)
        self._done += 1
        if not self.terminal and self._total > 1:
            now = self._clock()
            if now - self._last >= self._every:
                self._last = now
                self._line(f"{self._label} {self._done}/{self._total}")


def register(app: typer.Typer) -> None:
    """Add ``tierwise eval`` to *app*."""

    @app.command("eval")
    def eval_(
        path: Path = typer.Argument(..., help="Folder of recorded multi-model results."),
        train: Path | None = typer.Option(
            None,
            "--train",
            help="Folder to train the learned router on (the same folder: its train split, or "
            "it is cut into --folds folds).",
        ),
        router: Path | None = typer.Option(
            None, "--router", help="Use a learned router saved with --save-router."
        ),
        save_router: Path | None = typer.Option(
            None, "--save-router", help="Save the trained learned router here (JSON)."
        ),
        tiers: str | None = typer.Option(
            None, "--tiers", help="Tier models, bottom first: cheap=MODEL,mid=MODEL,strong=MODEL."
        ),
        policy: Path | None = typer.Option(
            None, "--policy", "-p", help="Replay this policy's rules and validators too."
        ),
        ledger: str | None = typer.Option(
            None, "--ledger", help="Replay ledger URL or path (default: a temporary file)."
        ),
        limit: int | None = typer.Option(
            None, "--limit", min=1, help="Report on N rows (seeded sample); train on ≤ 4N."
        ),
        prices: Path | None = typer.Option(
            None, "--prices", help="JSON prices (USD per M tokens) for results without a cost."
        ),
        seed: int = typer.Option(0, "--seed", help="Seed for folds, samples and bootstrap."),
        folds: int = typer.Option(
            5,
            "--folds",
            min=1,
            help="Cut a folder that must be split into K folds, each reported by models trained "
            "on the others (1: one seeded 80/20 dev split, 5× faster).",
        ),
        tolerance: float = typer.Option(
            0.01,
            "--tolerance",
            min=0.0,
            max=1.0,
            help="Quality the learned router and verifier may give up vs the top tier "
            "(their calibration target).",
        ),
        max_cost_share: float | None = typer.Option(
            None,
            "--max-cost-share",
            min=0.0,
            max=1.0,
            help="Calibrate them for the best quality at ≤ this share of the top tier's cost "
            "instead of --tolerance (e.g. 0.4).",
        ),
        progress_every: float = typer.Option(
            PROGRESS_EVERY,
            "--progress-every",
            min=0.0,
            help="Seconds between progress lines when stderr is not a terminal.",
        ),
        plot: Path | None = typer.Option(None, "--plot", help="Write the cost–quality plot (PNG)."),
        out: Path | None = typer.Option(
            None, "--out", help="Write report.json and plot.png into this folder."
        ),
        as_json: bool = JsonOption,
    ) -> None:
        """Replay recorded results of several models through the real cascade; compare strategies.

        Reads any folder of RouterBench, RouteLLM, MMLU-Pro, RouterArena, WildBench or tierwise
        JSONL results (recognised from content), runs single models, the policy by kind,
        cascades with validators, a learned response verifier, a learned router and the oracle
        bounds, and prints quality (95% CI, and its range over folds), cost, cost share of the
        best single model, escalations, wasted spend, validator errors and the gap to the
        oracle; APGR/CPT for two-model sets. The learned models are calibrated by
        cross-validation inside their training rows, and each fold's dev point is compared with
        the calibration's target.

        Example: tierwise eval data/routerbench_subset --train data/routerbench_subset --plot rb.png
        """
        from tierwise.errors import PolicyError, TierwiseError
        from tierwise.evaluation.dataset import Ladder
        from tierwise.evaluation.report import evaluate

        ladder = None
        if tiers is not None:
            try:
                ladder = Ladder.parse(tiers)
            except ValueError as exc:
                fail(str(exc), code=EXIT_INVALID)
        pol = None
        if policy is not None:
            from tierwise.policy import load_policy

            try:
                pol = load_policy(policy)
            except PolicyError as exc:
                fail(str(exc), code=EXIT_INVALID)
        try:
            with Progress(progress_every) as bar:
                report = evaluate(
                    path,
                    train=train,
                    router_file=router,
                    save_router=save_router,
                    tiers=ladder,
                    policy=pol,
                    ledger_url=ledger,
                    limit=limit,
                    prices=prices,
                    seed=seed,
                    tolerance=tolerance,
                    max_cost_share=max_cost_share,
                    folds=folds,
                    progress=bar,
                )
        except TierwiseError as exc:
            from tierwise.errors import LedgerError

            fail(f"tierwise eval: {exc}", code=1 if isinstance(exc, LedgerError) else EXIT_INVALID)
        plots = [p for p in (plot, out / "plot.png" if out else None) if p is not None]
        for target in plots:
            from tierwise.evaluation.plot import plot_report

            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                plot_report(report, target)
            except (OSError, ImportError) as exc:
                fail(f"tierwise eval: cannot write the plot {target}: {exc}", code=1)
        data = report.as_dict()
        if out is not None:
            import json

            try:
                (out / "report.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
            except OSError as exc:
                fail(f"tierwise eval: cannot write {out / 'report.json'}: {exc.strerror}", code=1)
        if as_json:
            print_json(data)
        else:
            render(report)
        for target in plots:
            print(f"plot: {target}", file=sys.stderr)
