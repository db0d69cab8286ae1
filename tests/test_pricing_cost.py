"""cost_of / max_cost: exact Decimal arithmetic, batch discount, worst-case reservations."""

from __future__ import annotations

from decimal import Decimal, localcontext
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from tierwise.pricing import ModelPrices, Usage, cost_breakdown, cost_of, max_cost

counts = st.integers(min_value=0, max_value=5_000_000)
price_values = st.decimals(min_value=0, max_value=200, places=4, allow_nan=False)
usages = st.builds(Usage, counts, counts, counts, counts, counts)
prices = st.builds(
    lambda i, o, r, w5, w1: ModelPrices("m", i, o, r, w5, w1, "test"),
    price_values,
    price_values,
    price_values,
    price_values,
    price_values,
)


def _fraction_cost(u: Usage, p: ModelPrices) -> Fraction:
    """An independent formula in rationals."""
    pairs = [
        (u.input_tokens, p.input),
        (u.cache_write_5m_tokens, p.cache_write_5m),
        (u.cache_write_1h_tokens, p.cache_write_1h),
        (u.cache_read_tokens, p.cache_read),
        (u.output_tokens, p.output),
    ]
    return sum((n * Fraction(price) for n, price in pairs), Fraction(0)) / 1_000_000


def test_cost_of_prices_each_bucket_at_its_own_price() -> None:
    p = ModelPrices.of("m", "3", "15", cache_read="0.3", cache_write_5m="3.75", cache_write_1h="6")
    assert cost_of(Usage(input_tokens=1_000_000), p) == Decimal(3)
    assert cost_of(Usage(cache_write_5m_tokens=1_000_000), p) == Decimal("3.75")
    assert cost_of(Usage(cache_write_1h_tokens=1_000_000), p) == Decimal(6)
    assert cost_of(Usage(cache_read_tokens=1_000_000), p) == Decimal("0.3")
    assert cost_of(Usage(output_tokens=1_000_000), p) == Decimal(15)
    assert cost_of(Usage(), p) == 0


@given(usages, prices)
def test_cost_of_equals_an_independent_rational_formula(u: Usage, p: ModelPrices) -> None:
    assert Fraction(cost_of(u, p)) == _fraction_cost(u, p)


@given(usages, prices)
def test_batch_is_exactly_half(u: Usage, p: ModelPrices) -> None:
    assert cost_of(u, p, batch=True) * 2 == cost_of(u, p)


@given(usages, prices)
def test_breakdown_sums_to_the_cost(u: Usage, p: ModelPrices) -> None:
    parts = cost_breakdown(u, p)
    assert set(parts) == set(u.as_dict())
    assert sum(parts.values(), Decimal(0)) == cost_of(u, p)


@given(usages, usages, prices)
def test_cost_is_additive_and_monotonic(a: Usage, b: Usage, p: ModelPrices) -> None:
    assert cost_of(a + b, p) == cost_of(a, p) + cost_of(b, p)
    assert cost_of(a + b, p) >= cost_of(a, p)


@given(usages, prices)
def test_cost_is_exact_even_under_a_low_precision_caller_context(u: Usage, p: ModelPrices) -> None:
    with localcontext() as ctx:
        ctx.prec = 3
        cost = cost_of(u, p)
    assert Fraction(cost) == _fraction_cost(u, p)


@given(usages, prices)
def test_max_cost_bounds_every_usage_within_the_reservation(u: Usage, p: ModelPrices) -> None:
    """Whatever mix of cached/uncached input the call ends up with, the reservation covers it."""
    bound = max_cost(p, input_tokens=u.total_input_tokens, max_tokens=u.output_tokens)
    assert bound >= cost_of(u, p)


def test_max_cost_uses_the_dearest_input_side_price() -> None:
    p = ModelPrices.of("m", "5", "25", cache_read="0.5", cache_write_5m="6.25", cache_write_1h="10")
    assert max_cost(p, input_tokens=1000, max_tokens=100) == Decimal("0.0125")  # 1000×10 + 100×25
    assert max_cost(p, input_tokens=0, max_tokens=0) == 0
