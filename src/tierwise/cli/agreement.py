"""`tierwise ledger agreement`: how tiers' answers compare on shadowed traffic."""

from __future__ import annotations

from typing import Any

import typer

from tierwise.cli._common import JsonOption, fail, jsonable, open_ledger_or_exit, print_json

_LEDGER_HELP = "Ledger URL or path. Default: $TIERWISE_LEDGER, else ./tierwise-ledger.db."


def _rate(entry: dict[str, Any]) -> str:
    if entry["rate"] is None:
        return "n/a"
    return f"{entry['rate']:.0%} [{entry['low']:.0%}, {entry['high']:.0%}] of {entry['of']}"


def register_agreement(group: typer.Typer) -> None:
    """Add ``tierwise ledger agreement`` to the ledger command group."""

    @group.command("agreement")
    def agreement(
        since: str | None = typer.Option(
            None, "--since", help="Only pairs compared at or after this (2025-06-01, 7d)."
        ),
        until: str | None = typer.Option(None, "--until", help="Only pairs compared before this."),
        kind: str | None = typer.Option(None, "--kind", "-k", help="Only this task kind."),
        ledger: str | None = typer.Option(None, "--ledger", "-l", help=_LEDGER_HELP),
        as_json: bool = JsonOption,
    ) -> None:
        """Agreement between tiers on shadowed tasks, per kind and pair of tiers.

        For each pair: how often both passed their validators, how often the answers agreed
        (by the kind's answer format: labels and choices exactly after normalisation, JSON as
        parsed JSON, numbers by the final number, free text by token-set overlap at the
        `[shadow] similarity` threshold), how often the cheaper tier did at least as well
        (passed, and agreed or the dearer one failed), and — where a validator decided or a
        `wrong` flag did — which tier was right. Rates carry 95% Wilson intervals; shadow
        spend is on its own line. Turn shadow mode on with `[kinds.NAME] shadow = 0.05`.

        Example: tierwise ledger agreement --since 7d --kind extract --json
        """
        from tierwise.cli.ledger import parse_when

        try:
            since_at = parse_when(since) if since else None
            until_at = parse_when(until) if until else None
        except ValueError as exc:
            fail(f"--since/--until: {exc}")
        with open_ledger_or_exit(ledger) as book:
            pairs = book.agreement(since=since_at, until=until_at, kind=kind)
            spend = book.shadow_spend(since=since_at, until=until_at, kind=kind)
        if as_json:
            print_json(jsonable({"pairs": pairs, "shadow": spend}))
            return
        if not pairs:
            typer.echo(
                "no shadowed tasks in this window; set [kinds.NAME] shadow = 0.05 (a share of "
                "the kind's tasks) to compare tiers on your own traffic",
                err=True,
            )
            return
        from rich import box
        from rich.console import Console
        from rich.table import Table

        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
        for col in ("kind", "tiers", "compared", "both passed", "agree", "cheaper as good"):
            table.add_column(col, overflow="fold")
        table.add_column("right (low/high)", justify="right")
        for p in pairs:
            methods = ", ".join(sorted(p["methods"]))
            right = (
                f"{p['low_right']['count']}/{p['high_right']['count']} of {p['decided']}"
                if p["decided"]
                else "-"
            )
            table.add_row(
                p["kind"],
                f"{p['low_tier']} vs {p['high_tier']}",
                f"{p['pairs']} ({methods})",
                _rate(p["both_passed"]),
                _rate(p["agree"]),
                _rate(p["low_as_good"]),
                right,
            )
        console = Console()
        console.print(table)
        console.print(
            f"shadow spend: {spend['attempts']} calls, ${spend['spend_usd']} (the shadow "
            "budget's; in no caller's spend or escalation rate)",
            markup=False,
            highlight=False,
        )
        console.print(
            "rates: share [95% Wilson interval] of pairs; 'text≥T' compares free text by "
            "token-set overlap at threshold T; 'right' counts pairs whose answers differ where "
            "a validator (one passed) or a wrong flag told them apart",
            markup=False,
            highlight=False,
        )
