"""Golden usage fixtures: real-shaped provider usage, priced exactly against hand-worked totals.

Each file in ``tests/fixtures/usage`` holds a provider response (or stream events), the prices
the hand calculation used, the catalog date those prices are from, the expected buckets and the
expected cost worked out by hand in the ``working`` field.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tierwise.pricing import (
    ModelPrices,
    PriceCatalog,
    Usage,
    cost_of,
    merge_anthropic_stream_usage,
    usage_from_anthropic,
    usage_from_openai,
)

FIXTURES = sorted((Path(__file__).parent / "fixtures" / "usage").glob("*.json"))
TOLERANCE = Decimal("1e-9")


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _prices(fx: dict[str, Any]) -> ModelPrices:
    p = fx["prices_usd_per_mtok"]
    return ModelPrices(
        model=fx["model"],
        input=Decimal(p["input"]),
        output=Decimal(p["output"]),
        cache_read=Decimal(p["cache_read"]),
        cache_write_5m=Decimal(p["cache_write_5m"]),
        cache_write_1h=Decimal(p["cache_write_1h"]),
        source="fixture",
    )


def _usage_from_dicts(fx: dict[str, Any]) -> Usage:
    if fx["shape"] == "anthropic":
        return usage_from_anthropic(fx["response"]["usage"])
    if fx["shape"] == "openai":
        return usage_from_openai(fx["response"]["usage"])
    events = fx["events"]
    start = next(e for e in events if e["type"] == "message_start")
    usage = usage_from_anthropic(start["message"]["usage"])
    for event in events:
        if event["type"] == "message_delta":
            usage = merge_anthropic_stream_usage(usage, event["usage"])
    return usage


def _usage_from_sdk_objects(fx: dict[str, Any]) -> Usage:
    """The same usage, parsed by the official SDKs' pydantic models first."""
    if fx["shape"] == "anthropic":
        from anthropic.types import Message

        return usage_from_anthropic(Message.model_validate(fx["response"]).usage)
    if fx["shape"] == "openai":
        if fx["response"]["object"] == "response":
            from openai.types.responses import ResponseUsage

            return usage_from_openai(ResponseUsage.model_validate(fx["response"]["usage"]))
        from openai.types.chat import ChatCompletion

        return usage_from_openai(ChatCompletion.model_validate(fx["response"]).usage)
    from anthropic.types import RawMessageDeltaEvent, RawMessageStartEvent

    usage = Usage()
    for event in fx["events"]:
        if event["type"] == "message_start":
            usage = usage_from_anthropic(RawMessageStartEvent.model_validate(event).message.usage)
        elif event["type"] == "message_delta":
            delta = RawMessageDeltaEvent.model_validate(event)
            usage = merge_anthropic_stream_usage(usage, delta.usage)
    return usage


def test_there_are_fixtures_for_every_shape() -> None:
    """The golden set covers plain, cache 5m/1h writes, reads, streams, cached and reasoning."""
    names = {p.stem for p in FIXTURES}
    shapes = {_load(p)["shape"] for p in FIXTURES}
    assert shapes == {"anthropic", "anthropic_stream", "openai"}
    for needle in ("plain", "5m", "1h", "cache_read", "stream", "cached", "reasoning", "batch"):
        assert any(needle in n for n in names), needle


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_fixture_buckets_and_cost_match_the_hand_calculation(path: Path) -> None:
    """Usage normalises to the expected buckets and costs the hand-worked total to 1e-9 USD."""
    fx = _load(path)
    usage = _usage_from_dicts(fx)
    assert usage.as_dict() == fx["expected_buckets"]
    cost = cost_of(usage, _prices(fx), batch=fx["batch"])
    expected = Decimal(fx["expected_cost_usd"])
    assert abs(cost - expected) < TOLERANCE
    assert cost == expected  # Decimal arithmetic is exact, not merely close


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_sdk_objects_normalise_like_the_raw_json(path: Path) -> None:
    """The SDKs' pydantic usage objects give the same buckets as the raw JSON."""
    fx = _load(path)
    assert _usage_from_sdk_objects(fx).as_dict() == fx["expected_buckets"]


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_fixture_prices_are_the_catalog_prices_at_the_pinned_date(path: Path) -> None:
    """The prices written in each fixture are what the catalog gives for its model and date."""
    fx = _load(path)
    at = datetime.fromisoformat(fx["catalog_at"]).replace(tzinfo=UTC)
    found = PriceCatalog(at=at).prices_for(fx["model"], fx["provider"])
    expected = _prices(fx)
    for bucket in ("input", "output", "cache_read", "cache_write_5m", "cache_write_1h"):
        assert getattr(found, bucket) == getattr(expected, bucket), bucket
    assert found.source == f"catalog:{fx['provider']}@{fx['catalog_at']}"
