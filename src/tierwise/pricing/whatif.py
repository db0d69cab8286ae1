"""What-if projections: the daily and monthly cost of routing strategies for a workload.

Pure arithmetic in Decimal, no I/O. A *strategy* is either a single tier taking every task or a
*mix* giving each tier a share of the tasks. Every strategy is compared with the dearest single
tier, the "send everything to the strongest model" baseline.

Per task, ``cache_read_share`` of the input tokens is billed at the cache-read price and the
rest at the input price; output tokens at the output price::

    per_task = (input·(1−s)·p_in + input·s·p_cache_read + output·p_out) / 10⁶   (× ½ for batch)
    daily    = per_task · tasks_per_day          (a mix: Σ share_i · daily_i)
    monthly  = daily · days_per_month
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Context, Decimal, InvalidOperation, localcontext

from tierwise.pricing.catalog import ModelPrices
from tierwise.pricing.cost import BATCH_DISCOUNT

__all__ = [
    "Projection",
    "Strategy",
    "Workload",
    "format_mix",
    "parse_mix",
    "parse_price",
    "per_task_cost",
    "project",
]

_MILLION = Decimal(1_000_000)
_CONTEXT = Context(prec=60)
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")


@dataclass(frozen=True, slots=True)
class Workload:
    """The traffic to project: how many tasks a day and how big each one is."""

    tasks_per_day: Decimal
    input_tokens: int
    output_tokens: int
    cache_read_share: Decimal = Decimal(0)
    days_per_month: Decimal = Decimal(30)
    batch: bool = False

    def __post_init__(self) -> None:
        for name in ("tasks_per_day", "input_tokens", "output_tokens", "days_per_month"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | Decimal) or value < 0:
                raise ValueError(f"{name} must be a number ≥ 0, got {value!r}")
        share = self.cache_read_share
        if not isinstance(share, int | Decimal) or not 0 <= share <= 1:
            raise ValueError(f"cache_read_share must be between 0 and 1, got {share!r}")

    def as_dict(self) -> dict[str, object]:
        return {
            "tasks_per_day": _plain(Decimal(self.tasks_per_day)),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_share": _plain(Decimal(self.cache_read_share)),
            "days_per_month": _plain(Decimal(self.days_per_month)),
            "batch": self.batch,
        }


@dataclass(frozen=True, slots=True)
class Strategy:
    """One strategy's projected cost and its saving against the dearest single tier."""

    name: str
    shares: tuple[tuple[str, Decimal], ...]
    per_task: Decimal
    daily: Decimal
    monthly: Decimal
    saving_daily: Decimal
    saving_monthly: Decimal
    #: Saving as a fraction of the baseline's cost (0 when the baseline costs nothing).
    saving_ratio: Decimal
    #: A mix given by the caller (even one that names a single tier), not a single-tier row.
    is_mix: bool = False

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": "mix" if self.is_mix else "single",
            "shares": {tier: _plain(share) for tier, share in self.shares},
            "per_task_usd": _plain(self.per_task),
            "daily_usd": _plain(self.daily),
            "monthly_usd": _plain(self.monthly),
            "saving_daily_usd": _plain(self.saving_daily),
            "saving_monthly_usd": _plain(self.saving_monthly),
            "saving_ratio": _plain(self.saving_ratio.quantize(Decimal("0.000001"))),
        }


@dataclass(frozen=True, slots=True)
class Projection:
    """Every single-tier strategy (ladder order) followed by each mix, with the baseline."""

    workload: Workload
    prices: tuple[tuple[str, ModelPrices], ...]
    baseline: str
    strategies: tuple[Strategy, ...] = field(default=())

    def strategy(self, name: str) -> Strategy:
        """The strategy called *name* (a tier name, or a mix's ``a=0.8,b=0.2`` form)."""
        for s in self.strategies:
            if s.name == name:
                return s
        raise KeyError(name)

    def as_dict(self) -> dict[str, object]:
        return {
            "workload": self.workload.as_dict(),
            "baseline": self.baseline,
            "tiers": {tier: prices.as_dict() for tier, prices in self.prices},
            "strategies": [s.as_dict() for s in self.strategies],
        }


def per_task_cost(workload: Workload, prices: ModelPrices) -> Decimal:
    """The exact USD cost of one task of *workload* at *prices*."""
    with localcontext(_CONTEXT):
        cached = workload.input_tokens * workload.cache_read_share
        uncached = workload.input_tokens - cached
        total = (
            uncached * prices.input
            + cached * prices.cache_read
            + workload.output_tokens * prices.output
        ) / _MILLION
        return total * BATCH_DISCOUNT if workload.batch else total


def project(
    workload: Workload,
    tiers: Mapping[str, ModelPrices],
    mixes: Sequence[Mapping[str, Decimal]] = (),
) -> Projection:
    """Project the cost of every single-tier strategy and each mix for *workload*.

    Args:
        workload: tasks per day and tokens per task.
        tiers: prices per tier name, in ladder order (the order strategies are listed in).
        mixes: shares of tasks per tier name, each summing to exactly 1; tiers a mix leaves
            out get no tasks.

    Raises:
        ValueError: no tiers, or a mix names an unknown tier, has a negative share or its
            shares do not sum to 1.
    """
    if not tiers:
        raise ValueError("a projection needs at least one tier")
    for mix in mixes:
        _check_mix(mix, tiers)
    with localcontext(_CONTEXT):
        single = {tier: per_task_cost(workload, prices) for tier, prices in tiers.items()}
        # The dearest single tier; on a tie, the higher one on the ladder.
        baseline = max(reversed(list(single)), key=lambda t: single[t])
        base_daily = single[baseline] * workload.tasks_per_day
        rows: list[tuple[str, tuple[tuple[str, Decimal], ...], Decimal, bool]] = [
            (tier, ((tier, Decimal(1)),), cost, False) for tier, cost in single.items()
        ]
        for mix in mixes:
            shares = tuple((t, Decimal(s)) for t, s in mix.items())
            per_task = sum((share * single[t] for t, share in shares), Decimal(0))
            rows.append((format_mix(mix), shares, per_task, True))
        strategies = []
        for name, shares, per_task, is_mix in rows:
            daily = per_task * workload.tasks_per_day
            saving = base_daily - daily
            strategies.append(
                Strategy(
                    name=name,
                    shares=shares,
                    per_task=per_task,
                    daily=daily,
                    monthly=daily * workload.days_per_month,
                    saving_daily=saving,
                    saving_monthly=saving * workload.days_per_month,
                    saving_ratio=saving / base_daily if base_daily else Decimal(0),
                    is_mix=is_mix,
                )
            )
    return Projection(
        workload=workload,
        prices=tuple(tiers.items()),
        baseline=baseline,
        strategies=tuple(strategies),
    )


# -- parsing the command line's compact forms ------------------------------------------------------


def parse_price(text: str) -> tuple[str, ModelPrices]:
    """Parse ``TIER=INPUT:OUTPUT[:CACHE_READ]`` (USD per million tokens), e.g. ``cheap=0.80:4``.

    Returns the tier name and its prices (``model=""``, ``source="explicit"``).

    Raises:
        ValueError: the text does not have that form; the message shows the expected one.
    """
    expected = (
        "expected TIER=INPUT:OUTPUT[:CACHE_READ] in USD per million tokens, e.g. cheap=0.80:4"
    )
    name, sep, rest = text.partition("=")
    name = name.strip()
    parts = [p.strip() for p in rest.split(":")]
    if not sep or not _NAME.match(name) or len(parts) not in (2, 3):
        raise ValueError(f"bad price {text!r}: {expected}")
    try:
        values = [_decimal(p) for p in parts]
    except ValueError:
        raise ValueError(f"bad price {text!r}: {expected}") from None
    cache_read = values[2] if len(values) == 3 else None
    return name, ModelPrices.of("", values[0], values[1], cache_read=cache_read)


def parse_mix(text: str) -> dict[str, Decimal]:
    """Parse ``TIER=SHARE,...`` (shares as fractions or percentages), e.g. ``cheap=0.8,mid=0.2``.

    Only the syntax is checked here; :func:`project` checks tier names and that shares sum to 1.

    Raises:
        ValueError: the text does not have that form; the message shows the expected one.
    """
    expected = "expected TIER=SHARE,TIER=SHARE,... e.g. cheap=0.8,mid=0.15,strong=0.05"
    mix: dict[str, Decimal] = {}
    for item in text.split(","):
        name, sep, value = (s.strip() for s in item.partition("="))
        if not sep or not _NAME.match(name):
            raise ValueError(f"bad mix {text!r}: {expected}")
        if name in mix:
            raise ValueError(f"bad mix {text!r}: tier {name!r} appears twice")
        try:
            share = _decimal(value[:-1]) / 100 if value.endswith("%") else _decimal(value)
        except ValueError:
            raise ValueError(f"bad mix {text!r}: {expected}") from None
        mix[name] = share
    return mix


def format_mix(mix: Mapping[str, Decimal]) -> str:
    """A mix in the ``cheap=0.8,mid=0.15`` form."""
    return ",".join(f"{tier}={_plain(Decimal(share))}" for tier, share in mix.items())


def _check_mix(mix: Mapping[str, Decimal], tiers: Mapping[str, ModelPrices]) -> None:
    label = format_mix(mix)
    unknown = [t for t in mix if t not in tiers]
    if unknown:
        raise ValueError(f"mix {label}: unknown tier {unknown[0]!r}; tiers are {', '.join(tiers)}")
    if any(share < 0 for share in mix.values()):
        raise ValueError(f"mix {label}: shares must be ≥ 0")
    total = sum(mix.values(), Decimal(0))
    if total != 1:
        raise ValueError(f"mix {label}: shares sum to {_plain(total)}, expected exactly 1")


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"not a number: {text!r}") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"not a number ≥ 0: {text!r}")
    return value


def _plain(d: Decimal) -> str:
    return f"{d.normalize():f}"
