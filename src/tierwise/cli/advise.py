"""`tierwise advise`: does routing pay here? Verdicts with evidence and a policy change each."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from tierwise.cli._common import (
    EXIT_INVALID,
    JsonOption,
    PolicyOption,
    fail,
    load_policy_or_exit,
    open_ledger_or_exit,
    print_json,
)
from tierwise.cli.ledger import LedgerOption

if TYPE_CHECKING:
    from tierwise.reports.advisor import Advice


def render_advice(advice: Advice) -> str:
    """The advice as text: the overall verdict, then each verdict with evidence and change."""
    from tierwise.reports.render import money

    lines = []
    if advice.source == "ledger" and advice.since is not None and advice.until is not None:
        lines.append(
            f"from the ledger: tasks created {advice.since:%Y-%m-%d %H:%M} to "
            f"{advice.until:%Y-%m-%d %H:%M} UTC ({advice.days:g} "
            f"day{'' if advice.days == 1 else 's'} with history): "
            f"{advice.tasks:,} tasks, {money(advice.spend_usd)} spent, "
            f"{money(advice.monthly_usd)} a month"
        )
    else:
        lines.append(
            f"from a described workload: {advice.tasks_per_month:,} tasks and "
            f"{money(advice.monthly_usd)} a month"
        )
    lines += [f"note: {n}" for n in advice.notes]
    lines += ["", advice.overall.upper() if advice.pays is False else advice.overall, ""]
    mark = {True: "+", False: "-", None: "?"}
    for v in advice.verdicts:
        about = f"{v.topic}" + (f" [{v.kind}]" if v.kind else "")
        lines.append(f"{mark[v.pays]} {about}: {v.verdict}")
        lines.append(f"    {v.evidence}")
        if v.suggestion:
            lines += [f"    | {line}" for line in v.suggestion.splitlines()]
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    """Add ``tierwise advise`` to *app*."""
    from tierwise.cli.cost import AT_HELP

    @app.command(
        "advise",
        short_help="Does routing pay here? Verdicts with evidence and a policy change each.",
    )
    def advise(
        since: str | None = typer.Option(
            None, "--since", help="Start of the ledger window (date or age). Default: 30d."
        ),
        until: str | None = typer.Option(None, "--until", help="End of the ledger window."),
        workload: Path | None = typer.Option(
            None,
            "--workload",
            help="TOML listing each kind's share, tokens and validator (see the help). With a "
            "ledger it only adds same_answer / quality_first per kind.",
        ),
        tasks_per_day: str | None = typer.Option(
            None, "--tasks-per-day", help="No history: tasks per day (needs --workload)."
        ),
        input_tokens: int = typer.Option(2000, "--input-tokens", min=0, help="Input per task."),
        output_tokens: int = typer.Option(500, "--output-tokens", min=0, help="Output per task."),
        cache_read_share: str = typer.Option(
            "0", "--cache-read-share", help="Share of input tokens read from cache (0–1)."
        ),
        tier: list[str] = typer.Option([], "--tier", help="TIER=MODEL, as in `tierwise cost`."),
        price: list[str] = typer.Option(
            [], "--price", help="TIER=INPUT:OUTPUT[:CACHE_READ] USD/MTok, as in `tierwise cost`."
        ),
        days_per_month: str = typer.Option("30", "--days-per-month", help="Days in a month."),
        batch: bool = typer.Option(False, "--batch", help="Apply the 50% batch discount."),
        at: str | None = typer.Option(None, "--at", help=AT_HELP),
        ledger: str | None = LedgerOption,
        policy: Path | None = PolicyOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Does routing pay here? The reasons of the articles tierwise grew from (listed in the
        README under "Background: the articles"), each with its evidence and the policy change
        it suggests: monthly spend (below about $500 a month tiering rarely repays its
        upkeep), volume, how varied the kinds are, whether each kind has a cheap quality signal
        (a validator that is not itself a model call), kinds that must give everyone the same
        answer (pin them), kinds where quality dominates cost (pin them to the top), and each
        cascade's break-even (starting cheap pays only while the cheap tier's failure rate
        stays below 1 − cheap cost ÷ next tier's cost).

        From the ledger by default. With no history, describe the workload with the flags of
        `tierwise cost` and a file listing each kind:

            \\[kinds.extract]
            share = 0.7
            input_tokens = 1500      # default: --input-tokens
            validator = "json_schema" # a validator type, "none" or "model"
            failure_rate = 0.05      # on its start_tier (default: the bottom), if known
            \\[kinds.contract_review]
            share = 0.3
            same_answer = true       # and/or quality_first = true

        Example: tierwise advise --tasks-per-day 500 --workload kinds.toml
        """
        from tierwise.reports.workload import WorkloadError, load_workload

        pol = load_policy_or_exit(policy)
        if tasks_per_day is not None:
            if workload is None:
                fail("--tasks-per-day describes a workload: give --workload FILE listing its kinds")
            data = _from_workload(
                workload, tasks_per_day, input_tokens, output_tokens, cache_read_share,
                tier, price, days_per_month, batch, at, policy,
            )  # fmt: skip
        else:
            from tierwise.cli.report import when_or_exit
            from tierwise.reports.advisor import advise as advise_ledger

            hints = None
            if workload is not None:
                try:
                    hints = load_workload(workload, ladder=tuple(pol.ladder), shares=False)
                except WorkloadError as exc:
                    fail(str(exc))
            start, end = when_or_exit(since, "--since"), when_or_exit(until, "--until")
            with open_ledger_or_exit(ledger) as book:
                try:
                    data = advise_ledger(book, pol, since=start, until=end, hints=hints)
                except ValueError as exc:
                    fail(str(exc))
        if as_json:
            print_json(data.as_dict())
            return
        typer.echo(render_advice(data))


def _from_workload(
    workload: Path,
    tasks_per_day: str,
    input_tokens: int,
    output_tokens: int,
    cache_read_share: str,
    tier: list[str],
    price: list[str],
    days_per_month: str,
    batch: bool,
    at: str | None,
    policy: Path | None,
) -> Advice:
    """The advice for a workload given on the command line (exits 2 on bad input)."""
    from tierwise.cli.cost import parse_at, resolve_tiers, workload_from_options
    from tierwise.reports.advisor import advise_workload
    from tierwise.reports.workload import WorkloadError, load_workload

    described = workload_from_options(
        tasks_per_day, input_tokens, output_tokens, cache_read_share, days_per_month, batch
    )
    tiers = resolve_tiers(
        tier_models=tier, explicit_prices=price, mix_tiers=[], policy_path=policy, at=parse_at(at)
    )
    if len(tiers) < 2:
        fail(f"a cascade needs two tiers or more; got {', '.join(tiers)}", code=EXIT_INVALID)
    try:
        kinds = load_workload(workload, ladder=tuple(tiers))
    except WorkloadError as exc:
        fail(str(exc))
    return advise_workload(described, tiers, kinds)
