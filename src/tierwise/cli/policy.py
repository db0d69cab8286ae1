"""`tierwise policy check` and `tierwise policy show`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from tierwise.cli._common import (
    EXIT_INVALID,
    EXIT_OK,
    EXIT_WARNINGS,
    JsonOption,
    PolicyOption,
    load_policy_or_exit,
    print_json,
    resolve_policy_path,
)

if TYPE_CHECKING:
    from tierwise.errors import PolicyIssue


def register(app: typer.Typer) -> None:
    """Add the ``tierwise policy`` group to *app*."""
    group = typer.Typer(
        name="policy",
        help="Check or show a routing policy.",
        no_args_is_help=True,
        rich_markup_mode="rich",
    )
    group.command("check")(check)
    group.command("show")(show)
    app.add_typer(group, name="policy")


def check(
    file: Path | None = typer.Argument(
        None,
        help="Policy file. Default: $TIERWISE_POLICY, else ./tierwise.toml, else the embedded "
        "default.",
        show_default=False,
    ),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 when there are warnings."),
    as_json: bool = JsonOption,
) -> None:
    """Validate a policy file and warn about rules that never match and idle tiers.

    Prints each problem as FILE:LINE: severity: key.path: message. Exit code 0 when the policy
    is valid (1 with --strict when there are warnings), 2 when it is invalid.

    Example: tierwise policy check tierwise.toml --strict
    """
    from tierwise.errors import PolicyError
    from tierwise.policy import check_policy, default_policy, load_policy

    resolved = resolve_policy_path(file)
    label = str(resolved) if resolved is not None else "<embedded default>"
    revision: str | None = None
    try:
        loaded = load_policy(resolved) if resolved is not None else default_policy()
    except PolicyError as exc:
        issues = list(exc.issues)
    else:
        issues = check_policy(loaded)
        revision = loaded.revision
        if loaded.uses_learned:  # the saved router/verifier: there, readable, for this ladder
            from tierwise.evaluation.live import load_learned

            try:
                load_learned(loaded)
            except PolicyError as exc:
                issues.extend(exc.issues)
    errors = [i for i in issues if i.severity == "error"]
    warnings = [i for i in issues if i.severity != "error"]
    if errors:
        code = EXIT_INVALID
    elif warnings and strict:
        code = EXIT_WARNINGS
    else:
        code = EXIT_OK
    if as_json:
        print_json(
            {
                "file": label,
                "ok": not errors,
                "revision": revision,
                "errors": [_issue_dict(i) for i in errors],
                "warnings": [_issue_dict(i) for i in warnings],
            }
        )
    else:
        for issue in issues:
            typer.echo(issue.format(label), err=issue.severity == "error")
        if errors:
            typer.echo(f"{label}: invalid ({_count(errors, 'error')})", err=True)
        else:
            typer.echo(f"{label}: ok, {_count(warnings, 'warning')}; revision {revision}")
    raise typer.Exit(code)


def show(policy: Path | None = PolicyOption, as_json: bool = JsonOption) -> None:
    """Show the effective policy: the ladder with models, frontier constraints, rules, kinds.

    Example: tierwise policy show --policy tierwise.toml --json
    """
    from tierwise.policy.describe import policy_summary

    summary = policy_summary(load_policy_or_exit(policy))
    if as_json:
        print_json(summary)
        return
    _print_summary(summary)


def _issue_dict(issue: PolicyIssue) -> dict[str, Any]:
    return {
        "path": issue.path,
        "line": issue.line,
        "severity": issue.severity,
        "message": issue.message,
    }


def _count(items: list[Any], noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    source = summary["source"] or "<embedded default>"
    console.print(f"policy {source} · revision {summary['revision'][:12]}")

    ladder = Table(title="ladder (bottom → top)", title_justify="left")
    for col in ("#", "tier", "provider", "model", "alternates"):
        ladder.add_column(col)
    for t in summary["ladder"]:
        alternates = ", ".join(t["alternates"])
        ladder.add_row(str(t["index"]), t["tier"], t["provider"], t["model"], alternates)
    console.print(ladder)

    frontier = Table(title="must stay frontier (never below)", title_justify="left")
    for col in ("#", "constraint", "when", "pin"):
        frontier.add_column(col)
    for c in summary["frontier"]:
        frontier.add_row(str(c["index"]), c["name"], c["when"], c["tier"])
    console.print(frontier)

    rules = Table(title="rules (first match wins)", title_justify="left")
    for col in ("#", "name", "when", "tier"):
        rules.add_column(col)
    for r in summary["rules"]:
        rules.add_row(str(r["index"]), r["name"] or "", r["when"], r["tier"])
    console.print(rules)

    kinds = Table(title="kinds", title_justify="left")
    for col in ("kind", "floor", "doubt", "validators"):
        kinds.add_column(col)
    for name, k in summary["kinds"].items():
        doubt = f"{k['doubt']} → {k['doubt_tier']}"
        kinds.add_row(name, k["floor"] or "", doubt, ", ".join(k["validators"]))
    console.print(kinds)
