"""`tierwise feedback`: flag a task's output after the fact (wrong, needed frontier, cheaper
would do); ``tierwise learn status`` shows the flag rates per kind and tier."""

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
    from tierwise.ledger import Ledger


def default_author() -> str:
    """``cli:<login>``, the author a flag from this command is recorded under."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no login name (a container without a passwd entry)
        return "cli"


def _task_or_exit(book: Ledger, given: str) -> str:
    found = book.task_ids(given)
    if not found:
        fail(f"no task {given!r} in the ledger {book.url}", code=EXIT_INVALID)
    if len(found) > 1:
        fail(
            f"{given!r} is the start of several task ids ({', '.join(found)}, ...); "
            "give more of it",
            code=EXIT_INVALID,
        )
    return found[0]


def _meaning(flag: str, task: dict[str, object], ladder: tuple[str, ...]) -> str:
    tier = task.get("final_tier")
    accepted = task.get("outcome") == "accepted" and isinstance(tier, str)
    if not accepted:
        return f"the task was not accepted ({task.get('outcome')}): only accepted outputs count"
    if flag == "wrong":
        return f"a late failure of the {tier} tier"
    if flag == "needed_frontier":
        if ladder and tier == ladder[-1]:
            return f"confirms the routing: the top tier ({tier}) answered it"
        return f"under-routing: {tier} answered it, below the top tier"
    return f"over-routing: {tier} answered it and a cheaper tier would have done"


def register(app: typer.Typer) -> None:
    """Add ``tierwise feedback`` to *app*."""

    @app.command("feedback")
    def feedback(
        task_id: str = typer.Argument(
            ..., help="The task's id (x-tierwise-task-id), or a unique start of it."
        ),
        wrong: bool = typer.Option(False, "--wrong", help="The accepted output was wrong."),
        needed_frontier: bool = typer.Option(
            False, "--needed-frontier", help="The task needed the top tier."
        ),
        cheaper_would_do: bool = typer.Option(
            False, "--cheaper-would-do", help="A cheaper tier would have done."
        ),
        note: str | None = typer.Option(None, "--note", help="Why, in a sentence (optional)."),
        author: str | None = typer.Option(
            None, "--author", help="Who flags it (default cli:<login>); one flag per author."
        ),
        policy: Path | None = PolicyOption,
        ledger: str | None = LedgerOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Flag a task's output: wrong, needed the frontier tier, or a cheaper tier would do.

        The latest flag per task and author stands: flagging again replaces your earlier flag
        (the same flag twice changes nothing). `wrong` counts as a late failure of the tier that
        produced the output; `needed_frontier` as under-routing below the top tier (on the top
        tier it confirms the routing); `cheaper_would_do` as over-routing.
        `tierwise learn status` shows the rates per kind and tier.

        Example: tierwise feedback 3f9c2a --wrong --note "total is off by 10x"
        """
        chosen = [
            name
            for name, on in (
                ("wrong", wrong),
                ("needed_frontier", needed_frontier),
                ("cheaper_would_do", cheaper_would_do),
            )
            if on
        ]
        if len(chosen) != 1:
            fail(
                "give exactly one of --wrong, --needed-frontier, --cheaper-would-do "
                f"(got {len(chosen)})",
                code=EXIT_INVALID,
            )
        ladder = tuple(load_policy_or_exit(policy).ladder)
        with open_ledger_or_exit(ledger) as book:
            found = _task_or_exit(book, task_id)
            try:
                stored = book.record_feedback(
                    found, chosen[0], author=author or default_author(), note=note
                )
            except ValueError as exc:
                fail(str(exc), code=EXIT_INVALID)
            task = book.task(found)
        if stored is None or task is None:  # pruned between the lookup and the write
            fail(f"no task {found!r} in the ledger", code=EXIT_INVALID)
        meaning = _meaning(stored.flag, task, ladder)
        if as_json:
            print_json({**stored.as_dict(), "kind": task["kind"], "meaning": meaning})
            return
        typer.echo(
            f"{stored.change} {stored.flag} on task {stored.task_id} ({task['kind']}) "
            f"by {stored.author}: {meaning}"
        )
