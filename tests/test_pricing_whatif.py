"""What-if projections: the articles' arithmetic exactly, and an independent formula on random
workloads."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tierwise.pricing import ModelPrices, Workload, parse_mix, parse_price, project

ARTICLE_TIERS = dict(parse_price(p) for p in ("cheap=0.80:4", "mid=3:15", "strong=15:75"))


def test_articles_numbers_are_reproduced_exactly() -> None:
    """500 tasks/day at 2,000 in / 500 out: $1.80, $6.75, $33.75 a day and $4.14 for 80/15/5."""
    workload = Workload(tasks_per_day=Decimal(500), input_tokens=2000, output_tokens=500)
    result = project(workload, ARTICLE_TIERS, [parse_mix("cheap=0.8,mid=0.15,strong=0.05")])
    daily = {s.name: s.daily for s in result.strategies}
    assert daily == {
        "cheap": Decimal("1.80"),
        "mid": Decimal("6.75"),
        "strong": Decimal("33.75"),
        "cheap=0.8,mid=0.15,strong=0.05": Decimal("4.14"),
    }
    assert result.baseline == "strong"
    mix = result.strategy("cheap=0.8,mid=0.15,strong=0.05")
    assert mix.monthly == Decimal("124.2")
    assert mix.saving_daily == Decimal("29.61")
    assert result.strategy("strong").saving_daily == 0
    assert [s.name for s in result.strategies][:3] == ["cheap", "mid", "strong"]


def test_cache_read_share_is_billed_at_the_cache_read_price() -> None:
    tiers = {"t": ModelPrices.of("", "3", "15", cache_read="0.3")}
    w = Workload(Decimal(1), 1_000_000, 0, cache_read_share=Decimal("0.25"))
    # 750k × 3 + 250k × 0.3 = 2.25 + 0.075
    assert project(w, tiers).strategy("t").per_task == Decimal("2.325")


def test_batch_halves_every_strategy() -> None:
    w = Workload(Decimal(500), 2000, 500)
    full = project(w, ARTICLE_TIERS)
    half = project(Workload(Decimal(500), 2000, 500, batch=True), ARTICLE_TIERS)
    for a, b in zip(full.strategies, half.strategies, strict=True):
        assert b.daily * 2 == a.daily


@pytest.mark.parametrize(
    ("mix", "message"),
    [
        ("cheap=0.5", "sum to 0.5"),
        ("cheap=0.5,nope=0.5", "unknown tier 'nope'"),
    ],
)
def test_bad_mixes_are_rejected(mix: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        project(Workload(Decimal(1), 1, 1), ARTICLE_TIERS, [parse_mix(mix)])


@pytest.mark.parametrize("text", ["cheap", "cheap=x", "=0.5", "cheap=0.5,cheap=0.5", "cheap=-1"])
def test_bad_mix_syntax_names_the_expected_form(text: str) -> None:
    with pytest.raises(ValueError, match="bad mix"):
        parse_mix(text)


def test_mix_accepts_percentages() -> None:
    assert parse_mix("cheap=80%, mid=20%") == {"cheap": Decimal("0.8"), "mid": Decimal("0.2")}


@pytest.mark.parametrize("text", ["cheap=0.8", "cheap=0.8:4:1:2", "cheap=a:4", "0.8:4", "c=-1:2"])
def test_bad_price_syntax_names_the_expected_form(text: str) -> None:
    with pytest.raises(ValueError, match=r"TIER=INPUT:OUTPUT\[:CACHE_READ\]"):
        parse_price(text)


def test_price_with_cache_read() -> None:
    name, p = parse_price("cheap=0.80:4:0.08")
    assert (name, p.input, p.output, p.cache_read) == ("cheap", Decimal("0.80"), 4, Decimal("0.08"))


def test_workload_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="cache_read_share"):
        Workload(Decimal(1), 1, 1, cache_read_share=Decimal("1.5"))
    with pytest.raises(ValueError, match="tasks_per_day"):
        Workload(Decimal(-1), 1, 1)


def test_a_free_baseline_gives_zero_saving_ratio() -> None:
    result = project(Workload(Decimal(10), 0, 0), ARTICLE_TIERS)
    assert all(s.saving_ratio == 0 for s in result.strategies)


# -- independent formula ---------------------------------------------------------------------------

price = st.decimals(min_value=0, max_value=100, places=3, allow_nan=False)
tier_prices = st.builds(lambda i, o, r: ModelPrices.of("", i, o, cache_read=r), price, price, price)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Workload, dict[str, ModelPrices], dict[str, Decimal]]:
    names = draw(st.lists(st.sampled_from("abcdefg"), min_size=1, max_size=5, unique=True))
    tiers = {n: draw(tier_prices) for n in names}
    cuts = sorted(
        draw(st.lists(st.integers(0, 100), min_size=len(names) - 1, max_size=len(names) - 1))
    )
    bounds = [0, *cuts, 100]
    mix = {n: Decimal(bounds[i + 1] - bounds[i]) / 100 for i, n in enumerate(names)}
    workload = Workload(
        tasks_per_day=draw(st.decimals(min_value=0, max_value=10**6, places=2, allow_nan=False)),
        input_tokens=draw(st.integers(0, 2_000_000)),
        output_tokens=draw(st.integers(0, 200_000)),
        cache_read_share=draw(st.decimals(min_value=0, max_value=1, places=3, allow_nan=False)),
        days_per_month=Decimal(draw(st.integers(1, 31))),
        batch=draw(st.booleans()),
    )
    return workload, tiers, mix


def _reference_daily(w: Workload, p: ModelPrices) -> Fraction:
    """The per-day cost in rationals, written independently of the implementation."""
    share = Fraction(w.cache_read_share)
    tokens_in = Fraction(w.input_tokens)
    dollars = (
        tokens_in * (1 - share) * Fraction(p.input)
        + tokens_in * share * Fraction(p.cache_read)
        + Fraction(w.output_tokens) * Fraction(p.output)
    ) / 10**6
    if w.batch:
        dollars /= 2
    return dollars * Fraction(w.tasks_per_day)


@given(scenarios())
def test_projection_matches_an_independent_formula(
    scenario: tuple[Workload, dict[str, ModelPrices], dict[str, Decimal]],
) -> None:
    workload, tiers, mix = scenario
    result = project(workload, tiers, [mix])
    reference = {name: _reference_daily(workload, p) for name, p in tiers.items()}
    dearest = max(reference.values())
    for name in tiers:
        s = result.strategy(name)
        assert Fraction(s.daily) == reference[name]
        assert Fraction(s.monthly) == reference[name] * Fraction(workload.days_per_month)
        assert Fraction(s.saving_daily) == dearest - reference[name]
    mixed = sum((Fraction(share) * reference[n] for n, share in mix.items()), Fraction(0))
    mix_row = result.strategies[-1]
    assert mix_row.is_mix
    assert not any(s.is_mix for s in result.strategies[:-1])
    assert Fraction(mix_row.daily) == mixed
    assert Fraction(result.strategy(result.baseline).daily) == dearest
