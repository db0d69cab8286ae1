"""`tierwise explain`: why one task went where it went and what it cost."""

from __future__ import annotations

import typer

from tierwise.cli._common import JsonOption, print_json


def register(app: typer.Typer) -> None:
    """Add ``tierwise explain`` to *app*."""
    from tierwise.cli.ledger import LedgerOption

    @app.command("explain")
    def explain(
        task_id: str = typer.Argument(
            ..., help="The task's id (the x-tierwise-task-id header) or its first 6+ characters."
        ),
        ledger: str | None = LedgerOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Explain one task: its routing decision, each attempt with tokens, cost, latency and
        verdicts, what was passed up on each climb, and feedback people left on it.

        Example: tierwise explain 3f2a9c --ledger ./tierwise-ledger.db
        """
        from tierwise.cli._common import fail, jsonable, open_ledger_or_exit
        from tierwise.reports import TaskNotFoundError, explain_task, render_explanation

        with open_ledger_or_exit(ledger) as book:
            try:
                data = explain_task(book, task_id)
            except TaskNotFoundError as exc:
                fail(str(exc))
        if as_json:
            print_json(jsonable(data))
            return
        typer.echo(render_explanation(data))
