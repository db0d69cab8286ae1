"""`tierwise plan`: run a goal as plan-execute-review, show a plan's cost tree, calibrate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from tierwise.cli._common import (
    JsonOption,
    PolicyOption,
    fail,
    load_learned_or_exit,
    load_policy_or_exit,
    print_json,
)

if TYPE_CHECKING:
    from tierwise.ledger import Ledger
    from tierwise.orchestration import PlanNode, PlanTree, SubtaskResult

LEDGER_HELP = "Ledger URL or path. Default: $TIERWISE_LEDGER, else ./tierwise-ledger.db."
LedgerOption = typer.Option(None, "--ledger", "-l", help=LEDGER_HELP, show_default=False)


def _open(url: str | None, *, create: bool) -> Ledger:
    from tierwise.errors import LedgerError
    from tierwise.ledger import default_ledger_url, ledger_url, open_ledger

    try:
        return open_ledger(ledger_url(url) if url else default_ledger_url(), create=create)
    except LedgerError as exc:
        fail(str(exc))


def _usd(text: str | None) -> Decimal | None:
    if text is None:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        fail(f"expected an amount in USD such as 0.50, got {text!r}")
    if not value.is_finite() or value <= 0:
        fail(f"expected a positive amount in USD, got {text!r}")
    return value


def _resolve(book: Ledger, plan_id: str) -> str:
    """The full id of the plan *plan_id* names (a unique prefix will do)."""
    if book.plan(plan_id) is not None:
        return plan_id
    found = book.plan_ids(plan_id) if len(plan_id) >= 4 else []
    if len(found) == 1:
        return found[0]
    if found:
        fail(f"plan id {plan_id!r} is ambiguous: {', '.join(found)}")
    fail(f"no plan {plan_id!r} in the ledger {book.url}")


def _node_line(node: PlanNode) -> str:
    from rich.markup import escape

    where = " ".join(x for x in (node.tier or "", node.model or "") if x)
    outcome = f" [{node.outcome}]" if node.outcome else ""
    return (
        f"{escape(node.label)}  {escape(where)}{escape(outcome)}  "
        f"${node.cost_usd:.6f}  {node.tokens:,} tok"
    )


def print_tree(tree: PlanTree) -> None:
    """Print a plan's cost tree (stdout), with the ledger's total and the labelled estimate."""
    from rich.console import Console
    from rich.tree import Tree

    def add(branch: Tree, node: PlanNode) -> None:
        for child in node.children:
            if node.kind == "call" and len(node.children) == 1:
                continue  # one attempt: the call's line says it all
            if node.kind == "planner" and len(node.children) == 1:
                add(branch, child)  # one planner call: its attempts hang under "planner"
                continue
            add(branch.add(_node_line(child)), child)

    root = Tree(_node_line(tree.root))
    add(root, tree.root)
    console = Console()
    console.print(root)
    match = "=" if tree.root.cost_usd == tree.ledger_total_usd else "!="
    console.print(
        f"total ${tree.root.cost_usd:.9f} {match} the ledger's sum for this plan "
        f"${tree.ledger_total_usd:.9f}"
    )
    if tree.planner_tier_estimate_usd is not None:
        console.print(
            f"ESTIMATE on the planner's tier: ${tree.planner_tier_estimate_usd:.6f} "
            f"({tree.estimate_note})"
        )
    else:
        console.print(tree.estimate_note)


def _progress_line(result: SubtaskResult) -> str:
    where = f" on {result.tier}" if result.tier else ""
    up = f", sent up {result.reviewer_climbs}x by the reviewer" if result.reviewer_climbs else ""
    return f"  {result.subtask.id} {result.subtask.kind}: {result.outcome}{where}{up}"


def register(app: typer.Typer) -> None:
    """Add ``tierwise plan run|show|calibration|flag|schema`` to *app*."""
    group = typer.Typer(
        help="Plan-execute-review: a strong tier plans, cheap tiers execute, a reviewer gates.",
        no_args_is_help=True,
    )
    app.add_typer(group, name="plan")

    @group.command("run")
    def run(
        goal_file: Path = typer.Argument(..., help="A file with the goal ('-' for stdin)."),
        planner_tier: str | None = typer.Option(None, "--planner-tier", help="Who plans."),
        reviewer_tier: str | None = typer.Option(None, "--reviewer-tier", help="Who reviews."),
        no_review: bool = typer.Option(False, "--no-review", help="Validators only."),
        budget: str | None = typer.Option(None, "--budget-usd", help="Budget for the plan."),
        subtask_budget: str | None = typer.Option(
            None, "--subtask-budget-usd", help="Budget for each subtask."
        ),
        ledger: str | None = LedgerOption,
        policy: Path | None = PolicyOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Run a goal as plan-execute-review and print the reviewed result.

        The planner tier (default: the top) splits the goal into subtasks with a kind and an
        assigned tier each; subtasks run through the cascade from their tier, independent ones
        at once; the reviewer accepts each output or sends it one tier up. Progress and the
        plan id go to stderr, the result to stdout; `tierwise plan show PLAN_ID` prints the
        cost tree.

        Example: tierwise plan run goal.txt --budget-usd 2 --json
        """
        import sys

        from tierwise.cascade import Cascade
        from tierwise.errors import TierwiseError
        from tierwise.orchestration import PlanRunner

        try:
            goal = sys.stdin.read() if str(goal_file) == "-" else goal_file.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"cannot read {goal_file}: {getattr(exc, 'strerror', None) or exc}")
        if not goal.strip():
            fail(f"{goal_file} holds no goal (it is empty)")
        pol = load_policy_or_exit(policy)
        for name in (planner_tier, reviewer_tier):
            if name is not None and name not in pol.ladder:
                fail(f"unknown tier {name!r}; the ladder is {', '.join(pol.ladder)}")
        report = (
            (lambda r: None) if as_json else (lambda r: typer.echo(_progress_line(r), err=True))
        )
        try:
            learned = load_learned_or_exit(pol)
            with (
                _open(ledger, create=True) as book,
                Cascade(pol, ledger=book, learned=learned) as cascade,
            ):
                runner = PlanRunner(
                    cascade,
                    planner_tier=planner_tier,
                    reviewer_tier=reviewer_tier,
                    review=False if no_review else None,
                    budget_usd=_usd(budget),
                    subtask_budget_usd=_usd(subtask_budget),
                )
                if not as_json:
                    typer.echo(f"planning on {runner.planner_tier} …", err=True)
                result = runner.run(goal, progress=report)
        except TierwiseError as exc:
            fail(str(exc))
        if as_json:
            print_json(result.as_dict())
        else:
            if result.output is not None:
                typer.echo(result.output)
            typer.echo(
                f"plan {result.plan_id}: {result.status}; {len(result.subtasks)} subtasks, "
                f"{len(result.attempts)} attempts, ${result.cost_usd:.6f}"
                + (f"; {result.failure}" if result.failure else ""),
                err=True,
            )
        if result.status != "accepted":
            raise typer.Exit(1)

    @group.command("show")
    def show(
        plan_id: str = typer.Argument(..., help="The plan's id (a unique prefix will do)."),
        ledger: str | None = LedgerOption,
        policy: Path | None = PolicyOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Print a plan's cost tree: planner, subtasks, calls and attempts with their cost,
        tokens, tier and outcome.

        The total is summed from the ledger's rows and checked against the ledger's own sum for
        the plan. Beside it, an estimate (labelled) of the same subtasks on the planner's tier,
        priced with the policy's catalog and [prices].

        Example: tierwise plan show 3f2a9c --json
        """
        from tierwise.orchestration import plan_tree
        from tierwise.pricing import PriceCatalog

        pol = load_policy_or_exit(policy)
        with _open(ledger, create=False) as book:
            tree = plan_tree(book, _resolve(book, plan_id), PriceCatalog(pol.model.prices))
        if as_json:
            print_json(tree.as_dict())
            return
        print_tree(tree)

    @group.command("calibration")
    def calibration(
        days: int | None = typer.Option(None, "--days", min=1, help="Only the last N days."),
        min_sample: int = typer.Option(
            20, "--min-sample", min=2, help="Subtasks a tier needs before it is compared."
        ),
        ledger: str | None = LedgerOption,
        policy: Path | None = PolicyOption,
        as_json: bool = JsonOption,
    ) -> None:
        """How the planner's tier assignments turned out, per assigned tier.

        Counts subtasks accepted as assigned, escalated by validators or the reviewer
        (under-assignment), flagged wrong later (`tierwise plan flag`), or passed on a cheaper
        tier when probed (over-assignment), and says when one assigned tier fails
        significantly more often than another.

        Example: tierwise plan calibration --days 14 --json
        """
        from rich.console import Console
        from rich.table import Table

        from tierwise.orchestration import planner_calibration

        pol = load_policy_or_exit(policy)
        since = datetime.now(UTC) - timedelta(days=days) if days else None
        with _open(ledger, create=False) as book:
            rows = book.calibration_rows(since=since)
        result = planner_calibration(rows, pol.ladder, min_sample=min_sample)
        if as_json:
            print_json(result.as_dict())
            return
        table = Table(title="planner calibration, by assigned tier", title_justify="left")
        columns = ("assigned", "subtasks", "as assigned", "up: validators", "up: reviewer",
                   "not accepted", "flagged", "cheaper passed", "failure rate")  # fmt: skip
        for col in columns:
            table.add_column(col, justify="left" if col == "assigned" else "right")
        for t in result.tiers:
            counts = (
                t.subtasks,
                t.accepted_as_assigned,
                t.escalated_by_validators,
                t.escalated_by_reviewer,
                t.not_accepted,
                t.flagged_wrong,
                t.passed_cheaper_when_probed,
            )
            rate = "-" if t.failure_rate is None else f"{t.failure_rate:.0%}"
            table.add_row(t.tier, *(str(v) for v in counts), rate)
        console = Console()
        console.print(table)
        for finding in result.findings:
            console.print(f"[yellow]{finding.text()}[/yellow]")
        if not result.findings:
            console.print(
                f"no assigned tier fails significantly more than another (tiers with at least "
                f"{min_sample} subtasks compared)"
            )

    @group.command("flag")
    def flag(
        plan_id: str = typer.Argument(..., help="The plan's id (a unique prefix will do)."),
        subtask_id: str = typer.Argument(..., help="The subtask whose output was wrong."),
        reason: str = typer.Option(..., "--reason", help="What went wrong downstream."),
        ledger: str | None = LedgerOption,
    ) -> None:
        """Mark a subtask's accepted output as wrong after the fact (a downstream failure);
        planner calibration counts it against its assigned tier.

        Example: tierwise plan flag 3f2a9c s3 --reason "segments were mislabelled"
        """
        with _open(ledger, create=False) as book:
            full = _resolve(book, plan_id)
            if not book.flag_subtask(full, subtask_id, reason):
                known = ", ".join(s["subtask_id"] for s in book.plan_subtasks(full))
                fail(f"plan {full} has no subtask {subtask_id!r}; its subtasks: {known}")
        typer.echo(f"flagged {full} {subtask_id}")

    @group.command("schema")
    def schema() -> None:
        """Print the JSON schema a planner's answer must match (version 1).

        Example: tierwise plan schema > plan.schema.json
        """
        from tierwise.orchestration import PLAN_SCHEMA

        print_json(PLAN_SCHEMA)
