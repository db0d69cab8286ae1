"""`tierwise eval`: replay recorded multi-model results through the cascade; compare strategies."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from tierwise.cli._common import EXIT_INVALID, JsonOption, fail, print_json

if TYPE_CHECKING:
    from tierwise.evaluation.metrics import Summary
    from tierwise.evaluation.report import EvalReport


def _usd(value: float | None) -> str:
    return "n/a" if value is None else f"${value:.6f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _quality(s: Summary) -> str:
    half = (s.quality.high - s.quality.low) / 2
    return f"{s.quality.value:.3f} ± {half:.3f}"


def _name(name: str) -> str:
    return name.rsplit("/", 1)[-1] if "/" in name and " " not in name else name


def render(report: EvalReport) -> None:
    """Print the report's tables on stdout."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160)
    d = report.dataset
    console.print(
        f"[bold]{d['name']}[/bold] {d['path']}: {d['rows']} rows, {len(d['models'])} models; "
        f"reported on {report.evaluated_on}"
    )
    console.print(f"ladder: {report.ladder.format()}")
    table = Table(
        title=f"strategies (reference for cost share and wins: {report.reference})",
        title_justify="left",
    )
    for col in (
        "strategy",
        "quality (95% CI)",
        "$/query",
        "cost share",
        "escalated",
        "wasted $/q",
        "false acc.",
        "false esc.",
        "Δ oracle",
        "vs reference",
    ):
        table.add_column(col, overflow="fold")
    for s in report.strategies:
        style = "dim" if s.group == "single" else "green" if s.group == "bound" else None
        vs = ""
        if s.vs_reference_quality is not None:
            vs = f"{s.vs_reference_quality.value:+.3f}" + (f" {s.win}" if s.win else "")
        table.add_row(
            _name(s.name),
            _quality(s),
            _usd(s.cost_per_query),
            _pct(s.cost_share),
            _pct(s.escalation_rate),
            _usd(s.wasted_per_query),
            _pct(s.false_accept_rate),
            _pct(s.false_escalate_rate),
            f"{s.delta_oracle_quality:+.3f}",
            vs,
            style=style,
        )
    console.print(table)
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
    if report.router:
        cal = report.router.get("calibration") or {}
        console.print(
            f"learned router: {report.router['source']}, {report.router['features']} features, "
            f"margin {report.router['margin']:.3f}"
            + (
                f" (calibrated on {cal['rows']} training rows: quality {cal['quality']:.3f}, "
                f"target {cal['target_quality']:.3f})"
                if cal
                else ""
            )
        )
        ver = report.router.get("verifier")
        if ver:
            vcal = ver.get("calibration") or {}
            console.print(
                "response verifier: thresholds "
                + "/".join(f"{t:.3f}" for t in ver["thresholds"])
                + (
                    f" (calibrated on {vcal['rows']} training rows: quality {vcal['quality']:.3f},"
                    f" target {vcal['target_quality']:.3f})"
                    if vcal
                    else ""
                )
            )
    console.print(f"replay ledger: {report.ledger}")
    for note in report.notes:
        console.print(f"[dim]note: {note}[/dim]")


class _Bar:
    """A rich progress bar on stderr (nothing when stderr is not a terminal)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        console = Console(stderr=True)
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        )
        self._task: Any = None

    def __enter__(self) -> _Bar:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def start(self, label: str, total: int) -> None:
        if self._task is not None:
            self._progress.remove_task(self._task)
        self._task = self._progress.add_task(label, total=total)

    def advance(self) -> None:
        if self._task is not None:
            self._progress.advance(self._task)


def register(app: typer.Typer) -> None:
    """Add ``tierwise eval`` to *app*."""

    @app.command("eval")
    def eval_(
        path: Path = typer.Argument(..., help="Folder of recorded multi-model results."),
        train: Path | None = typer.Option(
            None,
            "--train",
            help="Folder to train the learned router on (the same folder: its train split, or "
            "a seeded dev split is held out).",
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
        seed: int = typer.Option(0, "--seed", help="Seed for splits, samples and bootstrap."),
        tolerance: float = typer.Option(
            0.01,
            "--tolerance",
            min=0.0,
            max=1.0,
            help="Quality the learned router may give up vs the top tier (calibration).",
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
        bounds, and prints quality (95% CI), cost, cost share of the best single model,
        escalations, wasted spend, validator errors and the gap to the oracle; APGR/CPT for
        two-model sets.

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
            with _Bar() as bar:
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
