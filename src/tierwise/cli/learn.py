"""`tierwise learn`: how routing is doing (``status``), and the learner's proposals and changes
(``propose``, ``apply``, ``revert``, ``history``, ``set``: :mod:`tierwise.cli.learn_changes`).

Each subcommand is a function that adds itself to the group (:data:`SUBCOMMANDS`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from tierwise.cli._common import (
    EXIT_INVALID,
    EXIT_OK,
    JsonOption,
    PolicyOption,
    fail,
    load_policy_or_exit,
    open_ledger_or_exit,
    print_json,
)
from tierwise.cli.learn_changes import add_apply, add_history, add_propose, add_revert, add_set
from tierwise.cli.ledger import LedgerOption, parse_age, parse_when

if TYPE_CHECKING:
    from tierwise.analytics import Analytics, GroupStats, Latency, Rate, RedLine
    from tierwise.orchestration.calibration import Calibration

#: ``learn status`` exits 1 when the fleet's escalation rate over the last day is above the line.
EXIT_ABOVE_RED_LINE = 1

SinceOption = typer.Option(
    None, "--since", help="Start of the window: a UTC date/time (2025-06-01) or an age (14d)."
)
UntilOption = typer.Option(None, "--until", help="End of the window (default: now).")
WindowOption = typer.Option(
    "14d", "--window", help="Length of the window when --since is not given (14d, 12h, 2w)."
)


def window_or_exit(
    since: str | None, until: str | None, window: str
) -> tuple[datetime | None, datetime | None, timedelta]:
    """The parsed ``--since``/``--until``/``--window``, or exit 2 with the offending flag."""
    try:
        length = parse_age(window)
    except ValueError as exc:
        fail(f"--window: {exc}", code=EXIT_INVALID)
    parsed: list[datetime | None] = []
    for flag, text in (("--since", since), ("--until", until)):
        try:
            parsed.append(None if text is None else parse_when(text))
        except ValueError as exc:
            fail(f"{flag}: {exc}", code=EXIT_INVALID)
    return parsed[0], parsed[1], length


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.1%}"


def _rate(rate: Rate) -> str:
    """``25.0% (18–33%)``: the rate and its 95% interval."""
    interval = rate.interval
    if rate.value is None or interval is None:
        return "-"
    return f"{rate.value:.1%} ({interval[0] * 100:.0f}–{interval[1] * 100:.0f}%)"


def _secs(latency: Latency) -> str:
    if not latency.tasks or latency.p50_s is None or latency.p95_s is None:
        return "-"
    return f"{latency.p50_s:.1f}/{latency.p95_s:.1f}s"


def _usd(value: Any) -> str:
    if value is None:
        return "-"
    return f"${value:,.2f}" if abs(value) >= 1 else f"${float(value):.4g}"


_STATUS = {"small_sample": "few tasks"}


def _when(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC")


def red_line_lines(line: RedLine) -> list[str]:
    """The red line's verdict and, above it, the kinds that contribute most."""
    rate = line.rate
    if rate.value is None:
        return [
            f"red line {line.threshold:.1%}: no resolved live tasks between {_when(line.since)} "
            f"and {_when(line.until)}"
        ]
    verdict = "ABOVE the red line" if line.above else "below the red line"
    lines = [
        f"fleet escalation {_when(line.since)} → {_when(line.until)}: {_rate(rate)} of "
        f"{line.resolved} resolved tasks — {verdict} of {line.threshold:.1%}"
    ]
    if line.above:
        lines.append("kinds contributing most (share of the excess over the line):")
        for c in line.contributors:
            if c.excess <= 0:
                continue
            share = "-" if c.share is None else f"{c.share:.0%}"
            lines.append(
                f"  {c.kind}: {c.escalated} of {c.resolved} escalated ({_pct(c.rate.value)}), "
                f"{c.excess:.1f} over its allowance, {share} of the excess"
            )
    return lines


def _reasons(group: GroupStats) -> str:
    return ", ".join(f"{r} {n}" for r, n in list(group.reasons.items())[:3]) or "-"


_SHORT = {"needed_frontier": "frontier", "cheaper_would_do": "cheaper"}


def _flags(group: GroupStats) -> str:
    return ", ".join(f"{_SHORT.get(f, f)} {n}" for f, n in group.flags.items()) or "-"


def flag_lines(report: Analytics) -> list[str]:
    """People's flags per kind and the tier that produced the flagged outputs."""
    lines = []
    for f in report.flags:
        parts = []
        if f.wrong:
            parts.append(f"{f.wrong} wrong (late failures)")
        if f.needed_frontier:
            what = "confirmed the top tier" if f.top else "under-routed"
            parts.append(f"{f.needed_frontier} needed the frontier ({what})")
        if f.cheaper_would_do:
            parts.append(f"{f.cheaper_would_do} cheaper would do (over-routed)")
        lines.append(f"  {f.kind} answered on {f.tier}: {f.accepted} accepted; {', '.join(parts)}")
    return ["people's flags:", *lines] if lines else []


def print_status(report: Analytics) -> None:
    """The analytics as tables, the red line first."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for text in red_line_lines(report.red_line):
        console.print(text, markup=False, highlight=False)
    console.print(
        f"\nwindow {_when(report.since)} → {_when(report.until)}, per kind and starting tier:",
        markup=False,
        highlight=False,
    )
    if not report.groups:
        console.print("no live tasks in this window", markup=False)
    else:
        quality = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
        money = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
        for table in (quality, money):
            table.add_column("kind", overflow="fold")
            table.add_column("start", overflow="fold")
        quality.add_column("tasks", justify="right")
        quality.add_column("1st try", justify="right", no_wrap=True)
        quality.add_column("escalated (95% CI)", justify="right", no_wrap=True)
        quality.add_column("why", overflow="fold")
        quality.add_column("status", overflow="fold")
        money.add_column("$/accepted", justify="right", no_wrap=True)
        money.add_column("wasted", justify="right", no_wrap=True)
        money.add_column("direct p50/95", justify="right", no_wrap=True)
        money.add_column("escal. p50/95", justify="right", no_wrap=True)
        money.add_column("flags", overflow="fold")
        for g in report.groups:
            t = g.totals
            quality.add_row(
                g.kind,
                g.start_tier,
                str(t.tasks),
                _pct(t.first_try_pass.value),
                _rate(t.escalation),
                _reasons(g),
                _STATUS.get(g.status, g.status),
            )
            money.add_row(
                g.kind,
                g.start_tier,
                _usd(t.cost_per_accepted_usd),
                _usd(t.wasted_usd),
                _secs(t.latency_direct),
                _secs(t.latency_escalated),
                _flags(g),
            )
        console.print(quality)
        console.print(money)
    f = report.fleet
    console.print(
        f"fleet: {f.tasks} tasks, {f.resolved} resolved, escalation {_rate(f.escalation)}, "
        f"first try {_pct(f.first_try_pass.value)}, spent {_usd(f.cost_usd)} "
        f"({_usd(f.cost_per_accepted_usd)} per accepted output), thrown away "
        f"{_usd(f.wasted_usd)}; latency direct {_secs(f.latency_direct)}, escalated "
        f"{_secs(f.latency_escalated)}",
        markup=False,
        highlight=False,
    )
    notes = flag_lines(report)
    if f.unresolved:
        parts = ", ".join(f"{n} {o}" for o, n in f.unresolved.items())
        notes.append(f"unresolved (outside the rate): {parts}")
    unmeasured = [k.kind for k in report.kinds if k.status == "unmeasured"]
    if unmeasured:
        notes.append(
            f"unmeasured (no validator judges their outputs, so they never fail): "
            f"{', '.join(unmeasured)}"
        )
    if report.passthrough.tasks:
        p = report.passthrough
        notes.append(f"concrete-model calls (not on the ladder): {p.tasks}, {_usd(p.cost_usd)}")
    for role, line in report.excluded.items():
        notes.append(f"{role} tasks (excluded): {line.tasks}, {_usd(line.cost_usd)}")
    for name, spent in (("validator", f.validator_usd), ("probe", f.probe_usd)):
        if spent:
            notes.append(f"{name} calls inside live tasks: {_usd(spent)}")
    if f.shadow_usd:
        notes.append(f"shadow calls inside live tasks: {_usd(f.shadow_usd)}")
    if report.pruned_before is not None and report.pruned_before > report.since.date():
        notes.append(
            f"rows before {report.pruned_before} were pruned; their days are not in these figures"
        )
    for note in notes:
        console.print(note, markup=False, highlight=False)


def print_calibration(calibration: Calibration) -> None:
    """Planner calibration in a few lines: per assigned tier, and what stands out."""
    parts = [
        f"{t.tier} {t.failed} of {t.subtasks} failed"
        + (f" ({t.failure_rate:.0%})" if t.failure_rate is not None else "")
        for t in calibration.tiers
        if t.subtasks
    ]
    typer.echo("planner calibration, by assigned tier: " + "; ".join(parts))
    for finding in calibration.findings:
        typer.echo(f"  {finding.text()}")


def add_status(group: typer.Typer) -> None:
    """``tierwise learn status``."""

    @group.command("status")
    def status(
        since: str | None = SinceOption,
        until: str | None = UntilOption,
        window: str = WindowOption,
        policy: Path | None = PolicyOption,
        ledger: str | None = LedgerOption,
        as_json: bool = JsonOption,
    ) -> None:
        """How routing is doing, per kind and starting tier, and the fleet against its red line.

        Over the window (default the last 14 days, UTC): tasks, first-try pass rate, escalation
        rate with a 95% interval and its reasons, cost per accepted output, money spent on
        attempts that were thrown away, latency of direct against escalated tasks, people's
        flags, kinds no validator measures, and how the planner's tier assignments turned out
        (when plans ran). Escalation: a task whose accepted output came
        from a tier above the one it started on, or that failed on every tier.

        Exits 1 when the fleet's escalation rate over the day before --until is above the
        policy's \\[fleet] escalation_red_line (for cron and CI), 0 otherwise, 2 on bad input.

        Example: tierwise learn status --window 7d --json
        """
        from tierwise.analytics import Settings, analyze
        from tierwise.orchestration import planner_calibration

        start, end, length = window_or_exit(since, until, window)
        pol = load_policy_or_exit(policy)
        settings = Settings.from_policy(pol)
        with open_ledger_or_exit(ledger) as book:
            try:
                report = analyze(book, settings, since=start, until=end, window=length)
            except ValueError as exc:
                fail(f"--since/--until: {exc}", code=EXIT_INVALID)
            rows = book.calibration_rows(since=report.since, until=report.until)
        calibration = planner_calibration(rows, pol.ladder) if rows else None
        if as_json:
            data = report.as_dict()
            data["planner_calibration"] = None if calibration is None else calibration.as_dict()
            print_json(data)
        else:
            print_status(report)
            if calibration is not None:
                print_calibration(calibration)
        raise typer.Exit(EXIT_ABOVE_RED_LINE if report.red_line.above else EXIT_OK)


#: Every ``learn`` subcommand, in help order; later ones append their ``add_…`` function.
SUBCOMMANDS: list[Callable[[typer.Typer], None]] = [
    add_status,
    add_propose,
    add_apply,
    add_revert,
    add_history,
    add_set,
]


def register(app: typer.Typer) -> None:
    """Add ``tierwise learn`` and its subcommands to *app*."""
    group = typer.Typer(
        help="How routing is doing, and the learner: proposals, applied changes, overrides.",
        no_args_is_help=True,
    )
    app.add_typer(group, name="learn")
    for add in SUBCOMMANDS:
        add(group)
