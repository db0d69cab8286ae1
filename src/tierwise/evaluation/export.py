"""The ledger as recorded results: every finished task as a row of tierwise's eval JSONL.

Each model a task was attempted on becomes one result: score 1 when its answer was accepted,
0 when a validator rejected it (provider errors are left out: they say nothing about quality),
with the answer text, exact cost and token counts. Prompts and answers are present only for
tasks recorded with ``store_content = true``; without them the rows still carry scores and
costs, which is enough for cost replays but not for a learned router.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from tierwise.evaluation.dataset import ModelResult, Row

if TYPE_CHECKING:
    from tierwise.ledger import Ledger

_SCORES = {"accepted": 1.0, "rejected": 0.0}


def ledger_rows(
    ledger: Ledger,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    kind: str | None = None,
    role: str | None = "live",
) -> Iterator[Row]:
    """Yield one :class:`Row` per task with at least one scored attempt, in task order."""
    tasks: dict[str, dict[str, ModelResult]] = {}
    kinds: dict[str, str] = {}
    for attempt in ledger.iter_attempts(since=since, until=until, kind=kind, role=role):
        score = _SCORES.get(str(attempt["outcome"]))
        if score is None:
            continue
        usage: dict[str, int] = attempt["usage"]
        inputs = sum(v for k, v in usage.items() if k != "output_tokens")
        tasks.setdefault(attempt["task_id"], {})[attempt["model"]] = ModelResult(
            score=score,
            response=attempt.get("output"),
            cost_usd=Decimal(attempt["cost_usd"]),
            input_tokens=inputs,
            output_tokens=usage.get("output_tokens", 0),
        )
        kinds[attempt["task_id"]] = attempt["kind"]
    for task_id, results in tasks.items():
        task: dict[str, Any] | None = ledger.task(task_id)
        prompt = task.get("prompt") if task else None
        yield Row(prompt_id=task_id, prompt=prompt, kind=kinds[task_id], results=results)


def ledger_ladder(ledger: Ledger, *, role: str | None = "live") -> dict[str, str]:
    """Tier → the model most attempts on it used, bottom tier first."""
    seen: Counter[tuple[int, str, str]] = Counter()
    for attempt in ledger.iter_attempts(role=role):
        seen[(attempt["tier_index"], attempt["tier"], attempt["model"])] += 1
    ladder: dict[str, str] = {}
    for (_, tier, model), _n in sorted(seen.items(), key=lambda kv: (kv[0][0], -kv[1])):
        ladder.setdefault(tier, model)
    return ladder
