"""`tierwise cost`: project the daily and monthly cost of routing strategies for a workload."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from tierwise.cli._common import JsonOption, PolicyOption, fail, load_policy_or_exit, print_json

if TYPE_CHECKING:
    from tierwise.policy import Policy
    from tierwise.pricing import ModelPrices, PriceCatalog, Projection, Workload

AT_HELP = "Catalog date (YYYY-MM-DD or ISO datetime, UTC). Default: today."


def parse_at(text: str | None) -> datetime | None:
    """Parse ``--at``: an ISO date or datetime (naive = UTC). Exits 2 on anything else."""
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        fail(f"bad --at {text!r}: expected a date like 2026-06-01 or an ISO datetime")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def format_usd(amount: Decimal, *, places: int = 2) -> str:
    """Dollars for people: *places* decimals, more for non-zero amounts that would show as 0."""
    if amount != 0 and abs(amount) < Decimal(1).scaleb(-places):
        return exact_usd(amount)
    rounded = amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    return f"-${-rounded:,}" if rounded < 0 else f"${rounded:,}"


def exact_usd(amount: Decimal) -> str:
    """Dollars with every significant digit (``$0.0036``, ``$0.00828``, ``$3``)."""
    text = f"{amount.normalize():f}"
    return f"-${text[1:]}" if text.startswith("-") else f"${text}"


def _pct(share: Decimal, places: int | None = None) -> str:
    value = share * 100
    if places is not None:
        value = value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
        return f"{value:f}%"
    return f"{value.normalize():f}%"


def parse_number(text: str, option: str, *, integral: bool = False) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        fail(f"bad {option} {text!r}: expected a number ≥ 0")
    if not value.is_finite() or value < 0 or (integral and value != value.to_integral_value()):
        kind = "a whole number" if integral else "a number"
        fail(f"bad {option} {text!r}: expected {kind} ≥ 0")
    return value


def _tier_model(text: str) -> tuple[str, str]:
    name, sep, model = (s.strip() for s in text.partition("="))
    if not sep or not name or not model:
        fail(f"bad --tier {text!r}: expected TIER=MODEL, e.g. cheap=claude-haiku-4-5")
    return name, model


def workload_from_options(
    tasks_per_day: str,
    input_tokens: int,
    output_tokens: int,
    cache_read_share: str,
    days_per_month: str,
    batch: bool,
) -> Workload:
    """The workload the ``cost`` and ``advise`` options describe (exits 2 on a bad number)."""
    from tierwise.pricing import Workload

    share = parse_number(cache_read_share, "--cache-read-share")
    if share > 1:
        fail(f"bad --cache-read-share {cache_read_share!r}: expected a share between 0 and 1")
    return Workload(
        tasks_per_day=parse_number(tasks_per_day, "--tasks-per-day"),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_share=share,
        days_per_month=parse_number(days_per_month, "--days-per-month"),
        batch=batch,
    )


def resolve_tiers(
    *,
    tier_models: list[str],
    explicit_prices: list[str],
    mix_tiers: list[str],
    policy_path: Path | None,
    at: datetime | None,
) -> dict[str, ModelPrices]:
    """The prices of each tier to compare, in ladder order.

    With no ``--tier``/``--price``, the policy's ladder. Otherwise the tiers those options name
    (plus any tier a ``--mix`` names), each priced by ``--price`` if given, else from the
    catalog (policy overrides first) for its ``--tier`` model or the policy's model for it. The
    policy is only read when some tier needs it.
    """
    from tierwise.errors import PricingError
    from tierwise.pricing import PriceCatalog, parse_price

    priced: dict[str, ModelPrices] = {}
    for text in explicit_prices:
        try:
            name, prices = parse_price(text)
        except ValueError as exc:
            fail(str(exc))
        priced[name] = prices
    models = dict(_tier_model(t) for t in tier_models)
    names = list(dict.fromkeys([*models, *priced, *mix_tiers]))
    pol: Policy | None = None
    if not names or any(n not in priced for n in names):
        pol = load_policy_or_exit(policy_path)
        if not names:
            names = list(pol.ladder)
        else:  # ladder order for the policy's tiers, the others after them as given
            rank = {t: i for i, t in enumerate(pol.ladder)}
            names.sort(key=lambda n: rank.get(n, len(rank)))
    catalog: PriceCatalog | None = None
    out: dict[str, ModelPrices] = {}
    for name in names:
        if name in priced:
            out[name] = priced[name]
            continue
        assert pol is not None
        policy_tier = next((t for t in pol.model.tiers if t.name == name), None)
        model = models.get(name) or (policy_tier.model if policy_tier else None)
        if model is None:
            fail(
                f"tier {name!r} has no model: the policy's tiers are {', '.join(pol.ladder)}; "
                f"give --tier {name}=MODEL or --price {name}=INPUT:OUTPUT"
            )
        provider = policy_tier.provider if policy_tier and name not in models else None
        catalog = catalog or PriceCatalog(pol.model.prices, at=at)
        try:
            out[name] = catalog.prices_for(model, provider)
        except PricingError as exc:
            fail(str(exc))
    return out


def print_projection(projection: Projection) -> None:
    """Render a projection as a rich table on stdout."""
    from rich.console import Console
    from rich.table import Table

    w = projection.workload
    title = (
        f"{w.tasks_per_day:,} tasks/day × {w.input_tokens:,} input + {w.output_tokens:,} output "
        f"tokens, {w.days_per_month} days/month"
    )
    if w.cache_read_share:
        title += f", {_pct(w.cache_read_share)} of input read from cache"
    if w.batch:
        title += ", batch (−50%)"
    table = Table(title=title, title_justify="left")
    table.add_column("strategy")
    table.add_column("USD/MTok in/out")
    for col in ("per task", "per day", "per month", f"saving/day vs {projection.baseline}"):
        table.add_column(col, justify="right")
    prices = dict(projection.prices)
    for s in projection.strategies:
        if s.is_mix:
            label = "mix"
            what = " ".join(f"{tier} {_pct(share)}" for tier, share in s.shares)
        else:
            label = s.name
            p = prices[s.name]
            what = f"{exact_usd(p.input)}/{exact_usd(p.output)}"
            if p.model:
                what = f"{p.model} {what}"
        saving = (
            "baseline"
            if s.name == projection.baseline
            else f"{format_usd(s.saving_daily)} ({_pct(s.saving_ratio, 1)})"
        )
        table.add_row(
            label,
            what,
            exact_usd(s.per_task),
            format_usd(s.daily),
            format_usd(s.monthly),
            saving,
        )
    Console().print(table)


def register(app: typer.Typer) -> None:
    """Add ``tierwise cost`` to *app*."""

    @app.command("cost")
    def cost(
        tasks_per_day: str = typer.Option(..., "--tasks-per-day", help="Tasks per day."),
        input_tokens: int = typer.Option(..., "--input-tokens", min=0, help="Input per task."),
        output_tokens: int = typer.Option(..., "--output-tokens", min=0, help="Output per task."),
        cache_read_share: str = typer.Option(
            "0",
            "--cache-read-share",
            help="Share of input tokens read from cache (0–1), billed at the cache-read price.",
        ),
        tier: list[str] = typer.Option(
            [], "--tier", help="TIER=MODEL: price a tier from the catalog. Repeatable."
        ),
        price: list[str] = typer.Option(
            [],
            "--price",
            help="TIER=INPUT:OUTPUT[:CACHE_READ] in USD per million tokens. Repeatable.",
        ),
        mix: list[str] = typer.Option(
            [], "--mix", help="TIER=SHARE,...: a mixed strategy, shares summing to 1. Repeatable."
        ),
        days_per_month: str = typer.Option("30", "--days-per-month", help="Days in a month."),
        batch: bool = typer.Option(False, "--batch", help="Apply the 50% batch discount."),
        at: str | None = typer.Option(None, "--at", help=AT_HELP),
        policy: Path | None = PolicyOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Project the daily and monthly cost of each single-tier strategy and each mix.

        Tiers default to the policy's ladder, priced from the catalog. With --tier or --price,
        the tiers compared are the ones named there (and in --mix); a tier without --price is
        priced from the catalog for its --tier model or the policy's model. Savings are
        against the dearest single tier.

        Example, with the workload and prices of the articles tierwise grew from (listed in the
        README under "Background: the articles"): $1.80, $6.75, $33.75 and $4.14 a day.

            tierwise cost --tasks-per-day 500 --input-tokens 2000 \\
              --output-tokens 500 --price cheap=0.80:4 --price mid=3:15 \\
              --price strong=15:75 \\
              --mix cheap=0.8,mid=0.15,strong=0.05
        """
        from tierwise.pricing import parse_mix, project

        mixes = []
        for text in mix:
            try:
                mixes.append(parse_mix(text))
            except ValueError as exc:
                fail(str(exc))
        workload = workload_from_options(
            tasks_per_day, input_tokens, output_tokens, cache_read_share, days_per_month, batch
        )
        tiers = resolve_tiers(
            tier_models=tier,
            explicit_prices=price,
            mix_tiers=[t for m in mixes for t in m],
            policy_path=policy,
            at=parse_at(at),
        )
        try:
            projection = project(workload, tiers, mixes)
        except ValueError as exc:
            fail(str(exc))
        if as_json:
            print_json(projection.as_dict())
        else:
            print_projection(projection)
