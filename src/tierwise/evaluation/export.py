"""The ledger as recorded results: every finished task as a row of tierwise's eval JSONL.

Each model a task got an answer from becomes one result: the answers of its own run, and —
for tasks shadow mode sampled — the shadow answers of the tiers it did not try. Score 1 when the
answer passed its validators and was not flagged ``wrong`` (``tierwise feedback``; the flag is
on the answer the caller got), else 0; provider errors and a validator's own model calls are
left out (they say nothing about quality). With the answer text, exact cost and token counts.
Each row also says what the policy in force did (``served``: the tiers its run tried, the
answer it delivered, what the task cost), which ``tierwise eval`` reports as "current policy
(as served)".

Prompts and answers are present only for tasks recorded with ``store_content = true``; without
them the rows still carry scores and costs, which is enough for cost replays but not for a
learned router or answer checks (``tierwise eval`` says so).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from tierwise.evaluation.dataset import ModelResult, Row, Served

if TYPE_CHECKING:
    from collections.abc import Iterable

    from tierwise.ledger import Ledger
    from tierwise.policy import Policy

_SCORES = {"accepted": 1.0, "rejected": 0.0}
#: Roles whose attempts never answer the task itself (a validator's call, the judge).
_NOT_ANSWERS = frozenset({"validator", "judge"})


def ledger_rows(
    ledger: Ledger,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    kind: str | None = None,
    role: str | None = "live",
) -> Iterator[Row]:
    """Yield one :class:`Row` per task with at least one scored answer, in task order.

    *role* is the tasks' role (``live`` traffic by default; ``None`` for every role); the
    shadow answers of those tasks are included.
    """
    shadow = ledger.shadow_answers(since=since, kind=kind)
    tasks: dict[str, dict[str, ModelResult]] = {}
    tried: dict[str, list[tuple[str, str, str, int]]] = {}
    kinds: dict[str, str] = {}
    for attempt in ledger.iter_attempts(since=since, until=until, kind=kind, role=None):
        task_id, own = attempt["task_id"], attempt["role"]
        if own in _NOT_ANSWERS or attempt["tier_index"] < 0:
            continue
        if own == "shadow":
            if (task_id, attempt["attempt_no"]) not in shadow:
                continue  # a shadow validator's own call, not the tier's answer
        elif role is not None and own != role:
            continue
        else:
            tried.setdefault(task_id, []).append(
                (attempt["tier"], attempt["model"], attempt["outcome"], attempt["attempt_no"])
            )
        score = _SCORES.get(str(attempt["outcome"]))
        if score is None:
            continue
        usage: dict[str, int] = attempt["usage"]
        inputs = sum(v for k, v in usage.items() if k != "output_tokens")
        tasks.setdefault(task_id, {})[attempt["model"]] = ModelResult(
            score=score,
            response=attempt.get("output"),
            cost_usd=Decimal(attempt["cost_usd"]),
            input_tokens=inputs,
            output_tokens=usage.get("output_tokens", 0),
        )
        kinds[task_id] = attempt["kind"]
    flagged = ledger.wrong_flags(tasks) if tasks else set()
    for task_id, results in tasks.items():
        task: dict[str, Any] | None = ledger.task(task_id)
        if task is not None and role is not None and task.get("role") != role:
            continue
        served = _served(task, tried.get(task_id, []), task_id in flagged)
        if served is not None and served.model is not None and task_id in flagged:
            found = results.get(served.model)
            if found is not None:  # the answer the caller got was flagged wrong
                results[served.model] = ModelResult(
                    0.0, found.response, found.cost_usd, found.input_tokens, found.output_tokens
                )
        prompt = task.get("prompt") if task else None
        yield Row(
            prompt_id=task_id, prompt=prompt, kind=kinds[task_id], results=results, served=served
        )


def _served(
    task: dict[str, Any] | None, tried: list[tuple[str, str, str, int]], flagged: bool
) -> Served | None:
    """What the live run did: its tiers, the answer it delivered and the task's cost."""
    if task is None or task.get("outcome") not in ("accepted", "exhausted"):
        return None
    tiers = tuple(dict.fromkeys(t for t, _, _, _ in tried))
    delivered = [(t, m) for t, m, outcome, _ in tried if outcome == "accepted"]
    tier, model = delivered[-1] if delivered else (None, None)
    score = 1.0 if delivered and task["outcome"] == "accepted" and not flagged else 0.0
    cost = task.get("cost_usd")
    return Served(
        tier=tier,
        model=model,
        score=score,
        cost_usd=None if cost is None else Decimal(cost),
        tiers=tiers,
    )


def ledger_ladder(ledger: Ledger, *, role: str | None = "live") -> dict[str, str]:
    """Tier → the model most answers on it used (shadow answers included), bottom tier first."""
    seen: Counter[tuple[int, str, str]] = Counter()
    for attempt in ledger.iter_attempts(role=None):
        own = attempt["role"]
        if own in _NOT_ANSWERS or attempt["tier_index"] < 0:
            continue
        if own != "shadow" and role is not None and own != role:
            continue
        seen[(attempt["tier_index"], attempt["tier"], attempt["model"])] += 1
    ladder: dict[str, str] = {}
    for (_, tier, model), _n in sorted(seen.items(), key=lambda kv: (kv[0][0], -kv[1])):
        ladder.setdefault(tier, model)
    return ladder


#: A policy's answer formats as ``tierwise eval``'s (which checks a replayed cascade runs).
_EVAL_FORMATS = {"choice": "choice", "number": "number"}


def export_formats(policy: Policy, kinds: Iterable[str]) -> dict[str, str]:
    """Kind → ``tierwise eval`` answer format from the policy's ``answer`` settings (``choice``
    and ``number`` carry over; labels, JSON and free text are ``text``)."""
    return {k: _EVAL_FORMATS.get(policy.kind(k).answer, "text") for k in sorted(kinds)}
