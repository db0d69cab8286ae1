"""`tierwise demo --plan` and `tierwise plan run|show|calibration|flag|schema`, end to end: the
CLI, simulated models on the fake upstream, the cascade and a SQLite ledger in a folder."""

from __future__ import annotations

import json
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tierwise.cli import build_app
from tierwise.testing import FakeUpstream
from tierwise.testing.policies import TEST_KEY_ENV, upstream_policy_text


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(build_app(), list(args), env={"COLUMNS": "120", **(env or {})})


def _sql_total(ledger: Path, plan_id: str) -> Decimal:
    """The ledger's own sum for the plan, read with sqlite3 (no tierwise code)."""
    conn = sqlite3.connect(ledger)
    try:
        ((pico,),) = conn.execute(
            "SELECT SUM(cost_pusd) FROM attempts WHERE plan_id = ?", (plan_id,)
        ).fetchall()
    finally:
        conn.close()
    return Decimal(pico) / Decimal(10**12)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("plan-demo")
    result = invoke("demo", "--plan", "--dir", str(folder), "--json")
    assert result.exit_code == 0, result.output
    return folder / "tierwise-ledger.db", json.loads(result.stdout)


def test_the_plan_demo_runs_six_subtasks_and_the_reviewer_sends_one_up(
    demo: tuple[Path, dict[str, Any]],
) -> None:
    ledger, data = demo
    plan = data["plan"]
    assert data["simulated_models"] is True and Path(data["ledger"]) == ledger
    assert plan["status"] == "accepted" and len(plan["subtasks"]) >= 6
    sent_up = [s for s in plan["subtasks"] if s["reviewer_climbs"]]
    assert [(s["id"], s["assigned_tier"], s["tier"]) for s in sent_up] == [("s3", "cheap", "mid")]
    raised = [s for s in plan["subtasks"] if s["raised"]]
    assert [(s["id"], s["planned_tier"], s["assigned_tier"]) for s in raised] == [
        ("s6", "cheap", "mid")
    ]
    tree = data["cost_tree"]
    total = _sql_total(ledger, plan["plan_id"])
    assert Decimal(tree["total_usd"]) == Decimal(tree["ledger_total_usd"]) == total
    assert Decimal(plan["cost_usd"]) == total
    assert tree["planner_tier_estimate_usd"] is not None and "re-priced" in tree["estimate_note"]


def test_plan_show_prints_the_tree_and_its_total_equals_the_ledgers_sum(
    demo: tuple[Path, dict[str, Any]],
) -> None:
    ledger, data = demo
    plan_id = data["plan"]["plan_id"]
    shown = invoke("plan", "show", plan_id[:8], "--ledger", str(ledger), "--json")
    assert shown.exit_code == 0, shown.output
    tree = json.loads(shown.stdout)
    assert tree["plan_id"] == plan_id
    assert Decimal(tree["total_usd"]) == _sql_total(ledger, plan_id)
    nodes = tree["tree"]["children"]
    assert [n["label"] for n in nodes][:2] == ["planner", "s1 extract (assigned cheap)"]
    s3 = next(n for n in nodes if n["id"] == "s3")
    assert [(c["role"], c["tier"], c["outcome"]) for c in s3["children"]] == [
        ("executor", "cheap", "sent up by the reviewer"),
        ("reviewer", "mid", "sent it up"),
        ("executor", "mid", "accepted"),
        ("reviewer", "strong", "accepted the output"),
    ]
    for node in nodes:  # each node's cost is its children's sum, down to the attempts
        assert Decimal(node["cost_usd"]) == sum(
            (Decimal(c["cost_usd"]) for c in node["children"]), Decimal(0)
        )
    text = invoke("plan", "show", plan_id, "--ledger", str(ledger))
    assert text.exit_code == 0, text.output
    assert "s3 classify (assigned cheap → mid)" in text.stdout
    assert "sent up by the reviewer" in text.stdout
    assert f"= the ledger's sum for this plan ${_sql_total(ledger, plan_id):.9f}" in text.stdout
    assert "ESTIMATE on the planner's tier" in text.stdout


def test_plan_show_refuses_an_unknown_plan_clearly(demo: tuple[Path, dict[str, Any]]) -> None:
    ledger, _ = demo
    result = invoke("plan", "show", "nope-nope", "--ledger", str(ledger))
    assert result.exit_code == 2 and "no plan 'nope-nope' in the ledger" in result.output


def test_calibration_and_flag(demo: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    source, data = demo
    ledger = tmp_path / "copy.db"
    ledger.write_bytes(source.read_bytes())  # the module's demo ledger stays as it was
    plan_id = data["plan"]["plan_id"]
    before = json.loads(invoke("plan", "calibration", "--ledger", str(ledger), "--json").stdout)
    cheap = before["tiers"][0]
    assert (cheap["tier"], cheap["subtasks"], cheap["escalated_by_reviewer"]) == ("cheap", 3, 1)
    assert cheap["accepted_as_assigned"] == 2 and before["findings"] == []
    flagged = invoke("plan", "flag", plan_id, "s1", "--reason", "a vendor was missing",
                     "--ledger", str(ledger))  # fmt: skip
    assert flagged.exit_code == 0, flagged.output
    after = json.loads(invoke("plan", "calibration", "--ledger", str(ledger), "--json").stdout)
    assert after["tiers"][0]["flagged_wrong"] == 1 and after["tiers"][0]["failed"] == 2
    missing = invoke("plan", "flag", plan_id, "s99", "--reason", "x", "--ledger", str(ledger))
    assert missing.exit_code == 2 and "its subtasks: s1, s2" in missing.output
    table = invoke("plan", "calibration", "--ledger", str(ledger))
    assert table.exit_code == 0 and "no assigned tier fails significantly" in table.stdout


def test_learn_status_shows_the_planner_calibration(demo: tuple[Path, dict[str, Any]]) -> None:
    ledger, _ = demo
    calibration = json.loads(
        invoke("plan", "calibration", "--ledger", str(ledger), "--json").stdout
    )
    status = invoke("learn", "status", "--ledger", str(ledger), "--json")
    assert status.exit_code in (0, 1), status.output  # 1: above the red line
    assert json.loads(status.stdout)["planner_calibration"] == calibration
    text = invoke("learn", "status", "--ledger", str(ledger))
    assert "planner calibration, by assigned tier: cheap 1 of 3 failed (33%)" in text.stdout


def test_the_schema_command_prints_the_published_schema() -> None:
    from tierwise.orchestration import PLAN_SCHEMA

    result = invoke("plan", "schema")
    assert result.exit_code == 0 and json.loads(result.stdout) == PLAN_SCHEMA


def _policy_file(tmp_path: Path, up: FakeUpstream) -> Path:
    path = tmp_path / "tierwise.toml"
    extra = "\n[kinds.extract]\n[kinds.summarize]\n"
    path.write_text(upstream_policy_text(up, extra=extra))
    return path


def _fleet(up: FakeUpstream, plan: dict[str, Any]) -> None:
    from tierwise.testing import ModelScript, Reply

    def reply(request: dict[str, Any]) -> Reply:
        system = request.get("system") or ""
        if "planner of tierwise" in system:
            return Reply(json.dumps(plan))
        if "reviewer of tierwise" in system:
            return Reply('{"verdict": "accept", "reason": "ok"}')
        return Reply("done")

    for model in ("claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-6"):
        up.set_script(model, ModelScript(reply=reply))


def test_plan_run_prints_the_result_and_records_the_plan(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    steps = [
        {"id": "a", "kind": "extract", "prompt": "names", "depends_on": [], "tier": "cheap",
         "justification": "easy"},
        {"id": "b", "kind": "summarize", "prompt": "sum up", "depends_on": ["a"], "tier": "mid",
         "justification": "synthesis"},
    ]  # fmt: skip
    _fleet(fake_upstream, {"subtasks": steps})
    goal = tmp_path / "goal.txt"
    goal.write_text("Summarise the vendors")
    ledger = tmp_path / "l.db"
    env = {TEST_KEY_ENV: "test"}
    args = ["--policy", str(_policy_file(tmp_path, fake_upstream)), "--ledger", str(ledger)]
    result = invoke("plan", "run", str(goal), *args, env=env)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "done"
    assert "a extract: accepted on cheap" in result.stderr and "plan " in result.stderr
    as_json = invoke("plan", "run", str(goal), *args, "--json", env=env)
    data = json.loads(as_json.stdout)
    assert data["status"] == "accepted" and [s["id"] for s in data["subtasks"]] == ["a", "b"]
    assert Decimal(data["cost_usd"]) == _sql_total(ledger, data["plan_id"])


def test_plan_run_exits_1_with_the_reason_when_the_plan_is_refused(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    cyclic = [
        {"id": "a", "kind": "extract", "prompt": "x", "depends_on": ["a"], "tier": "cheap",
         "justification": "-"},
    ]  # fmt: skip
    _fleet(fake_upstream, {"subtasks": cyclic})
    goal = tmp_path / "goal.txt"
    goal.write_text("anything")
    args = ["--policy", str(_policy_file(tmp_path, fake_upstream)),
            "--ledger", str(tmp_path / "l.db")]  # fmt: skip
    result = invoke("plan", "run", str(goal), *args, env={TEST_KEY_ENV: "test"})
    assert result.exit_code == 1
    assert "the plan was refused" in result.stderr and "cannot depend on itself" in result.stderr
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    assert "holds no goal" in invoke("plan", "run", str(empty), *args).output


def test_policy_check_refuses_the_reserved_kind_name(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(upstream_policy_text("http://127.0.0.1:9", extra="\n[kinds.plan-execute]\n"))
    result = invoke("policy", "check", str(path))
    assert result.exit_code == 2 and "the kind name 'plan-execute' is reserved" in result.output
