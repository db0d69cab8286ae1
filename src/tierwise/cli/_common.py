"""Helpers shared by the command modules: policy resolution, output, exit codes."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer

if TYPE_CHECKING:
    from tierwise.evaluation.live import LearnedModels
    from tierwise.ledger import Ledger
    from tierwise.policy import Policy

EXIT_OK = 0
EXIT_WARNINGS = 1
EXIT_INVALID = 2

POLICY_HELP = (
    "Policy file. Default: $TIERWISE_POLICY, else ./tierwise.toml, else the embedded default."
)
PolicyOption = typer.Option(None, "--policy", "-p", help=POLICY_HELP, show_default=False)
JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON.")


def resolve_policy_path(path: Path | None) -> Path | None:
    """The policy file to use, by precedence: flag, $TIERWISE_POLICY, ./tierwise.toml, none."""
    if path is not None:
        return path
    env = os.environ.get("TIERWISE_POLICY")
    if env:
        return Path(env)
    local = Path("tierwise.toml")
    return local if local.exists() else None


def load_policy_or_exit(path: Path | None) -> Policy:
    """Load the policy, or print its errors (never a traceback) and exit 2."""
    from tierwise.errors import PolicyError
    from tierwise.policy import default_policy, load_policy

    resolved = resolve_policy_path(path)
    try:
        return load_policy(resolved) if resolved is not None else default_policy()
    except PolicyError as exc:
        fail(str(exc), code=EXIT_INVALID)


def load_learned_or_exit(policy: Policy) -> LearnedModels | None:
    """The saved learned models the policy uses (``None`` when none), or exit 2 saying why."""
    from tierwise.errors import PolicyError
    from tierwise.evaluation.live import load_learned

    try:
        return load_learned(policy)
    except PolicyError as exc:
        fail(str(exc), code=EXIT_INVALID)


def echo_policy_warnings(policy: Policy) -> None:
    """Print what the loader warns about (e.g. a price without ``cache_read``) on stderr."""
    where = str(policy.source) if policy.source is not None else "<embedded default>"
    for warning in policy.warnings:
        typer.echo(warning.format(where), err=True)


def fail(message: str, code: int = EXIT_INVALID) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(code)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def open_ledger_or_exit(url: str | None) -> Ledger:
    """Open an existing ledger (never creates one for a read), or exit 2 with one line."""
    from tierwise.errors import LedgerError
    from tierwise.ledger import default_ledger_url, open_ledger

    try:
        return open_ledger(url or default_ledger_url(), create=False)
    except LedgerError as exc:
        fail(str(exc), code=EXIT_INVALID)


def jsonable(value: Any) -> Any:
    """Decimals as strings (exact), datetimes as ISO text, recursively (for ``--json``)."""
    from datetime import date, datetime
    from decimal import Decimal

    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
