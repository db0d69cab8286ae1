"""`tierwise demo`: the offline end-to-end demo (the README's first command)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from tierwise.cli._common import (
    JsonOption,
    PolicyOption,
    fail,
    load_policy_or_exit,
    print_json,
)

if TYPE_CHECKING:
    from collections import Counter

    from rich.console import Console

    from tierwise.demo import DemoReport
    from tierwise.orchestration import SubtaskResult
    from tierwise.policy import Policy

SIMULATED = (
    "The models in this demo are SIMULATED by tierwise's fake upstream server on 127.0.0.1 "
    "(no API key, no network). Routing, validation, escalation, pricing and the ledger are real."
)


def _usd(amount: object) -> str:
    return f"${float(str(amount)):,.4f}"


def _projection(console: Console, policy: Policy) -> None:
    from decimal import Decimal

    from tierwise.cli.cost import print_projection
    from tierwise.pricing import PriceCatalog
    from tierwise.pricing.whatif import Workload, project

    catalog = PriceCatalog(policy.model.prices)
    tiers = {
        name: catalog.prices_for(policy.tier(name).model, policy.tier(name).provider)
        for name in policy.ladder
    }
    mixes = []
    if len(tiers) == 3:
        mixes.append(
            dict(
                zip(policy.ladder, (Decimal("0.8"), Decimal("0.15"), Decimal("0.05")), strict=True)
            )
        )
    workload = Workload(tasks_per_day=Decimal(500), input_tokens=2000, output_tokens=500)
    console.print(
        "\n[bold]2. What the articles' workload would cost on this policy's models[/bold] "
        "(catalog prices; `tierwise cost --help` for your own numbers)"
    )
    print_projection(project(workload, tiers, mixes))


def _tiers(counts: Counter[str], ladder: tuple[str, ...]) -> str:
    return ", ".join(f"{t} {counts[t]}" for t in ladder if counts[t])


def _report(console: Console, report: DemoReport, policy: Policy) -> None:
    from rich.table import Table

    console.print("\n[bold]4. What happened[/bold]")
    table = Table(title="per kind", title_justify="left")
    for col in ("kind", "tasks", "started on", "accepted on", "escalated", "cost", "on strongest"):
        table.add_column(col, justify="right" if col in ("tasks", "escalated") else "left")
    for kind, s in sorted(report.kinds.items(), key=lambda kv: -kv[1].tasks):
        table.add_row(
            kind,
            str(s.tasks),
            _tiers(s.start_tiers, policy.ladder),
            _tiers(s.final_tiers, policy.ladder),
            str(s.escalated),
            _usd(s.cost_usd),
            _usd(s.strong_cost_usd),
        )
    console.print(table)
    if report.reasons:
        why = Table(title="why tasks escalated", title_justify="left")
        for col in ("kind", "from tier", "failed check", "times"):
            why.add_column(col)
        for (kind, tier, reason), n in report.reasons.most_common():
            why.add_row(kind, tier, reason, str(n))
        console.print(why)
    rate, red = report.escalation_rate, report.red_line
    verdict = "[green]under[/green]" if rate <= red else "[red]over[/red]"
    console.print(
        f"\n[bold]{report.tasks}[/bold] tasks, {report.attempts} attempts. "
        f"tierwise spent [bold]{_usd(report.cost_usd)}[/bold]; the same tasks on the strongest "
        f"tier cost [bold]{_usd(report.strong_cost_usd)}[/bold] — "
        f"[bold green]{float(report.saving_ratio):.0%} saved[/bold green].\n"
        f"{report.escalated_tasks} tasks escalated ({rate:.1%}, {verdict} the fleet red line of "
        f"{red:.0%}); failed cheaper attempts cost {_usd(report.wasted_usd)} and are counted in "
        f"the total. Tasks that failed on every tier: {report.failed_tasks}."
    )


def _plan_demo(console: Console, policy: Policy, ledger_path: Path, as_json: bool) -> None:
    from tierwise.cli.plan import print_tree
    from tierwise.demo_plan import GOAL, progress_line, run_plan_demo

    if not as_json:
        console.print(f"\n[bold]Goal:[/bold] {GOAL}\n")

    def progress(result: SubtaskResult) -> None:
        if not as_json:
            console.print("  " + progress_line(result))

    try:
        report = run_plan_demo(policy, ledger_path, progress=progress)
    except ValueError as exc:
        fail(str(exc))
    if as_json:
        print_json(report.as_dict())
        return
    result = report.result
    console.print(f"\n[bold]Result[/bold] ({result.status}):\n{result.output}\n")
    print_tree(report.tree)
    console.print(
        f"\nThe cost tree: [bold]tierwise plan show {result.plan_id} --ledger "
        f"{ledger_path}[/bold]\n[yellow]Reminder: the models were simulated.[/yellow]"
    )


def register(app: typer.Typer) -> None:
    """Add ``tierwise demo`` to *app*."""

    @app.command("demo")
    def demo(
        tasks: int = typer.Option(200, "--tasks", "-n", min=1, help="How many tasks to run."),
        directory: Path = typer.Option(
            Path("tierwise-demo"),
            "--dir",
            help="Where to write the policy and the demo's ledger (replaced on each run).",
        ),
        seed: int = typer.Option(7, "--seed", help="Seed of the task generator."),
        plan: bool = typer.Option(
            False, "--plan", help="Run the plan-execute-review demo instead (six subtasks)."
        ),
        policy: Path | None = PolicyOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Run the offline end-to-end demo on simulated models.

        Writes the default policy, routes the example tasks of the articles tierwise grew from
        (listed in the README under "Background: the articles"), projects the cost of each
        strategy, then runs a mixed batch through the real cascade, SDKs and a SQLite ledger
        against a fake upstream whose cheap model fails on hard cases (by kind and content), and
        compares the bill with sending everything to the strongest tier.

        With --plan, a scripted planner splits one goal into six subtasks, scripted executors
        answer them and a scripted reviewer sends one up a tier; the plan's cost tree is
        printed from the ledger (`tierwise plan show`).

        Example: tierwise demo --tasks 500 --dir /tmp/tierwise-demo
        """
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        from tierwise.demo import demo_tasks, run_demo
        from tierwise.policy import default_policy_text
        from tierwise.routing import render_routing_table, routing_table

        console = Console(stderr=as_json)
        pol = load_policy_or_exit(policy)
        directory.mkdir(parents=True, exist_ok=True)
        policy_file = directory / "tierwise.toml"
        if policy is None:
            policy_file.write_text(default_policy_text())
        ledger_path = directory / "tierwise-ledger.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{ledger_path}{suffix}").unlink(missing_ok=True)

        if not as_json and plan:
            console.rule("[bold]tierwise offline demo: plan-execute-review")
            console.print(f"[yellow]{SIMULATED}[/yellow]")
        elif not as_json:
            console.rule("[bold]tierwise offline demo")
            console.print(f"[yellow]{SIMULATED}[/yellow]")
            where = policy_file if policy is None else policy
            console.print(
                f"\n[bold]1. Where the articles' example tasks go[/bold] (policy: {where})"
            )
            console.print(render_routing_table(routing_table(pol)))
            _projection(console, pol)
            console.print(
                f"\n[bold]3. Running {tasks} tasks through the cascade[/bold], then the same "
                "tasks on the strongest tier for comparison"
            )
        if plan:
            _plan_demo(console, pol, ledger_path, as_json)
            return
        batch = demo_tasks(tasks, seed=seed)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=console,
            disable=as_json,
            transient=False,
        ) as bar:
            job = bar.add_task("tasks", total=2 * len(batch))
            report = run_demo(pol, batch, ledger_path, progress=lambda n: bar.advance(job, n))
        if as_json:
            print_json(report.as_dict())
            return
        _report(console, report, pol)
        console.print(
            f"\nEvery attempt is in the ledger: [bold]tierwise ledger stats --ledger "
            f"{ledger_path}[/bold]\n[yellow]Reminder: the models were simulated.[/yellow]"
        )
