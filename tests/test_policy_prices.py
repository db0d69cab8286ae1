"""A [prices] override without cache_read charges cached tokens at the input price: say so."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from typer.testing import CliRunner

from tierwise.policy import check_policy, default_policy, loads_policy
from tierwise.pricing import PriceCatalog, Usage, cost_of

HEAD = """\
version = 1
[[tiers]]
name = "cheap"
provider = "anthropic"
model = "claude-haiku-4-5"
[[tiers]]
name = "strong"
provider = "openai"
model = "house-model"
[[rules]]
when = { kind = "extract" }
tier = "cheap"
"""


def test_override_without_cache_read_is_a_load_warning_with_the_catalog_price() -> None:
    text = HEAD + '[prices."claude-haiku-4-5"]\ninput = 1\noutput = 5\n'
    text += '[prices."house-model"]\ninput = 2\noutput = 8\n'
    policy = loads_policy(text)
    by_path = {w.path: w for w in policy.warnings}
    assert set(by_path) == {"prices.claude-haiku-4-5", "prices.house-model"}
    haiku = by_path["prices.claude-haiku-4-5"]
    assert haiku.severity == "warning"
    assert haiku.line == text.splitlines().index('[prices."claude-haiku-4-5"]') + 1
    assert "charged at the full input price (1 USD per million)" in haiku.message
    listed = PriceCatalog().prices_for("claude-haiku-4-5", "anthropic").cache_read
    assert f"add cache_read = {listed}" in haiku.message
    house = by_path["prices.house-model"]
    assert "add cache_read (USD per million cached input tokens)" in house.message


def test_the_warning_is_about_real_money() -> None:
    """What the warning says: without cache_read, a cached read costs the input price."""
    text = HEAD + '[prices."house-model"]\ninput = 2\noutput = 8\n'
    prices = PriceCatalog(loads_policy(text).model.prices).prices_for("house-model")
    usage = Usage(input_tokens=0, cache_read_tokens=1_000_000, output_tokens=0)
    assert cost_of(usage, prices) == Decimal(2)


def test_a_complete_override_and_unused_entries_do_not_warn_about_cache_read() -> None:
    text = HEAD + '[prices."house-model"]\ninput = 2\noutput = 8\ncache_read = 0.2\n'
    text += '[prices."unused"]\ninput = 2\noutput = 8\n'
    policy = loads_policy(text)
    assert policy.warnings == ()
    assert [i.path for i in check_policy(policy)] == ["prices.unused"]  # "no tier uses it"
    assert default_policy().warnings == ()


def test_policy_check_prints_it_and_strict_fails(tmp_path: Path) -> None:
    from tierwise.cli import build_app

    file = tmp_path / "p.toml"
    text = HEAD + '[prices."house-model"]\ninput = 2\noutput = 8\n'
    file.write_text(text)
    line = text.splitlines().index('[prices."house-model"]') + 1
    result = CliRunner().invoke(build_app(), ["policy", "check", str(file)])
    assert result.exit_code == 0
    assert f"{file}:{line}: warning: prices.house-model: no cache_read price" in result.output
    assert "ok, 1 warning;" in result.output
    strict = CliRunner().invoke(build_app(), ["policy", "check", str(file), "--strict"])
    assert strict.exit_code == 1
