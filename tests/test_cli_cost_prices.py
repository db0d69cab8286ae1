"""`tierwise prices`: model prices with their source, from the policy's tiers or named models."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from tierwise.cli import build_app


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TIERWISE_POLICY", raising=False)
    monkeypatch.setenv("COLUMNS", "160")


def invoke(*args: str) -> Result:
    return CliRunner().invoke(build_app(), ["prices", *args])


def rows(result: Result) -> list[dict[str, Any]]:
    assert result.exit_code == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    models: list[dict[str, Any]] = data["models"]
    return models


def test_default_lists_the_policy_tier_models_at_the_pinned_date() -> None:
    found = rows(invoke("--at", "2026-06-01", "--json"))
    assert [(r["tier"], r["model"]) for r in found] == [
        ("cheap", "claude-haiku-4-5"),
        ("mid", "claude-sonnet-4-6"),
        ("strong", "claude-opus-4-6"),
    ]
    assert [(Decimal(r["input"]), Decimal(r["output"])) for r in found] == [
        (1, 5),
        (3, 15),
        (5, 25),
    ]
    assert {r["source"] for r in found} == {"catalog:anthropic@2026-06-01"}


def test_named_models_with_provider_and_date() -> None:
    found = rows(
        invoke("o3", "gpt-4o-mini", "--provider", "openai", "--at", "2025-06-01", "--json")
    )
    o3, mini = found
    assert (Decimal(o3["input"]), Decimal(o3["output"])) == (10, 40)
    assert Decimal(mini["cache_read"]) == Decimal("0.075")
    assert o3["source"] == "catalog:openai@2025-06-01"


def test_policy_overrides_are_shown_as_policy(tmp_path: Path) -> None:
    policy = tmp_path / "team.toml"
    policy.write_text(
        'version = 1\n\n[[tiers]]\nname = "only"\nprovider = "openai"\nmodel = "house-model"\n\n'
        '[prices."house-model"]\ninput = 0.2\noutput = 0.4\n'
    )
    (row,) = rows(invoke("--policy", str(policy), "--json"))
    assert (row["model"], row["source"], row["input"], row["cache_read"]) == (
        "house-model",
        "policy",
        "0.2",
        "0.2",
    )


def test_table_output() -> None:
    result = invoke("claude-opus-4-6", "--at", "2026-06-01")
    assert result.exit_code == 0, result.stderr
    assert "claude-opus-4-6" in result.stdout
    assert "$25" in result.stdout
    assert "catalog:anthropic@2026-06-01" in result.stdout


def test_unknown_model_names_it_and_exits_2() -> None:
    result = invoke("claude-haiku-4-5", "acme-llm-9000")
    assert result.exit_code == 2
    assert "acme-llm-9000" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_date_exits_2() -> None:
    result = invoke("--at", "2026-13-45")
    assert result.exit_code == 2
    assert "bad --at" in result.stderr


def test_help_has_an_example() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    assert "Example: tierwise prices" in result.stdout
