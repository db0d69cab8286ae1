"""`tierwise ledger export`: the ledger as eval JSONL that `tierwise eval` loads back."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from typer.testing import CliRunner

from tierwise.cascade import Cascade
from tierwise.cli import build_app
from tierwise.evaluation.loaders import load_dataset
from tierwise.ledger import open_ledger
from tierwise.task import Task
from tierwise.testing import FakeUpstream, ModelScript
from tierwise.testing.policies import upstream_policy

EXTRA = """
store_content = true
[[rules]]
when = { kind = "extract" }
tier = "cheap"
[kinds.extract]
validators = [{ type = "json" }]
"""


def test_export_round_trips_scores_costs_and_text(
    tmp_path: Path, ledger_url: str, fake_upstream: FakeUpstream, upstream_env: dict[str, str]
) -> None:
    def cheap(request: dict[str, object]) -> str:
        return '{"ok": 1}' if "easy" in json.dumps(request) else "prose"

    fake_upstream.set_script("claude-haiku-4-5", ModelScript(reply=cheap))
    fake_upstream.set_script("claude-sonnet-4-6", ModelScript(reply="still prose"))
    fake_upstream.set_script("claude-opus-4-6", ModelScript(reply='{"ok": 3}'))
    text = upstream_policy(fake_upstream).text or ""
    policy_text = text.replace("version = 1", "version = 1" + EXTRA, 1)
    from tierwise.policy import loads_policy

    policy = loads_policy(policy_text)
    db = ledger_url
    with open_ledger(db) as ledger, Cascade(policy, ledger=ledger, env=upstream_env) as cascade:
        easy = cascade.run(Task.create("extract", "easy invoice"))
        hard = cascade.run(Task.create("extract", "hard invoice"))

    out = tmp_path / "export" / "fleet.jsonl"
    result = CliRunner().invoke(build_app(), ["ledger", "export", "-l", db, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "exported 2 task(s): 2 with prompt text, 1 answered by every tier's model" in (
        result.output
    )
    data = load_dataset(out.parent)
    assert data.default_ladder.models == (
        "claude-haiku-4-5",
        "claude-sonnet-4-6",
        "claude-opus-4-6",
    )
    rows = {r.prompt_id: r for r in data.rows}
    assert rows[hard.task_id].prompt == "hard invoice"
    scores = {m: r.score for m, r in rows[hard.task_id].results.items()}
    assert scores == {"claude-haiku-4-5": 0.0, "claude-sonnet-4-6": 0.0, "claude-opus-4-6": 1.0}
    assert rows[hard.task_id].results["claude-opus-4-6"].response == '{"ok": 3}'
    total = sum((r.cost_usd or Decimal(0) for r in rows[hard.task_id].results.values()), Decimal(0))
    assert total == hard.cost_usd
    assert set(rows[easy.task_id].results) == {"claude-haiku-4-5"}
