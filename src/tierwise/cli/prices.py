"""`tierwise prices`: per-million-token prices of models, and where each price came from."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from tierwise.cli._common import JsonOption, PolicyOption, fail, load_policy_or_exit, print_json
from tierwise.cli.cost import AT_HELP, exact_usd, parse_at


def register(app: typer.Typer) -> None:
    """Add ``tierwise prices`` to *app*."""

    @app.command("prices")
    def prices(
        models: list[str] | None = typer.Argument(
            None, help="Model ids. Default: every model of the policy's tiers.", show_default=False
        ),
        provider: str | None = typer.Option(
            None, "--provider", help="Provider of the given models: anthropic or openai."
        ),
        at: str | None = typer.Option(None, "--at", help=AT_HELP),
        policy: Path | None = PolicyOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Show the USD per million tokens of models and the source of each price.

        Prices come from the policy's [prices] overrides first, else from the genai-prices
        catalog bundled with the installed package (never fetched) as of --at. Tiered prices
        show their base tier; missing cache prices fall back to the input price.

        Example: tierwise prices claude-haiku-4-5 gpt-4o-mini --at 2026-06-01 --json
        """
        from tierwise.errors import PricingError
        from tierwise.pricing import PriceCatalog, catalog_version

        when = parse_at(at)
        pol = load_policy_or_exit(policy)
        catalog = PriceCatalog(pol.model.prices, at=when)
        wanted: list[tuple[str | None, str, str | None]] = []  # (tier, model, provider)
        if models:
            wanted = [(None, m, provider) for m in models]
        else:
            for tier in pol.model.tiers:
                wanted.append((tier.name, tier.model, tier.provider))
                for alt in tier.alternate_specs():
                    wanted.append((tier.name, alt.model, alt.provider or tier.provider))
        rows: list[dict[str, Any]] = []
        for tier_name, model, prov in wanted:
            try:
                found = catalog.prices_for(model, prov)
            except PricingError as exc:
                fail(str(exc))
            rows.append({"tier": tier_name, "provider": prov, **found.as_dict(), "model": model})
        day = (when or datetime.now(UTC)).date().isoformat()
        if as_json:
            print_json({"at": day, "catalog": f"genai-prices {catalog_version()}", "models": rows})
            return
        _print_table(rows, f"USD per million tokens at {day} (genai-prices {catalog_version()})")


def _print_table(rows: list[dict[str, Any]], title: str) -> None:
    from decimal import Decimal

    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    show_tier = any(r["tier"] for r in rows)
    if show_tier:
        table.add_column("tier")
    table.add_column("model")
    for col in ("input", "output", "cache read", "write 5m", "write 1h"):
        table.add_column(col, justify="right")
    table.add_column("source")
    keys = ("input", "output", "cache_read", "cache_write_5m", "cache_write_1h")
    for r in rows:
        cells = [exact_usd(Decimal(r[k])) for k in keys]
        table.add_row(*([r["tier"] or ""] if show_tier else []), r["model"], *cells, r["source"])
    Console().print(table)
