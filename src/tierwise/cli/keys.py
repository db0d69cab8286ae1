"""`tierwise keys`: create, list and revoke the gateway's API keys."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

import typer

from tierwise.cli._common import EXIT_INVALID, JsonOption, fail, print_json

if TYPE_CHECKING:
    from tierwise.ledger import Ledger

LEDGER_HELP = "Ledger URL or path. Default: $TIERWISE_LEDGER, else ./tierwise-ledger.db."
LedgerOption = typer.Option(None, "--ledger", "-l", help=LEDGER_HELP, show_default=False)
ROLES = ("client", "admin")


def _open(url: str | None, *, create: bool) -> Ledger:
    from tierwise.errors import LedgerError
    from tierwise.ledger import default_ledger_url, ledger_url, open_ledger

    try:
        return open_ledger(ledger_url(url) if url else default_ledger_url(), create=create)
    except LedgerError as exc:
        fail(str(exc), code=EXIT_INVALID)


def register(app: typer.Typer) -> None:
    """Add ``tierwise keys create|list|revoke`` to *app*."""
    group = typer.Typer(
        help="Gateway keys: create (shown once), list, revoke.", no_args_is_help=True
    )
    app.add_typer(group, name="keys")

    @group.command("create")
    def create(
        name: str = typer.Option(..., "--name", "-n", help="A unique name for the key."),
        role: str = typer.Option("client", "--role", help="client, or admin (may change policy)."),
        budget_usd_day: str | None = typer.Option(
            None, "--budget-usd-day", help="Daily spend limit for this key, in USD."
        ),
        ledger: str | None = LedgerOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Create a gateway key and print it once; only its hash is stored.

        Clients send it as x-api-key (Anthropic SDK) or as
        Authorization: Bearer (OpenAI SDK). Once a key exists, the gateway
        refuses requests without one.

        Example: tierwise keys create --name ci-agent --budget-usd-day 20
        """
        from tierwise.errors import LedgerError

        if role not in ROLES:
            fail(f"--role: expected one of {', '.join(ROLES)}, got {role!r}", code=EXIT_INVALID)
        budget: Decimal | None = None
        if budget_usd_day is not None:
            try:
                budget = Decimal(budget_usd_day)
            except InvalidOperation:
                fail(f"--budget-usd-day: expected a number of USD, got {budget_usd_day!r}")
            if not budget.is_finite() or budget <= 0:
                fail(f"--budget-usd-day: expected a positive amount, got {budget_usd_day}")
        with _open(ledger, create=True) as book:
            try:
                secret = book.create_api_key(name, role=role, budget_usd_day=budget)
            except (LedgerError, ValueError) as exc:
                fail(str(exc), code=EXIT_INVALID)
        if as_json:
            print_json(
                {
                    "name": name,
                    "role": role,
                    "budget_usd_day": None if budget is None else str(budget),
                    "key": secret,
                }
            )
        else:
            typer.echo(secret)
        typer.echo(f"key {name!r} ({role}) created; it is shown this once — store it now", err=True)

    @group.command("list")
    def list_(
        include_revoked: bool = typer.Option(False, "--all", help="Include revoked keys."),
        ledger: str | None = LedgerOption,
        as_json: bool = JsonOption,
    ) -> None:
        """List gateway keys (names, prefixes, roles, budgets; never the keys themselves).

        Example: tierwise keys list --all --json
        """
        with _open(ledger, create=False) as book:
            keys = book.list_api_keys(include_revoked=include_revoked)
        if as_json:
            print_json([k.as_dict() for k in keys])
            return
        if not keys:
            typer.echo("no gateway keys: the gateway is open (loopback only)", err=True)
            return
        typer.echo(f"{'name':<24} {'prefix':<12} {'role':<7} {'budget/day':>11}  created")
        for k in keys:
            budget = "-" if k.budget_usd_day is None else f"${k.budget_usd_day}"
            state = "" if k.active else "  (revoked)"
            typer.echo(
                f"{k.name:<24} {k.prefix:<12} {k.role:<7} {budget:>11}  "
                f"{k.created_at:%Y-%m-%d %H:%M}{state}"
            )

    @group.command("revoke")
    def revoke(
        name: str = typer.Argument(..., help="The key's name."),
        ledger: str | None = LedgerOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Revoke a gateway key by name; running gateways stop accepting it within seconds.

        Example: tierwise keys revoke ci-agent
        """
        with _open(ledger, create=False) as book:
            done = book.revoke_api_key(name)
        if not done:
            fail(f"no active key named {name!r}", code=EXIT_INVALID)
        if as_json:
            print_json({"name": name, "revoked": True})
        else:
            typer.echo(f"key {name!r} revoked", err=True)
