"""Exact cost of token usage: a plain sum of bucket × price, in Decimal.

Buckets never overlap (see :class:`tierwise.pricing.Usage`), so no token is billed twice. All
arithmetic runs in a private decimal context with 60 significant digits: token counts times
per-million prices are then exact, whatever context the caller has set.
"""

from __future__ import annotations

from decimal import Context, Decimal, localcontext

from tierwise.pricing.catalog import ModelPrices
from tierwise.pricing.usage import Usage

__all__ = ["BATCH_DISCOUNT", "cost_breakdown", "cost_of", "max_cost"]

_MILLION = Decimal(1_000_000)
_CONTEXT = Context(prec=60)

#: Share of the price paid for batch requests (both Anthropic and OpenAI bill batches at 50%).
BATCH_DISCOUNT = Decimal("0.5")


def cost_breakdown(usage: Usage, prices: ModelPrices, *, batch: bool = False) -> dict[str, Decimal]:
    """USD per usage bucket (keys as in :meth:`Usage.as_dict`), exact.

    Args:
        usage: the disjoint token buckets of a call.
        prices: USD per million tokens for the model that served it.
        batch: apply the 50% batch discount to every bucket.
    """
    factor = BATCH_DISCOUNT if batch else Decimal(1)
    with localcontext(_CONTEXT):
        return {
            "input_tokens": usage.input_tokens * prices.input * factor / _MILLION,
            "cache_write_5m_tokens": usage.cache_write_5m_tokens
            * prices.cache_write_5m
            * factor
            / _MILLION,
            "cache_write_1h_tokens": usage.cache_write_1h_tokens
            * prices.cache_write_1h
            * factor
            / _MILLION,
            "cache_read_tokens": usage.cache_read_tokens * prices.cache_read * factor / _MILLION,
            "output_tokens": usage.output_tokens * prices.output * factor / _MILLION,
        }


def cost_of(usage: Usage, prices: ModelPrices, *, batch: bool = False) -> Decimal:
    """The exact USD cost of *usage* at *prices*; ``batch`` halves every bucket.

    >>> from tierwise.pricing import ModelPrices, Usage
    >>> cost_of(Usage(input_tokens=2000, output_tokens=500), ModelPrices.of("m", "3", "15"))
    Decimal('0.0135')
    """
    with localcontext(_CONTEXT):
        total = (
            usage.input_tokens * prices.input
            + usage.cache_write_5m_tokens * prices.cache_write_5m
            + usage.cache_write_1h_tokens * prices.cache_write_1h
            + usage.cache_read_tokens * prices.cache_read
            + usage.output_tokens * prices.output
        )
        if batch:
            total *= BATCH_DISCOUNT
        return total / _MILLION


def max_cost(prices: ModelPrices, *, input_tokens: int, max_tokens: int) -> Decimal:
    """The most one call can cost: a bound to reserve against budgets before it starts.

    Every input token is priced at the dearest input-side price (uncached input, 5-minute or
    1-hour cache write, cache read: see :attr:`ModelPrices.max_input`) and ``max_tokens``
    output tokens at the output price. No batch discount: a reservation must never be smaller
    than the bill.

    Raises:
        ValueError: a token count is negative.
    """
    if input_tokens < 0 or max_tokens < 0:
        raise ValueError(
            f"token counts must be ≥ 0, got input_tokens={input_tokens}, max_tokens={max_tokens}"
        )
    with localcontext(_CONTEXT):
        return (input_tokens * prices.max_input + max_tokens * prices.output) / _MILLION
