"""`tierwise route`: where a task would go under the policy, and why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from tierwise.cli._common import JsonOption, PolicyOption, fail, load_policy_or_exit, print_json


def register(app: typer.Typer) -> None:
    """Add ``tierwise route`` to *app*."""

    @app.command("route")
    def route(
        kind: str | None = typer.Option(
            None, "--kind", "-k", help="Task kind, e.g. classify or code_edit.", show_default=False
        ),
        attr: list[str] | None = typer.Option(
            None,
            "--attr",
            "-a",
            help="A task attribute as key=value (repeatable): input_tokens, input_chars, files, "
            "severity (1-5), requires_code (true/false), scope, domain, ambiguity.",
            show_default=False,
        ),
        annotate: str | None = typer.Option(
            None,
            "--annotate",
            help="Annotations in the one-line form '\\[scope: single-file] \\[domain: docs] "
            "\\[ambiguity: low]'.",
            show_default=False,
        ),
        prompt: str | None = typer.Option(
            None,
            "--prompt",
            help="The task text (its length sets input_chars; annotations in it are read).",
            show_default=False,
        ),
        start: str | None = typer.Option(
            None, "--start", help="Start at this tier instead (frontier pins still hold)."
        ),
        table: bool = typer.Option(
            False,
            "--table",
            help="Route the example tasks of the articles tierwise grew from (the README's "
            '"Background: the articles" lists them) and print the table.',
        ),
        policy: Path | None = PolicyOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Show which tier and model a task goes to, and the rule, constraint, floor or doubt
        that decided.

        Example: tierwise route --kind code_edit -a files=1 --annotate "\\[domain: tests]" --json

        Example: tierwise route --table
        """
        from tierwise.errors import TierwiseError
        from tierwise.routing import Router
        from tierwise.task import ATTRIBUTES

        if table:
            if kind is not None or attr or annotate is not None or prompt is not None or start:
                fail("--table routes the example tasks; it takes no --kind/--attr/--annotate")
            _print_table(load_policy_or_exit(policy), as_json)
            return
        if not kind:
            fail("give the task kind with --kind, e.g. --kind classify (or use --table)")
        attrs = parse_attrs(attr or [])
        pol = load_policy_or_exit(policy)
        task = _make_task(kind, prompt, annotate, attrs)
        router = Router(pol)
        try:
            decision = router.start_at(task, start) if start else router.route(task)
        except TierwiseError as exc:
            fail(str(exc))
        tier = pol.tier(decision.tier)
        carried = {k: getattr(task, k) for k in ATTRIBUTES if getattr(task, k) is not None}
        if as_json:
            print_json(
                {
                    **decision.as_dict(),
                    "model": tier.model,
                    "provider": tier.provider,
                    "attributes": carried,
                    "policy_revision": pol.revision,
                }
            )
            return
        shown = ", ".join(f"{k}={_show(v)}" for k, v in carried.items()) or "none"
        typer.echo(f"tier:       {decision.tier} ({tier.model}, {tier.provider})")
        typer.echo(f"why:        {decision.explain()}")
        typer.echo(f"task:       kind={kind}; {shown}")


def parse_attrs(items: list[str]) -> dict[str, Any]:
    """Parse ``key=value`` task attributes (:func:`tierwise.task.parse_attribute`).

    Exits with code 2 and one line on stderr for the first bad item.
    """
    from tierwise.task import parse_attribute

    out: dict[str, Any] = {}
    for item in items:
        try:
            key, value = parse_attribute(item)
        except ValueError as exc:
            fail(f"--attr {exc}")
        out[key] = value
    return out


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _make_task(kind: str, prompt: str | None, annotate: str | None, attrs: dict[str, Any]) -> Any:
    from tierwise.task import Task, parse_annotations

    if annotate is not None:
        found = parse_annotations(annotate)
        if not found and annotate.strip():
            fail(
                f"--annotate {annotate!r}: no annotation found; expected e.g. "
                "'[scope: single-file] [domain: docs] [ambiguity: low]'"
            )
    return Task.create(kind, prompt or "", annotate=annotate, **attrs)


def _print_table(policy: Any, as_json: bool) -> None:
    from tierwise.routing import render_routing_table, routing_table

    rows = routing_table(policy)
    if as_json:
        print_json({"policy_revision": policy.revision, "rows": [r.as_dict() for r in rows]})
        return
    from rich.console import Console

    source = str(policy.source) if policy.source else "the embedded default policy"
    Console().print(render_routing_table(rows, title=f"Routing of the example tasks ({source})"))
