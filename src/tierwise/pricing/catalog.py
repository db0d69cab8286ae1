"""Per-model prices: the policy's overrides first, else the ``genai-prices`` catalog.

The catalog is the data bundled with the installed ``genai-prices`` package, read through a
private :class:`genai_prices.data_snapshot.DataSnapshot` built from it. tierwise never starts
``genai_prices.UpdatePrices`` (the package's opt-in background fetcher) and does not read the
process-wide custom snapshot such a fetcher installs, so a lookup never touches the network and
the same package version and date always give the same prices.

Choices made where the catalog is richer than a flat price list:

* **Dates.** A model's prices can change over time (``ConditionalPrice`` with a start date).
  The lookup uses the catalog's prices in force at ``at`` (default: the current UTC date), and
  caches one result per (model, provider, UTC date). Time-of-day prices (a few off-peak
  discounts outside Anthropic and OpenAI) are resolved at midnight UTC of that date.
* **Tiers.** Some prices are tiered by prompt size (e.g. a higher rate for every token once
  the prompt passes 200K tokens). tierwise takes the *base* tier: routing targets prompts far
  below those thresholds, and a policy override is the place for a long-context rate.
* **Variants.** Request-specific variants (batch processing, priority service tiers) are not
  applied; batch is a flat 50% discount in :func:`tierwise.pricing.cost_of`.
* **Missing cache prices.** A cache read without its own price is billed as input; a cache
  write (5-minute or 1-hour) without its own price is billed as input too — which is how
  providers without cache writes (OpenAI) bill those tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from functools import cache
from typing import Any, Protocol

from tierwise.errors import PricingError, UnknownModelError

__all__ = ["ModelPrices", "PriceCatalog", "PriceTable", "catalog_version"]


class PriceTable(Protocol):
    """A policy's ``[prices."MODEL"]`` table (USD per million tokens), as pricing reads it.

    A protocol, so pricing (a lower layer) needs nothing from the policy package.
    """

    @property
    def input(self) -> Decimal: ...

    @property
    def output(self) -> Decimal: ...

    @property
    def cache_read(self) -> Decimal | None: ...

    @property
    def cache_write(self) -> Decimal | None: ...

    @property
    def cache_write_1h(self) -> Decimal | None: ...


@dataclass(frozen=True, slots=True)
class ModelPrices:
    """USD per million tokens of one model, one price per usage bucket.

    ``source`` says where they came from: ``"policy"`` for an override in the policy file,
    ``"catalog:<provider>@<YYYY-MM-DD>"`` for a catalog lookup at that date, or any label a
    caller chooses (the what-if calculator uses ``"explicit"``).
    """

    model: str
    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    source: str

    @classmethod
    def of(
        cls,
        model: str,
        input: Decimal | str | int,
        output: Decimal | str | int,
        *,
        cache_read: Decimal | str | int | None = None,
        cache_write_5m: Decimal | str | int | None = None,
        cache_write_1h: Decimal | str | int | None = None,
        source: str = "explicit",
    ) -> ModelPrices:
        """Build prices, filling missing cache prices with the input price.

        Raises:
            ValueError: a price is negative or not a finite number.
        """
        base = _price(input, "input")

        def opt(value: Decimal | str | int | None, name: str) -> Decimal:
            return base if value is None else _price(value, name)

        return cls(
            model=model,
            input=base,
            output=_price(output, "output"),
            cache_read=opt(cache_read, "cache_read"),
            cache_write_5m=opt(cache_write_5m, "cache_write_5m"),
            cache_write_1h=opt(cache_write_1h, "cache_write_1h"),
            source=source,
        )

    @classmethod
    def from_policy(cls, model: str, prices: PriceTable) -> ModelPrices:
        """Prices from a policy ``[prices."MODEL"]`` table (``source="policy"``)."""
        return cls.of(
            model,
            prices.input,
            prices.output,
            cache_read=prices.cache_read,
            cache_write_5m=prices.cache_write,
            cache_write_1h=prices.cache_write_1h,
            source="policy",
        )

    @property
    def max_input(self) -> Decimal:
        """The dearest price any input token can be billed at (for worst-case reservations).

        Cache reads are included: they are cheaper than input in every real price list, but an
        override may say otherwise and a reservation must never be smaller than the bill.
        """
        return max(self.input, self.cache_read, self.cache_write_5m, self.cache_write_1h)

    def as_dict(self) -> dict[str, str | None]:
        """The prices as exact decimal strings (JSON-safe); ``model`` is None when unnamed."""
        return {
            "model": self.model or None,
            "input": _plain(self.input),
            "output": _plain(self.output),
            "cache_read": _plain(self.cache_read),
            "cache_write_5m": _plain(self.cache_write_5m),
            "cache_write_1h": _plain(self.cache_write_1h),
            "source": self.source,
        }


class PriceCatalog:
    """Look up a model's prices: policy overrides win, else the ``genai-prices`` catalog.

    Args:
        overrides: per-model prices from the policy (``policy.model.prices``), keyed by model id.
        at: the date (or instant) whose catalog prices to use; naive values are UTC. ``None``
            means "now", re-read per call so a long-running gateway follows price changes.

    Lookups are cached per (model, provider, date); the gateway calls :meth:`prices_for` on
    every request.
    """

    def __init__(
        self, overrides: Mapping[str, PriceTable] | None = None, *, at: datetime | None = None
    ) -> None:
        self._overrides = {
            model: ModelPrices.from_policy(model, prices)
            for model, prices in (overrides or {}).items()
        }
        self._overrides_lower = {m.lower(): p for m, p in self._overrides.items()}
        self._at = _as_utc(at) if at is not None else None
        self._cache: dict[tuple[str, str | None, date], ModelPrices] = {}

    @property
    def at(self) -> datetime | None:
        """The pinned lookup instant (UTC), or ``None`` when following the current date."""
        return self._at

    def prices_for(self, model: str, provider: str | None = None) -> ModelPrices:
        """The prices of *model*, served by *provider* (``"anthropic"``, ``"openai"`` or None).

        The policy's override for the model id wins (matched exactly, then case-insensitively).
        Otherwise the catalog is asked for the model under *provider*; when the provider does
        not list it (an OpenAI-compatible endpoint serving another vendor's model, a test
        provider), the catalog is asked again with the provider inferred from the model id.

        Raises:
            UnknownModelError: neither the policy nor the catalog knows the model.
            PricingError: the catalog lists the model without a per-token price.
        """
        override = self._overrides.get(model) or self._overrides_lower.get(model.lower())
        if override is not None:
            return override
        when = self._at or datetime.now(UTC)
        key = (model, provider, when.date())
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = _lookup(model, provider, when)
        return found

    def knows(self, model: str, provider: str | None = None) -> bool:
        """Whether :meth:`prices_for` can price *model* (no exception raised)."""
        try:
            self.prices_for(model, provider)
        except PricingError:
            return False
        return True


def catalog_version() -> str:
    """The installed ``genai-prices`` version, i.e. the version of the bundled price data."""
    from importlib.metadata import version

    return version("genai-prices")


# -- catalog access -------------------------------------------------------------------------------


@cache
def _snapshot() -> Any:
    """A snapshot of the bundled price data, private to tierwise (never auto-updated)."""
    from genai_prices.data import providers
    from genai_prices.data_snapshot import DataSnapshot

    return DataSnapshot(providers=providers, from_auto_update=False)


def _lookup(model: str, provider: str | None, when: datetime) -> ModelPrices:
    snapshot = _snapshot()
    day = datetime.combine(when.date(), time(0, 0), tzinfo=UTC)
    found: Any = None
    if provider is not None:
        try:
            found = snapshot.find_provider_model(model, None, provider, None)
        except LookupError:
            found = None
    if found is None:
        try:
            found = snapshot.find_provider_model(model, None, None, None)
        except LookupError:
            raise UnknownModelError(model) from None
    catalog_provider, info = found
    price = info.get_prices(day)
    base_input = _base(price.input_mtok)
    output = _base(price.output_mtok)
    if base_input is None or output is None:
        raise PricingError(
            f"the genai-prices catalog lists model {model!r} ({catalog_provider.id}) without a "
            f"per-token input and output price; add [prices.{model!r}] to the policy"
        )
    return ModelPrices.of(
        model,
        base_input,
        output,
        cache_read=_base(price.cache_read_mtok),
        cache_write_5m=_first(_base(price.cache_write_5m_mtok), _base(price.cache_write_mtok)),
        cache_write_1h=_base(price.cache_write_1h_mtok),
        source=f"catalog:{catalog_provider.id}@{day.date().isoformat()}",
    )


def _base(value: Any) -> Decimal | None:
    """A catalog price as a flat Decimal: tiered prices give their base tier."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        return value
    base = getattr(value, "base", None)  # genai_prices.types.TieredPrices
    if isinstance(base, Decimal):
        return base
    raise PricingError(f"unexpected price shape in the genai-prices catalog: {value!r}")


def _first(*values: Decimal | None) -> Decimal | None:
    return next((v for v in values if v is not None), None)


# -- helpers -------------------------------------------------------------------------------------


def _price(value: Decimal | str | int, name: str) -> Decimal:
    if isinstance(value, bool | float):
        # floats carry binary rounding into money; require an exact representation
        raise ValueError(f"{name} price must be a Decimal, str or int, got {value!r}")
    try:
        d = value if isinstance(value, Decimal) else Decimal(value)
    except ArithmeticError:
        raise ValueError(f"{name} price must be a number, got {value!r}") from None
    if not d.is_finite() or d < 0:
        raise ValueError(f"{name} price must be a finite number ≥ 0, got {value!r}")
    return d


def _as_utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _plain(d: Decimal) -> str:
    """A Decimal as plain fixed-point text without trailing zeros (``1.8``, ``0.075``, ``3``)."""
    return f"{d.normalize():f}"
