"""A plan's cost tree, read back from the ledger: plan → planner and subtasks → calls → attempts.

Every node carries its cost, tokens, tier and outcome; a node's cost is the sum of its children,
and the root's equals the ledger's own sum for the plan (both are read from the same rows; the
tree checks it). Beside the real cost stands an **estimate**: the planner's cost plus each
subtask's accepted execution re-priced at the planner tier's model — what running the same
subtasks on the planner's tier would have cost, without climbs or reviews.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from tierwise.records import Usage

if TYPE_CHECKING:
    from tierwise.ledger import Ledger
    from tierwise.pricing import PriceCatalog

__all__ = ["PlanNode", "PlanTree", "plan_tree"]


@dataclass(slots=True)
class PlanNode:
    """One node: the plan, the planner, a subtask, a call (a cascade task) or an attempt."""

    kind: str  # plan | planner | subtask | call | attempt
    id: str
    label: str
    tier: str | None = None
    model: str | None = None
    outcome: str | None = None
    role: str | None = None
    parent_id: str | None = None
    own_cost: Decimal = Decimal(0)
    own_tokens: int = 0
    children: list[PlanNode] = field(default_factory=list)

    @property
    def cost_usd(self) -> Decimal:
        return self.own_cost + sum((c.cost_usd for c in self.children), Decimal(0))

    @property
    def tokens(self) -> int:
        return self.own_tokens + sum(c.tokens for c in self.children)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "id": self.id,
            "label": self.label,
            "tier": self.tier,
            "model": self.model,
            "outcome": self.outcome,
            "role": self.role,
            "parent_id": self.parent_id,
            "cost_usd": str(self.cost_usd),
            "tokens": self.tokens,
            "children": [c.as_dict() for c in self.children],
        }


@dataclass(frozen=True, slots=True)
class PlanTree:
    """The tree, the ledger's total for the plan, and the planner-tier estimate."""

    root: PlanNode
    ledger_total_usd: Decimal
    planner_tier_estimate_usd: Decimal | None
    estimate_note: str
    plan: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "plan_id": self.root.id,
            "status": self.plan["status"],
            "total_usd": str(self.root.cost_usd),
            "ledger_total_usd": str(self.ledger_total_usd),
            "tokens": self.root.tokens,
            "planner_tier_estimate_usd": None
            if self.planner_tier_estimate_usd is None
            else str(self.planner_tier_estimate_usd),
            "estimate_note": self.estimate_note,
            "tree": self.root.as_dict(),
        }


def _usage(row: dict[str, Any]) -> Usage:
    return Usage(**{k: int(v) for k, v in row["usage"].items()})


def _attempt_node(row: dict[str, Any]) -> PlanNode:
    usage = _usage(row)
    side = f" ({row['role']})" if row["role"] in ("validator", "judge") else ""
    return PlanNode(
        kind="attempt",
        id=f"{row['task_id']}#{row['attempt_no']}",
        label=f"attempt {row['attempt_no']}{side}",
        tier=row["tier"],
        model=row["model"],
        outcome=row["outcome"],
        role=row["plan_role"],
        parent_id=row["parent_id"],
        own_cost=Decimal(row["cost_usd"]),
        own_tokens=usage.total_tokens,
    )


def _verdict(rows: list[dict[str, Any]]) -> str | None:
    """A review call's verdict (``accept``/``reject``), from its accepted answer's check."""
    for row in reversed(rows):
        if row["outcome"] == "accepted":
            for v in row["verdicts"]:
                if v.get("validator") == "review" and v.get("ok"):
                    return str(v.get("reason") or "") or None
    return None


def _call_node(task_id: str, rows: list[dict[str, Any]]) -> PlanNode:
    """One cascade task of the plan; a review's outcome is its verdict."""
    main = [r for r in rows if r["role"] not in ("validator", "judge")]
    last = main[-1] if main else rows[-1]
    role = rows[0]["plan_role"] or "call"
    tiers = list(dict.fromkeys(r["tier"] for r in main))
    outcome = last["outcome"]
    if role == "reviewer" and outcome == "accepted":
        outcome = {"accept": "accepted the output", "reject": "sent it up"}.get(
            _verdict(rows) or "", outcome
        )
    return PlanNode(
        kind="call",
        id=task_id,
        label=role + (f" ({' → '.join(tiers)})" if len(tiers) > 1 else ""),
        tier=last["tier"],
        model=last["model"],
        outcome=outcome,
        role=role,
        parent_id=rows[0]["parent_id"],
        children=[_attempt_node(r) for r in rows],
    )


def plan_tree(ledger: Ledger, plan_id: str, catalog: PriceCatalog | None = None) -> PlanTree:
    """Build plan *plan_id*'s cost tree from the ledger.

    Raises:
        KeyError: no plan has this id.
    """
    from tierwise.errors import UnknownModelError
    from tierwise.pricing import PriceCatalog, cost_of

    plan = ledger.plan(plan_id)
    if plan is None:
        raise KeyError(plan_id)
    subtasks = ledger.plan_subtasks(plan_id)
    rows = ledger.plan_attempts(plan_id)
    total = ledger.plan_cost(plan_id)

    calls: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        calls.setdefault(row["task_id"], []).append(row)
    root = PlanNode("plan", plan_id, f"plan {plan_id}", outcome=plan["status"])
    planner = PlanNode(
        "planner",
        f"{plan_id}:planner",
        "planner",
        tier=plan["planner_tier"],
        model=plan["planner_model"],
        role="planner",
    )
    by_subtask: dict[str, PlanNode] = {}
    for s in subtasks:
        raised = f", raised from {s['planned_tier']}" if s["raised"] else ""
        final = (
            f" → {s['final_tier']}"
            if s["final_tier"] and s["final_tier"] != s["assigned_tier"]
            else ""
        )
        by_subtask[s["subtask_id"]] = PlanNode(
            "subtask",
            s["subtask_id"],
            f"{s['subtask_id']} {s['kind']} (assigned {s['assigned_tier']}{raised}{final})",
            tier=s["final_tier"] or s["assigned_tier"],
            outcome=s["outcome"],
            role="subtask",
        )
    orphans = PlanNode("subtask", f"{plan_id}:other", "other calls", role="subtask")
    for task_id, task_rows in calls.items():
        node = _call_node(task_id, task_rows)
        sid = task_rows[0]["subtask_id"]
        if task_rows[0]["plan_role"] == "planner":
            planner.children.append(node)
            planner.outcome = node.outcome
        else:
            by_subtask.get(sid or "", orphans).children.append(node)
    for node in by_subtask.values():  # an execution a review sent up says so
        sent_up = {c.parent_id for c in node.children if c.outcome == "sent it up"}
        for call in node.children:
            if call.role == "executor" and call.id in sent_up:
                call.outcome = "sent up by the reviewer"
    root.children.append(planner)
    root.children.extend(by_subtask.values())
    if orphans.children:
        root.children.append(orphans)
    if root.cost_usd != total:  # the same rows summed two ways: a bug if they ever differ
        raise AssertionError(f"plan {plan_id}: tree total {root.cost_usd} != ledger {total}")

    estimate: Decimal | None = None
    note = "no estimate: the planner's model is not known"
    model, provider = plan["planner_model"], plan["planner_provider"]
    if model:
        catalog = catalog or PriceCatalog()
        try:
            prices = catalog.prices_for(model, provider)
        except UnknownModelError:
            note = f"no estimate: no price for the planner's model {model}"
        else:
            estimate = planner.cost_usd
            for node in by_subtask.values():
                accepted = [
                    r
                    for c in node.children
                    if c.role == "executor"
                    for r in calls[c.id]
                    if r["outcome"] == "accepted" and r["role"] not in ("validator", "judge")
                ]
                if accepted:
                    estimate += cost_of(_usage(accepted[-1]), prices)
            note = (
                f"the planner's cost plus each subtask's accepted execution re-priced at "
                f"{model} (the planner's tier, {plan['planner_tier']}), without climbs or reviews"
            )
    return PlanTree(root, total, estimate, note, plan)
