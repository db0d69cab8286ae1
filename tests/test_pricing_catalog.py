"""PriceCatalog: genai-prices lookups pinned to a date, policy overrides, fallbacks, no network."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from tierwise.errors import PricingError, UnknownModelError
from tierwise.policy.schema import Prices
from tierwise.pricing import ModelPrices, PriceCatalog

PINNED = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("model", "inp", "out", "read", "w5", "w1"),
    [
        ("claude-haiku-4-5", "1", "5", "0.1", "1.25", "2"),
        ("claude-sonnet-4-6", "3", "15", "0.3", "3.75", "6"),
        ("claude-opus-4-6", "5", "25", "0.5", "6.25", "10"),
    ],
)
def test_catalog_gives_the_known_claude_prices_at_a_pinned_date(
    model: str, inp: str, out: str, read: str, w5: str, w1: str
) -> None:
    """The default policy's three models cost what Anthropic publishes, per million tokens."""
    p = PriceCatalog(at=PINNED).prices_for(model, "anthropic")
    assert (p.input, p.output) == (Decimal(inp), Decimal(out))
    assert (p.cache_read, p.cache_write_5m, p.cache_write_1h) == (
        Decimal(read),
        Decimal(w5),
        Decimal(w1),
    )
    assert p.source == "catalog:anthropic@2026-06-01"
    assert p.model == model


def test_tiered_prices_give_the_base_tier() -> None:
    """Before 2026-03-13 Sonnet 4.6 is tiered by prompt size; the base tier is used."""
    early = PriceCatalog(at=datetime(2026, 1, 15, tzinfo=UTC)).prices_for("claude-sonnet-4-6")
    assert (early.input, early.output, early.cache_write_1h) == (
        Decimal(3),
        Decimal(15),
        Decimal(6),
    )
    assert early.source.endswith("@2026-01-15")


def test_the_date_pin_selects_the_prices_in_force_then() -> None:
    """o3 was cut from $10/$40 to $2/$8 on 2025-06-10; the pinned date decides which applies."""
    before = PriceCatalog(at=datetime(2025, 6, 1)).prices_for("o3", "openai")
    after = PriceCatalog(at=datetime(2025, 6, 11)).prices_for("o3", "openai")
    assert (before.input, before.output) == (Decimal(10), Decimal(40))
    assert (after.input, after.output) == (Decimal(2), Decimal(8))


def test_missing_cache_write_prices_fall_back_to_input() -> None:
    """OpenAI models have no cache-write price: writes are billed as input."""
    p = PriceCatalog(at=PINNED).prices_for("gpt-4o-mini", "openai")
    assert p.cache_read == Decimal("0.075")
    assert p.cache_write_5m == p.cache_write_1h == p.input == Decimal("0.15")


def test_dated_model_ids_resolve_to_their_model() -> None:
    p = PriceCatalog(at=PINNED).prices_for("claude-haiku-4-5-20251001", "anthropic")
    assert (p.input, p.output) == (Decimal(1), Decimal(5))
    assert p.model == "claude-haiku-4-5-20251001"


def test_a_provider_that_does_not_list_the_model_falls_back_to_the_model_id() -> None:
    """An OpenAI-compatible endpoint serving Claude, or a test provider, still gets a price."""
    catalog = PriceCatalog(at=PINNED)
    via_openai = catalog.prices_for("claude-haiku-4-5", "openai")
    via_unknown = catalog.prices_for("claude-haiku-4-5", "scripted")
    assert via_openai.input == via_unknown.input == Decimal(1)
    assert via_unknown.source == "catalog:anthropic@2026-06-01"


def test_unknown_model_raises_unknown_model_error_naming_it() -> None:
    with pytest.raises(UnknownModelError) as info:
        PriceCatalog(at=PINNED).prices_for("acme-llm-9000", "openai")
    assert info.value.model == "acme-llm-9000"
    assert "acme-llm-9000" in str(info.value)
    assert not PriceCatalog(at=PINNED).knows("acme-llm-9000")


def test_policy_override_wins_over_the_catalog() -> None:
    overrides = {"claude-haiku-4-5": Prices(input=Decimal("0.8"), output=Decimal(4))}
    catalog = PriceCatalog(overrides, at=PINNED)
    p = catalog.prices_for("claude-haiku-4-5", "anthropic")
    assert (p.input, p.output, p.source) == (Decimal("0.8"), Decimal(4), "policy")
    # cache prices the override leaves out fall back to its input price
    assert p.cache_read == p.cache_write_5m == p.cache_write_1h == Decimal("0.8")
    # other models still come from the catalog
    assert catalog.prices_for("claude-opus-4-6").source.startswith("catalog:")


def test_policy_override_gives_unknown_models_a_price_and_keeps_cache_prices() -> None:
    overrides = {
        "Acme-Local": Prices(
            input=Decimal(2),
            output=Decimal(6),
            cache_read=Decimal("0.2"),
            cache_write=Decimal("2.5"),
            cache_write_1h=Decimal(4),
        )
    }
    p = PriceCatalog(overrides).prices_for("acme-local", "openai")  # case-insensitive
    assert (p.cache_read, p.cache_write_5m, p.cache_write_1h) == (
        Decimal("0.2"),
        Decimal("2.5"),
        Decimal(4),
    )


def test_lookups_are_cached_per_model_provider_and_date() -> None:
    catalog = PriceCatalog(at=PINNED)
    first = catalog.prices_for("claude-sonnet-4-6", "anthropic")
    assert catalog.prices_for("claude-sonnet-4-6", "anthropic") is first
    assert catalog.prices_for("claude-sonnet-4-6", None) is not first


def test_unpinned_catalog_uses_today() -> None:
    before = datetime.now(UTC).date().isoformat()
    p = PriceCatalog().prices_for("claude-haiku-4-5", "anthropic")
    after = datetime.now(UTC).date().isoformat()
    assert p.source in {f"catalog:anthropic@{before}", f"catalog:anthropic@{after}"}


def test_lookup_never_opens_a_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    """Prices come from bundled data only: any connection attempt fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the price catalog tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    catalog = PriceCatalog(at=datetime(2026, 2, 2, tzinfo=UTC))
    for model in ("gpt-5", "claude-opus-4-6", "gpt-4.1-mini"):
        assert catalog.prices_for(model).input > 0


def test_a_process_wide_custom_snapshot_does_not_change_tierwise_prices() -> None:
    """genai-prices' auto-updater installs a global snapshot; tierwise keeps the bundled data."""
    from genai_prices import data_snapshot
    from genai_prices.data import providers

    empty = data_snapshot.DataSnapshot(providers=providers[:0], from_auto_update=True)
    data_snapshot.set_custom_snapshot(empty)
    try:
        p = PriceCatalog(at=PINNED).prices_for("claude-haiku-4-5", "anthropic")
    finally:
        data_snapshot.set_custom_snapshot(None)
    assert p.input == Decimal(1)


def test_model_prices_reject_floats_and_negative_prices() -> None:
    with pytest.raises(ValueError, match="Decimal"):
        ModelPrices.of("m", 0.1, "1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="≥ 0"):
        ModelPrices.of("m", "-1", "1")
    with pytest.raises(ValueError, match="number"):
        ModelPrices.of("m", "abc", "1")


def test_model_prices_as_dict_is_exact_text() -> None:
    p = ModelPrices.of("m", Decimal("0.80"), "4", cache_read="0.080")
    assert p.as_dict() == {
        "model": "m",
        "input": "0.8",
        "output": "4",
        "cache_read": "0.08",
        "cache_write_5m": "0.8",
        "cache_write_1h": "0.8",
        "source": "explicit",
    }
    assert p.max_input == Decimal("0.80")


def test_pricing_error_is_the_parent_of_unknown_model() -> None:
    assert issubclass(UnknownModelError, PricingError)
