"""`tierwise ledger agreement` and `tierwise ledger export`: the ledger as evaluation data — how
tiers' answers compare on shadowed traffic, and every task as a row of `tierwise eval` JSONL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from tierwise.cli._common import (
    JsonOption,
    fail,
    jsonable,
    load_policy_or_exit,
    open_ledger_or_exit,
    print_json,
    resolve_policy_path,
)

#: Which tasks an export takes (their shadow answers come with them).
_EXPORT_ROLES = ("live", "probe", "replay", "all")


def _rate(entry: dict[str, Any]) -> str:
    if entry["rate"] is None:
        return "n/a"
    return f"{entry['rate']:.0%} [{entry['low']:.0%}, {entry['high']:.0%}] of {entry['of']}"


def register(group: typer.Typer, ledger_option: Any) -> None:
    """Add ``tierwise ledger agreement`` and ``tierwise ledger export`` to the ledger group."""

    @group.command("agreement")
    def agreement(
        since: str | None = typer.Option(
            None, "--since", help="Only pairs compared at or after this (2025-06-01, 7d)."
        ),
        until: str | None = typer.Option(None, "--until", help="Only pairs compared before this."),
        kind: str | None = typer.Option(None, "--kind", "-k", help="Only this task kind."),
        ledger: str | None = ledger_option,
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

    @group.command("export")
    def export(
        out: str = typer.Option("-", "--out", "-o", help="Output file ('-' for stdout)."),
        since: str | None = typer.Option(
            None, "--since", help="Only what started at or after this (2025-06-01, 30d)."
        ),
        kind: str | None = typer.Option(None, "--kind", "-k", help="Only this task kind."),
        role: str = typer.Option("live", "--role", help="live, probe, replay or all."),
        name: str | None = typer.Option(None, "--name", help="Dataset name for the header."),
        policy: Path | None = typer.Option(
            None, "--policy", "-p", help="Read the kinds' answer formats from this policy."
        ),
        ledger: str | None = ledger_option,
    ) -> None:
        """Write the ledger's tasks as tierwise eval JSONL, for `tierwise eval` and your own tools.

        One record per task: per model that answered it — its own run's tiers and, for tasks
        shadow mode sampled, the tiers it did not try — score 1 when the answer passed its
        validators and was not flagged wrong, else 0, with answer, exact cost and tokens; and
        what the policy did (`served`), which `tierwise eval` reports as a strategy. Prompts
        and answers are included only for tasks recorded with `store_content = true`.

        Example: tierwise ledger export --since 30d --out logs/fleet.jsonl && tierwise eval logs
        """
        import sys

        from tierwise.cli.ledger import parse_when
        from tierwise.evaluation.export import export_formats, ledger_ladder, ledger_rows
        from tierwise.evaluation.loaders import dump_rows

        if role not in _EXPORT_ROLES:
            fail(f"--role: expected one of {', '.join(_EXPORT_ROLES)}, got {role!r}")
        try:
            when = parse_when(since) if since else None
        except ValueError as exc:
            fail(f"--since: {exc}")
        chosen = None if role == "all" else role
        with open_ledger_or_exit(ledger) as book:
            rows = list(ledger_rows(book, since=when, kind=kind, role=chosen))
            ladder = ledger_ladder(book, role=chosen)
        source = resolve_policy_path(policy)
        formats = None
        if source is not None:
            formats = export_formats(load_policy_or_exit(source), {r.kind for r in rows})
        texts = sum(1 for r in rows if r.prompt is not None)
        title = name or "tierwise-ledger"
        if out == "-":
            n = dump_rows(rows, sys.stdout, name=title, ladder=ladder or None, formats=formats)
        else:
            target = Path(out)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                with target.open("w", encoding="utf-8") as fp:
                    n = dump_rows(rows, fp, name=title, ladder=ladder or None, formats=formats)
            except OSError as exc:
                fail(f"cannot write {target}: {exc.strerror}")
        full = sum(1 for r in rows if ladder and set(ladder.values()) <= set(r.results))
        typer.echo(
            f"exported {n} task(s): {texts} with prompt text, {full} answered by every tier's "
            "model (what `tierwise eval` compares strategies on; shadow mode fills in the "
            "tiers a task did not try)",
            err=True,
        )
        if rows and not texts:
            typer.echo(
                "note: no prompt text (the policy had store_content = false); "
                "costs and scores replay, a learned router needs text",
                err=True,
            )
