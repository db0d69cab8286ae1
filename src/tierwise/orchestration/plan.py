"""A plan: the task graph a planner returns, its published JSON schema, and its validation.

The planner answers one JSON object matching :data:`PLAN_SCHEMA` (version 1)::

    {"subtasks": [
        {"id": "s1", "kind": "extract", "prompt": "...", "depends_on": [],
         "tier": "cheap", "justification": "field extraction from a structured page"},
        {"id": "s2", "kind": "summarize", "prompt": "...", "depends_on": ["s1"],
         "tier": "mid", "justification": "nuanced material"}
    ]}

:func:`parse_plan` refuses, with every problem listed, a plan that is not JSON, breaks the
schema, repeats an id, depends on an unknown subtask or on itself, has a dependency cycle (named
by its path), names a kind the policy does not list or a tier not on the ladder, or has more
subtasks than ``[plan] max_subtasks``. A valid plan's assigned tiers are raised to each kind's
floor and to the frontier pins — never lowered — and its subtasks are put in dependency order.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tierwise.errors import TierwiseError
from tierwise.task import Task

if TYPE_CHECKING:
    from tierwise.policy import Policy
    from tierwise.routing import Router

__all__ = ["PLAN_SCHEMA", "Plan", "PlanError", "Subtask", "parse_plan"]

#: The task graph a planner must return (published; ``tierwise plan schema`` prints it).
PLAN_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "tierwise plan v1",
    "type": "object",
    "required": ["subtasks"],
    "additionalProperties": False,
    "properties": {
        "subtasks": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["id", "kind", "prompt", "depends_on", "tier", "justification"],
                "additionalProperties": False,
                "properties": {
                    "id": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"},
                    "kind": {"type": "string", "minLength": 1, "maxLength": 128},
                    "prompt": {"type": "string", "minLength": 1},
                    "depends_on": {"type": "array", "items": {"type": "string"}},
                    "tier": {"type": "string", "minLength": 1},
                    "justification": {"type": "string", "maxLength": 300},
                },
            },
        }
    },
}


class PlanError(TierwiseError):
    """A plan that cannot run: not JSON, off-schema, cyclic, unknown kinds or tiers.

    ``problems`` lists each one; the message joins them.
    """

    def __init__(self, problems: list[str], plan_id: str | None = None) -> None:
        self.problems = tuple(problems)
        self.plan_id = plan_id
        where = f"plan {plan_id}: " if plan_id else ""
        super().__init__(f"{where}the plan was refused: " + "; ".join(problems))


@dataclass(frozen=True, slots=True)
class Subtask:
    """One step of a plan. ``tier`` is the assigned tier after floors and frontier pins;
    ``planned_tier`` what the planner wrote; ``raised`` why they differ (``None``: they don't)."""

    id: str
    kind: str
    prompt: str
    depends_on: tuple[str, ...]
    tier: str
    planned_tier: str
    justification: str
    raised: str | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """A validated plan: its subtasks in dependency order (the planner's order among equals)."""

    subtasks: tuple[Subtask, ...]
    _by_id: dict[str, Subtask] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._by_id.update({s.id: s for s in self.subtasks})

    def __iter__(self) -> Iterator[Subtask]:
        return iter(self.subtasks)

    def __len__(self) -> int:
        return len(self.subtasks)

    def get(self, subtask_id: str) -> Subtask:
        return self._by_id[subtask_id]

    @property
    def sinks(self) -> tuple[Subtask, ...]:
        """The subtasks no other depends on: together they are the plan's result."""
        needed = {d for s in self.subtasks for d in s.depends_on}
        return tuple(s for s in self.subtasks if s.id not in needed)

    def as_json(self) -> dict[str, Any]:
        """The plan as :data:`PLAN_SCHEMA` describes it (assigned tiers, dependency order)."""
        return {
            "subtasks": [
                {
                    "id": s.id,
                    "kind": s.kind,
                    "prompt": s.prompt,
                    "depends_on": list(s.depends_on),
                    "tier": s.tier,
                    "justification": s.justification,
                }
                for s in self.subtasks
            ]
        }


_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)


def parse_plan(
    text: str, policy: Policy, *, router: Router | None = None, max_subtasks: int | None = None
) -> Plan:
    """Validate a planner's answer and assign its tiers.

    Args:
        text: the planner's answer (one JSON object; a Markdown code fence is tolerated).
        policy: kinds must be listed in it, tiers on its ladder.
        router: raises assigned tiers to floors and pins (default ``Router(policy)``).
        max_subtasks: refuse longer plans (default ``[plan] max_subtasks``).

    Raises:
        PlanError: every problem found, each saying what was expected and what was found.
    """
    from jsonschema import Draft202012Validator

    from tierwise.routing import Router

    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1)
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        raise PlanError([f"the plan is not JSON ({exc.msg} at line {exc.lineno})"]) from None
    errors = sorted(Draft202012Validator(PLAN_SCHEMA).iter_errors(data), key=lambda e: e.path)
    if errors:
        raise PlanError([f"{_where(e.absolute_path)}: {e.message}" for e in errors[:10]])
    items: list[dict[str, Any]] = data["subtasks"]
    limit = policy.model.plan.max_subtasks if max_subtasks is None else max_subtasks
    problems: list[str] = []
    if len(items) > limit:
        problems.append(f"the plan has {len(items)} subtasks; at most {limit} are allowed")
    ids = [str(item["id"]) for item in items]
    seen: set[str] = set()
    for i, sid in enumerate(ids):
        if sid in seen:
            problems.append(f"subtasks[{i}].id: {sid!r} is used by an earlier subtask")
        seen.add(sid)
    kinds = set(policy.kinds)
    for i, item in enumerate(items):
        where = f"subtasks[{i}] ({item['id']})"
        for dep in item["depends_on"]:
            if dep == item["id"]:
                problems.append(f"{where}.depends_on: a subtask cannot depend on itself")
            elif dep not in seen:
                problems.append(f"{where}.depends_on: unknown subtask {dep!r}")
        if item["kind"] not in kinds:
            listed = ", ".join(sorted(kinds)) or "(none)"
            problems.append(
                f"{where}.kind: unknown kind {item['kind']!r}; the policy lists {listed}"
            )
        if item["tier"] not in policy.ladder:
            problems.append(
                f"{where}.tier: unknown tier {item['tier']!r}; the ladder is "
                + ", ".join(policy.ladder)
            )
    if not problems:
        cycle = _cycle({str(i["id"]): list(i["depends_on"]) for i in items})
        if cycle:
            problems.append("the plan has a dependency cycle: " + " → ".join(cycle))
    if problems:
        raise PlanError(problems)
    router = router or Router(policy)
    by_id = {str(i["id"]): i for i in items}
    subtasks = []
    for sid in _order(ids, {k: list(v["depends_on"]) for k, v in by_id.items()}):
        item = by_id[sid]
        decision = router.assigned(Task(kind=item["kind"], prompt=item["prompt"]), item["tier"])
        raised = None
        if decision.tier != item["tier"]:
            raised = f"raised from {item['tier']}: " + decision.explain()
        subtasks.append(
            Subtask(
                id=sid,
                kind=item["kind"],
                prompt=item["prompt"],
                depends_on=tuple(dict.fromkeys(item["depends_on"])),
                tier=decision.tier,
                planned_tier=item["tier"],
                justification=" ".join(item["justification"].split()),
                raised=raised,
            )
        )
    return Plan(tuple(subtasks))


def _where(path: Any) -> str:
    out = "plan"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _cycle(deps: dict[str, list[str]]) -> list[str]:
    """One dependency cycle as a path (first node repeated at the end), or ``[]``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for dep in deps[node]:
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return []

    for node in deps:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def _order(ids: list[str], deps: dict[str, list[str]]) -> list[str]:
    """A dependency order of an acyclic graph, keeping the planner's order among equals."""
    done: set[str] = set()
    out: list[str] = []
    pending = list(ids)
    while pending:
        ready = next(i for i in pending if all(d in done for d in deps[i]))
        pending.remove(ready)
        done.add(ready)
        out.append(ready)
    return out
