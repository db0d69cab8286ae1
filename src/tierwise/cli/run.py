"""`tierwise run`: one task through the cascade, with its trail."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    from tierwise.cascade import CascadeResult
    from tierwise.cascade.result import AttemptRecord
    from tierwise.policy import Policy
    from tierwise.task import Task


def attempt_row(a: AttemptRecord) -> dict[str, Any]:
    """One attempt as plain data (no output text), for tables and ``--json``."""
    return {
        "attempt": a.attempt_no,
        "role": a.role,
        "tier": a.tier,
        "model": a.model,
        "outcome": a.outcome,
        "cost_usd": str(a.cost_usd),
        "latency_s": round(a.latency_s, 4),
        "usage": a.usage.as_dict(),
        "reason": a.failure,
        "verdicts": [
            {"validator": v.validator, "ok": v.ok, "reason": v.reason, "score": v.score}
            for v in a.verdicts
        ],
    }


def _short(text: str, limit: int = 90) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def print_trail(attempts: tuple[AttemptRecord, ...] | list[AttemptRecord]) -> None:
    """Print the attempt trail as a table on stderr (stdout keeps the answer clean for pipes)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="attempts", title_justify="left")
    for col in ("#", "tier", "model", "outcome", "cost (USD)", "latency", "reason"):
        table.add_column(col, overflow="fold")
    for a in attempts:
        table.add_row(
            str(a.attempt_no),
            a.tier + (f" ({a.role})" if a.role in ("validator", "judge") else ""),
            a.model,
            a.outcome,
            f"{a.cost_usd:.6f}",
            f"{a.latency_s * 1000:.0f} ms",
            _short(a.failure or ""),
        )
    Console(stderr=True).print(table)


def result_json(result: CascadeResult) -> dict[str, Any]:
    return {
        "task_id": result.task_id,
        "output": result.output,
        "tier": result.tier,
        "model": result.model,
        "cost_usd": str(result.cost_usd),
        "latency_s": round(result.latency_s, 4),
        "decision": result.decision.as_dict(),
        "escalations": [{"from": t, "reason": r} for t, r in result.escalations],
        "attempts": [attempt_row(a) for a in result.attempts],
    }


def _check_keys(policy: Policy, task: Task, start: str | None) -> None:
    """Fail fast, naming the variable, when no tier the task could use has its API key."""
    import os

    from tierwise.providers.factory import DEFAULT_KEY_ENV
    from tierwise.routing import Router

    router = Router(policy)
    decision = router.start_at(task, start) if start else router.route(task)
    needed = []
    for name in policy.ladder[decision.tier_index :]:
        tier = policy.tier(name)
        env = tier.api_key_env or DEFAULT_KEY_ENV.get(tier.provider, "")
        if os.environ.get(env):
            return
        needed.append(env)
    names = " or ".join(dict.fromkeys(needed))
    fail(
        f"no API key: set {names} (the policy's tiers read their keys from it). "
        "`tierwise demo` runs offline on simulated models."
    )


def register(app: typer.Typer) -> None:
    """Add ``tierwise run`` to *app*."""

    @app.command("run")
    def run(
        kind: str = typer.Option(..., "--kind", "-k", help="Task kind, e.g. classify, extract."),
        prompt: str | None = typer.Option(None, "--prompt", help="The task text."),
        file: Path | None = typer.Option(
            None, "--file", "-f", help="Read the task text from a file ('-' for stdin)."
        ),
        session: str | None = typer.Option(None, "--session", help="Session id for budgets."),
        annotate: str | None = typer.Option(
            None, "--annotate", help="Annotations, e.g. '\\[scope: single-file] \\[domain: docs]'."
        ),
        tier: str | None = typer.Option(None, "--tier", help="Start at this tier."),
        budget: float | None = typer.Option(None, "--budget-usd", help="Budget for this task."),
        max_tokens: int = typer.Option(1024, "--max-tokens", help="Output token limit."),
        ledger: str | None = typer.Option(
            None,
            "--ledger",
            help="Ledger URL or path. Default: $TIERWISE_LEDGER, else ./tierwise-ledger.db.",
        ),
        policy: Path | None = PolicyOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Run one task through the cascade: route, attempt, validate, climb on failure.

        Prints the accepted output on stdout and the attempt trail on stderr.
        Provider keys come from the environment variables the policy names. A
        tier without base_url goes where its SDK goes by default:
        $ANTHROPIC_BASE_URL or $OPENAI_BASE_URL when set (a fake upstream from
        `python -m tierwise.testing`, or a company proxy), else the provider.

        Example: tierwise run --kind extract --prompt "Invoice 42 from ACME, total 10 EUR" --json
        """
        import sys

        from tierwise.cascade import Cascade
        from tierwise.errors import BudgetExceededError, EscalationExhaustedError, TierwiseError
        from tierwise.ledger import default_ledger_url, open_ledger
        from tierwise.task import Task

        if (prompt is None) == (file is None):
            fail("give exactly one of --prompt or --file")
        if file is not None:
            try:
                text = sys.stdin.read() if str(file) == "-" else file.read_text()
            except OSError as exc:
                fail(f"cannot read {file}: {exc.strerror}")
        else:
            text = prompt or ""
        pol = load_policy_or_exit(policy)
        if tier is not None and tier not in pol.ladder:
            fail(f"unknown tier {tier!r}; the ladder is {', '.join(pol.ladder)}")
        task = Task.create(
            kind,
            text,
            annotate=annotate,
            session=session,
            max_tokens=max_tokens,
            budget_usd=Decimal(str(budget)) if budget is not None else None,
        )
        _check_keys(pol, task, tier)
        try:
            with (
                open_ledger(ledger or default_ledger_url()) as book,
                Cascade(pol, ledger=book, learned=load_learned_or_exit(pol)) as cascade,
            ):
                result = cascade.run(task, start_tier=tier)
        except (EscalationExhaustedError, BudgetExceededError) as exc:
            if as_json:
                print_json({"error": str(exc), "attempts": [attempt_row(a) for a in exc.attempts]})
            else:
                print_trail(exc.attempts)
            fail(str(exc), code=1)
        except TierwiseError as exc:  # ledger, policy, provider setup: one line, no traceback
            fail(str(exc))
        if as_json:
            print_json(result_json(result))
            return
        typer.echo(result.output)
        print_trail(result.attempts)
        typer.echo(
            f"accepted on {result.tier} ({result.model}) after {len(result.attempts)} attempt(s); "
            f"cost ${result.cost_usd:.6f}; {result.decision.explain()}",
            err=True,
        )
