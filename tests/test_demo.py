"""The offline demo: deterministic failures by kind and content, costs that reconcile."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from typer.testing import CliRunner

from tierwise.cli import build_app
from tierwise.demo import demo_tasks, run_demo
from tierwise.ledger import open_ledger
from tierwise.policy import default_policy


def test_demo_tasks_are_deterministic_and_mixed() -> None:
    a, b = demo_tasks(80, seed=3), demo_tasks(80, seed=3)
    assert [(t.kind, t.prompt) for t in a] == [(t.kind, t.prompt) for t in b]
    assert demo_tasks(80, seed=4)[0].prompt != a[0].prompt or a[1].prompt != b[0].prompt
    assert {"classify", "extract", "summarize", "code_edit"} <= {t.kind for t in a}


def test_demo_escalates_exactly_the_hard_cases_and_reconciles_with_the_ledger(
    tmp_path: Path,
) -> None:
    tasks = demo_tasks(120, seed=11)
    ledger_path = tmp_path / "demo.db"
    report = run_demo(default_policy(), tasks, ledger_path)

    by_id = {t.id: t for t in tasks}
    escalated = {r.task_id for r in report.results if len(r.attempts) > 1}
    for result in report.results:
        task = by_id[result.task_id]
        hard = (
            (task.kind == "classify" and " maybe it is something else" in task.prompt)
            or (
                task.kind == "extract"
                and (task.prompt.count("\n- ") > 4 or "CREDIT" in task.prompt)
            )
            or (
                task.kind == "draft_reply"
                and ("chargeback" in task.prompt or "lawyer" in task.prompt)
            )
            or (
                task.kind == "code_edit"
                and "entire module" in task.prompt
                and result.decision.tier == "mid"
            )
        )
        assert (result.task_id in escalated) == hard, task.prompt[:80]
    assert report.escalated_tasks == len(escalated) > 0
    assert report.failed_tasks == 0
    assert report.cost_usd < report.strong_cost_usd

    with open_ledger(ledger_path) as ledger:
        stats = ledger.stats()
        assert ledger.integrity_check() == []
        spent = sum((Decimal(str(row["cost_usd"])) for row in ledger.iter_attempts()), Decimal(0))
    assert spent == report.cost_usd
    assert stats["tasks"] == len(tasks)


def test_demo_command_says_the_models_are_simulated(tmp_path: Path) -> None:
    runner = CliRunner()
    app = build_app()
    shown = runner.invoke(app, ["demo", "-n", "12", "--dir", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    assert "SIMULATED" in shown.output
    assert (tmp_path / "tierwise.toml").read_text().startswith("# tierwise routing policy")

    as_json = runner.invoke(app, ["demo", "-n", "12", "--dir", str(tmp_path), "--json"])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert data["simulated_models"] is True
    assert data["tasks"] == 12
    assert Decimal(data["cost_usd"]) <= Decimal(data["strongest_tier_cost_usd"])
