"""`tierwise run`: one task through the cascade from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tierwise.cli import build_app
from tierwise.ledger import open_ledger
from tierwise.testing import FakeUpstream, ModelScript
from tierwise.testing.policies import TEST_KEY_ENV, upstream_policy_text

EXTRA = """
[[rules]]
when = { kind = "extract" }
tier = "cheap"
[validators.json]
type = "json"
[kinds.extract]
validators = ["json"]
"""


@pytest.fixture
def policy_file(
    tmp_path: Path, fake_upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> Path:
    path = tmp_path / "tierwise.toml"
    path.write_text(upstream_policy_text(fake_upstream, extra=EXTRA))
    monkeypatch.setenv(TEST_KEY_ENV, "sk-cli-secret-42")
    monkeypatch.setenv("TIERWISE_LEDGER", str(tmp_path / "ledger.db"))
    return path


def test_run_prints_the_answer_and_records_the_escalation(
    policy_file: Path, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    fake_upstream.set_script("claude-haiku-4-5", ModelScript(reply="total is 3"))
    fake_upstream.set_script("claude-sonnet-4-6", ModelScript(reply='{"total": 3}'))
    result = CliRunner().invoke(
        build_app(),
        [
            "run",
            "--kind",
            "extract",
            "--prompt",
            "Invoice: 3 EUR",
            "--policy",
            str(policy_file),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["output"] == '{"total": 3}'
    assert data["tier"] == "mid"
    assert [a["outcome"] for a in data["attempts"]] == ["rejected", "accepted"]
    assert data["attempts"][0]["reason"].startswith("json")
    with open_ledger(tmp_path / "ledger.db") as ledger:
        rows = ledger.attempts_of(data["task_id"])
    assert [r["tier"] for r in rows] == ["cheap", "mid"]
    assert "sk-cli-secret-42" not in result.output


def test_run_reports_an_exhausted_ladder_with_exit_1(
    policy_file: Path, fake_upstream: FakeUpstream
) -> None:
    for model in ("claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-6"):
        fake_upstream.set_script(model, ModelScript(reply="never json"))
    result = CliRunner().invoke(
        build_app(),
        ["run", "-k", "extract", "--prompt", "x", "--policy", str(policy_file), "--json"],
    )
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert len(data["attempts"]) == 3
    assert "every tier" in data["error"] or "exhausted" in data["error"].lower()


def test_run_rejects_bad_arguments_with_exit_2(policy_file: Path) -> None:
    runner, app = CliRunner(), build_app()
    both = runner.invoke(app, ["run", "-k", "x", "--policy", str(policy_file)])
    assert both.exit_code == 2 and "exactly one of --prompt or --file" in both.output
    tier = runner.invoke(
        app, ["run", "-k", "x", "--prompt", "p", "--tier", "huge", "--policy", str(policy_file)]
    )
    assert tier.exit_code == 2 and "unknown tier 'huge'" in tier.output
    missing = runner.invoke(app, ["run", "-k", "x", "--file", "/nonexistent/task.txt"])
    assert missing.exit_code == 2 and "cannot read" in missing.output


def test_run_without_any_key_fails_fast_naming_the_variable(
    policy_file: Path, fake_upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TEST_KEY_ENV)
    result = CliRunner().invoke(
        build_app(), ["run", "-k", "extract", "--prompt", "x", "--policy", str(policy_file)]
    )
    assert result.exit_code == 2
    assert TEST_KEY_ENV in result.output
    assert fake_upstream.requests == []


def test_the_default_policy_goes_where_the_sdk_base_url_points(
    fake_upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedded policy names no base_url: ANTHROPIC_BASE_URL decides, as for the SDK."""
    monkeypatch.chdir(tmp_path)  # no tierwise.toml here: the embedded default policy
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake_upstream.base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-run-base-url-key")
    monkeypatch.setenv("TIERWISE_LEDGER", str(tmp_path / "ledger.db"))
    monkeypatch.delenv("TIERWISE_POLICY", raising=False)
    result = CliRunner().invoke(
        build_app(), ["run", "--kind", "summarize", "--prompt", "say hello", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["output"] == "say hello"
    assert fake_upstream.requests  # the fake, not the real API, answered
