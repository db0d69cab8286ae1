"""`tierwise explain`: one task's decision, attempts, handoffs and costs, from the ledger."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tierwise.cascade import Cascade
from tierwise.cli import build_app
from tierwise.ledger import open_ledger
from tierwise.policy import loads_policy
from tierwise.reports import TaskNotFoundError, explain_task, render_explanation
from tierwise.task import Task
from tierwise.testing import FakeUpstream, ModelScript
from tierwise.testing.policies import TEST_KEY_ENV, upstream_policy_text

EXTRA = """
[[rules]]
name = "extraction is cheap work"
when = { kind = "extract" }
tier = "cheap"
[validators.json]
type = "json"
[kinds.extract]
validators = ["json"]
"""


@pytest.fixture
def climbed(fake_upstream: FakeUpstream, tmp_path: Path) -> tuple[Path, str]:
    """A task that failed validation on cheap and was accepted on mid."""
    fake_upstream.set_script("claude-haiku-4-5", ModelScript(reply="the total is 10"))
    fake_upstream.set_script("claude-sonnet-4-6", ModelScript(reply='{"total": 10}'))
    policy = loads_policy(
        "store_content = true\n" + upstream_policy_text(fake_upstream, extra=EXTRA)
    )
    db = tmp_path / "ledger.db"
    with (
        open_ledger(db) as ledger,
        Cascade(policy, ledger=ledger, env={TEST_KEY_ENV: "k" * 9}) as c,
    ):
        result = c.run(Task.create("extract", "Invoice 42, total 10 EUR"))
    return db, result.task_id


def test_explain_tells_the_whole_story(climbed: tuple[Path, str]) -> None:
    db, task_id = climbed
    with open_ledger(db) as ledger:
        data = explain_task(ledger, task_id[:8])  # a prefix is enough
        attempts = ledger.attempts_of(task_id)
    assert data["task_id"] == task_id and data["outcome"] == "accepted"
    assert data["decision"]["step"] == "rule"
    assert data["decision"]["rule_name"] == "extraction is cheap work"
    assert [(a["tier"], a["outcome"]) for a in data["attempts"]] == [
        ("cheap", "rejected"),
        ("mid", "accepted"),
    ]
    assert data["attempts"][0]["verdicts"][0]["validator"] == "json"
    assert data["attempts"][0]["tokens"]["output_tokens"] > 0
    # costs are the stored ones, and add up to the task's
    assert [a["cost_usd"] for a in data["attempts"]] == [a["cost_usd"] for a in attempts]
    assert data["attempts_cost_usd"] == data["cost_usd"] > 0
    assert data["wasted_usd"] == attempts[0]["cost_usd"]
    (handoff,) = data["handoffs"]
    assert handoff["from_tier"] == "cheap" and handoff["to_tier"] == "mid"
    assert (
        handoff["reason"].startswith("json: ") and handoff["rejected_answer"] == "the total is 10"
    )
    text = render_explanation(data)
    assert "extraction is cheap work" in text and "FAIL json" in text
    assert "rejected answer: 'the total is 10'" in text


def test_explain_on_the_command_line_text_and_json(climbed: tuple[Path, str]) -> None:
    db, task_id = climbed
    runner = CliRunner()
    out = runner.invoke(build_app(), ["explain", task_id[:10], "-l", str(db)])
    assert out.exit_code == 0, out.output
    assert f"task {task_id}" in out.stdout and "passed up on each climb" in out.stdout
    data = json.loads(
        runner.invoke(build_app(), ["explain", task_id, "-l", str(db), "--json"]).stdout
    )
    assert Decimal(data["cost_usd"]) == sum(Decimal(a["cost_usd"]) for a in data["attempts"])
    missing = runner.invoke(build_app(), ["explain", "ffffffffff", "-l", str(db)])
    assert missing.exit_code == 2 and "no task id starts with" in missing.stderr


def test_a_short_or_ambiguous_id_is_refused(climbed: tuple[Path, str]) -> None:
    db, task_id = climbed
    with open_ledger(db) as ledger, pytest.raises(TaskNotFoundError, match="at least 6"):
        explain_task(ledger, task_id[:3])


def test_ledger_tail_shows_dates_and_the_prefix_explain_takes(climbed: tuple[Path, str]) -> None:
    db, task_id = climbed
    out = CliRunner().invoke(build_app(), ["ledger", "tail", "-l", str(db)])
    assert out.exit_code == 0
    assert f"{task_id[:8]}#0" in out.stdout
    assert any(line.strip()[:4].isdigit() and "-" in line[:12] for line in out.stdout.splitlines())
