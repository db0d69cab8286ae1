"""`tierwise cost`: the what-if table and JSON, tier resolution, and errors as one line + exit 2."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from tierwise.cli import build_app

ARTICLES = [
    "--tasks-per-day",
    "500",
    "--input-tokens",
    "2000",
    "--output-tokens",
    "500",
    "--price",
    "cheap=0.80:4",
    "--price",
    "mid=3:15",
    "--price",
    "strong=15:75",
    "--mix",
    "cheap=0.8,mid=0.15,strong=0.05",
]

POLICY = """\
version = 1

[[tiers]]
name = "cheap"
provider = "anthropic"
model = "claude-haiku-4-5"

[[tiers]]
name = "strong"
provider = "anthropic"
model = "claude-opus-4-6"

[prices."claude-haiku-4-5"]
input = 0.5
output = 2.5
"""


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No ./tierwise.toml or $TIERWISE_POLICY leaks in from the developer's machine."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TIERWISE_POLICY", raising=False)
    monkeypatch.setenv("COLUMNS", "160")


def invoke(*args: str) -> Result:
    return CliRunner().invoke(build_app(), ["cost", *args])


def as_json(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def daily(data: dict[str, Any]) -> dict[str, Decimal]:
    return {s["name"]: Decimal(s["daily_usd"]) for s in data["strategies"]}


def test_articles_numbers_in_json() -> None:
    """$1.80, $6.75, $33.75 a day for single tiers and $4.14 for the 80/15/5 mix."""
    data = as_json(invoke(*ARTICLES, "--json"))
    assert daily(data) == {
        "cheap": Decimal("1.8"),
        "mid": Decimal("6.75"),
        "strong": Decimal("33.75"),
        "cheap=0.8,mid=0.15,strong=0.05": Decimal("4.14"),
    }
    assert data["baseline"] == "strong"
    mix = data["strategies"][-1]
    assert mix["kind"] == "mix"
    assert Decimal(mix["monthly_usd"]) == Decimal("124.2")
    assert Decimal(mix["saving_daily_usd"]) == Decimal("29.61")
    assert data["tiers"]["cheap"]["source"] == "explicit"


def test_articles_numbers_in_the_table() -> None:
    result = invoke(*ARTICLES)
    assert result.exit_code == 0, result.stderr
    for amount in ("$1.80", "$6.75", "$33.75", "$4.14", "$124.20", "baseline"):
        assert amount in result.stdout


def test_tiers_default_to_the_policy_ladder_priced_from_the_catalog() -> None:
    args = ["--tasks-per-day", "1000", "--input-tokens", "1000", "--output-tokens", "100"]
    data = as_json(invoke(*args, "--at", "2026-06-01", "--json"))
    assert [s["name"] for s in data["strategies"]] == ["cheap", "mid", "strong"]
    assert data["tiers"]["cheap"]["model"] == "claude-haiku-4-5"
    assert data["tiers"]["strong"]["source"] == "catalog:anthropic@2026-06-01"
    # 1000 × (1000 × $1 + 100 × $5) / 1M = $1.50 on haiku; opus: 1000 × (5000 + 2500) / 1M
    assert daily(data) == {"cheap": Decimal("1.5"), "mid": Decimal("4.5"), "strong": Decimal("7.5")}


def test_policy_overrides_price_the_ladder(tmp_path: Path) -> None:
    policy = tmp_path / "team.toml"
    policy.write_text(POLICY)
    args = ["--tasks-per-day", "1", "--input-tokens", "1000000", "--output-tokens", "0"]
    data = as_json(invoke(*args, "--policy", str(policy), "--json"))
    assert list(data["tiers"]) == ["cheap", "strong"]
    assert data["tiers"]["cheap"]["source"] == "policy"
    assert daily(data) == {"cheap": Decimal("0.5"), "strong": Decimal(5)}


def test_tier_model_and_price_options_name_the_tiers_compared() -> None:
    args = ["--tasks-per-day", "1", "--input-tokens", "1000000", "--output-tokens", "0"]
    data = as_json(
        invoke(
            *args,
            "--tier",
            "small=gpt-4o-mini",
            "--price",
            "big=10:30",
            "--mix",
            "small=0.5,big=0.5",
            "--at",
            "2026-06-01",
            "--json",
        )
    )
    assert [s["name"] for s in data["strategies"]] == ["small", "big", "small=0.5,big=0.5"]
    assert daily(data) == {
        "small": Decimal("0.15"),
        "big": Decimal(10),
        "small=0.5,big=0.5": Decimal("5.075"),
    }


def test_cache_read_share_uses_the_cache_read_price() -> None:
    args = ["--tasks-per-day", "1", "--input-tokens", "1000000", "--output-tokens", "0"]
    data = as_json(invoke(*args, "--price", "t=3:15:0.3", "--cache-read-share", "0.5", "--json"))
    assert daily(data) == {"t": Decimal("1.65")}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--price", "cheap=0.80"], "expected TIER=INPUT:OUTPUT[:CACHE_READ]"),
        (["--price", "cheap=x:4"], "expected TIER=INPUT:OUTPUT[:CACHE_READ]"),
        (["--price", "a=1:2", "--mix", "a=0.7"], "shares sum to 0.7, expected exactly 1"),
        (["--price", "a=1:2", "--mix", "a"], "expected TIER=SHARE"),
        (["--tier", "cheap=acme-llm-9000"], "no price known for model 'acme-llm-9000'"),
        (["--tier", "cheap"], "expected TIER=MODEL"),
        (["--mix", "gold=1"], "tier 'gold' has no model"),
        (["--cache-read-share", "1.5"], "between 0 and 1"),
        (["--at", "last tuesday"], "bad --at"),
        (["--days-per-month", "many"], "bad --days-per-month"),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_exit_2(extra: list[str], message: str) -> None:
    result = invoke("--tasks-per-day", "1", "--input-tokens", "1", "--output-tokens", "1", *extra)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_policy_file_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("version = 1\n[[tiers]]\nname = 'x'\n")
    result = invoke(
        "--tasks-per-day", "1", "--input-tokens", "1", "--output-tokens", "1", "--policy", str(bad)
    )
    assert result.exit_code == 2
    assert "Traceback" not in result.stderr


def test_help_has_an_example() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    assert "Example" in result.stdout
    assert "--mix cheap=0.8,mid=0.15,strong=0.05" in result.stdout
