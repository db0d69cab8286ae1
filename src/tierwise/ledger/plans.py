"""Plans in the ledger: each plan-execute-review run, its subtasks, and the rows of its cost tree.

A plan's calls are ordinary tasks and attempts carrying ``plan_id``, ``subtask_id``,
``parent_id`` and ``plan_role``; this module writes the two tables that say what was planned
(``plans``, ``plan_subtasks``: assigned tiers, justifications, how each subtask ended) and reads
them back for ``tierwise plan show`` and planner calibration. Not the request path: plain Core
statements, one transaction per write.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from tierwise.ledger.queries import attempt_dict
from tierwise.ledger.schema import attempts, from_pico, plan_subtasks, plans, to_pico
from tierwise.ledger.sql import window_filters

__all__ = [
    "PLAN_STATUSES",
    "SUBTASK_OUTCOMES",
    "PlannedSubtask",
    "SubtaskEnd",
]

PLAN_STATUSES = ("running", "accepted", "failed", "refused", "budget", "error")
SUBTASK_OUTCOMES = ("pending", "accepted", "rejected", "failed", "budget", "skipped")
REVIEWS = ("accepted", "sent_up", "rejected", "skipped", "off")


@dataclass(frozen=True, slots=True)
class PlannedSubtask:
    """One subtask as planned: what the planner said and the tier it was assigned."""

    subtask_id: str
    position: int
    kind: str
    prompt: str
    depends_on: tuple[str, ...]
    planned_tier: str
    assigned_tier: str
    assigned_tier_index: int
    justification: str
    raised: str | None = None


@dataclass(frozen=True, slots=True)
class SubtaskEnd:
    """How one subtask ended: its outcome, final tier, climbs and review."""

    outcome: str
    final_tier: str | None = None
    final_tier_index: int | None = None
    validator_climbs: int = 0
    reviewer_climbs: int = 0
    review: str | None = None
    review_note: str | None = None


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


# -- writes (each in the caller's transaction) ---------------------------------------------------


def insert_plan(
    conn: sa.Connection,
    plan_id: str,
    goal: str | None,
    goal_text: str | None,
    *,
    prompt_version: str,
    policy_revision: str | None,
    planner_tier: str,
    reviewer_tier: str | None,
    now: datetime,
) -> None:
    conn.execute(
        plans.insert().values(
            id=plan_id,
            goal_sha256=_sha256(goal or ""),
            goal_chars=len(goal or ""),
            goal_text=goal_text,
            prompt_version=prompt_version,
            policy_revision=policy_revision,
            planner_tier=planner_tier,
            reviewer_tier=reviewer_tier,
            status="running",
            created_at=now,
        )
    )


def insert_subtasks(
    conn: sa.Connection,
    plan_id: str,
    planner_model: str | None,
    planner_provider: str | None,
    subtasks: Sequence[PlannedSubtask],
    texts: Sequence[tuple[str | None, str | None]],
) -> None:
    """Record the plan's subtasks (*texts*: each one's stored prompt and justification)."""
    conn.execute(
        plans.update()
        .where(plans.c.id == plan_id)
        .values(
            planner_model=planner_model,
            planner_provider=planner_provider,
            subtasks=len(subtasks),
        )
    )
    if not subtasks:
        return
    rows = [
        {
            "plan_id": plan_id,
            "subtask_id": s.subtask_id,
            "position": s.position,
            "kind": s.kind,
            "depends_on": json.dumps(list(s.depends_on)),
            "planned_tier": s.planned_tier,
            "assigned_tier": s.assigned_tier,
            "assigned_tier_index": s.assigned_tier_index,
            "raised": s.raised,
            "justification": justification,
            "prompt_sha256": _sha256(s.prompt),
            "prompt_chars": len(s.prompt),
            "prompt_text": prompt,
            "outcome": "pending",
        }
        for s, (prompt, justification) in zip(subtasks, texts, strict=True)
    ]
    conn.execute(plan_subtasks.insert(), rows)


def update_subtask(
    conn: sa.Connection, plan_id: str, subtask_id: str, end: SubtaskEnd, now: datetime
) -> None:
    if end.outcome not in SUBTASK_OUTCOMES:
        raise ValueError(f"subtask outcome must be one of {SUBTASK_OUTCOMES}, got {end.outcome!r}")
    c = plan_subtasks.c
    conn.execute(
        plan_subtasks.update()
        .where(c.plan_id == plan_id, c.subtask_id == subtask_id)
        .values(
            outcome=end.outcome,
            final_tier=end.final_tier,
            final_tier_index=end.final_tier_index,
            validator_climbs=end.validator_climbs,
            reviewer_climbs=end.reviewer_climbs,
            review=end.review,
            review_note=end.review_note,
            finished_at=now,
        )
    )


def update_plan(
    conn: sa.Connection,
    plan_id: str,
    status: str,
    failure: str | None,
    cost_usd: Decimal,
    now: datetime,
) -> None:
    if status not in PLAN_STATUSES:
        raise ValueError(f"plan status must be one of {PLAN_STATUSES}, got {status!r}")
    conn.execute(
        plans.update()
        .where(plans.c.id == plan_id)
        .values(status=status, failure=failure, cost_pusd=to_pico(cost_usd), finished_at=now)
    )


def flag(conn: sa.Connection, plan_id: str, subtask_id: str, reason: str, now: datetime) -> bool:
    c = plan_subtasks.c
    result = conn.execute(
        plan_subtasks.update()
        .where(c.plan_id == plan_id, c.subtask_id == subtask_id)
        .values(flagged_at=now, flag_reason=reason)
    )
    return bool(result.rowcount)


# -- reads ---------------------------------------------------------------------------------------


def plan_row(conn: sa.Connection, plan_id: str) -> dict[str, Any] | None:
    row = conn.execute(sa.select(plans).where(plans.c.id == plan_id)).first()
    if row is None:
        return None
    out = dict(row._mapping)
    out["cost_usd"] = from_pico(out.pop("cost_pusd"))
    out["goal"] = out.pop("goal_text")
    return out


def plan_ids_like(conn: sa.Connection, prefix: str, limit: int = 5) -> list[str]:
    """Plan ids starting with *prefix* (for a shortened id), newest first."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    stmt = (
        sa.select(plans.c.id)
        .where(plans.c.id.like(f"{escaped}%", escape="\\"))
        .order_by(plans.c.created_at.desc())
        .limit(limit)
    )
    return [str(r[0]) for r in conn.execute(stmt).all()]


def subtask_rows(conn: sa.Connection, plan_id: str) -> list[dict[str, Any]]:
    c = plan_subtasks.c
    stmt = sa.select(plan_subtasks).where(c.plan_id == plan_id).order_by(c.position)
    out = []
    for row in conn.execute(stmt).all():
        item = dict(row._mapping)
        item["depends_on"] = json.loads(item["depends_on"])
        item["prompt"] = item.pop("prompt_text")
        out.append(item)
    return out


def plan_attempt_rows(conn: sa.Connection, plan_id: str) -> list[dict[str, Any]]:
    """Every attempt of the plan, in write order, with its cost-tree columns."""
    a = attempts.c
    stmt = sa.select(attempts).where(a.plan_id == plan_id).order_by(a.id)
    out = []
    for row in conn.execute(stmt).all():
        m = row._mapping
        out.append(
            {
                **attempt_dict(row),
                "plan_id": m["plan_id"],
                "subtask_id": m["subtask_id"],
                "parent_id": m["parent_id"],
                "plan_role": m["plan_role"],
            }
        )
    return out


def plan_cost(conn: sa.Connection, plan_id: str) -> Decimal:
    """The exact sum, in SQL, of what the plan's attempts cost."""
    total = conn.execute(
        sa.select(sa.func.sum(attempts.c.cost_pusd)).where(attempts.c.plan_id == plan_id)
    ).scalar()
    return from_pico(int(total or 0))


def calibration_rows(
    conn: sa.Connection, *, since: datetime | None = None, until: datetime | None = None
) -> list[dict[str, Any]]:
    """Every finished or running subtask (of plans created in the window) with what calibration
    counts: its assigned tier, outcome, climbs, flag, and whether a probe passed below it."""
    s, p, a = plan_subtasks.c, plans.c, attempts.c
    probed = (
        sa.select(sa.literal(1))
        .where(
            a.plan_id == s.plan_id,
            a.subtask_id == s.subtask_id,
            a.role == "probe",
            a.outcome == "accepted",
            a.tier_index < s.assigned_tier_index,
        )
        .exists()
    )
    where = window_filters(p.created_at, since, until)
    stmt = (
        sa.select(
            s.plan_id,
            s.subtask_id,
            s.kind,
            s.assigned_tier,
            s.assigned_tier_index,
            s.outcome,
            s.validator_climbs,
            s.reviewer_climbs,
            s.flagged_at,
            probed.label("probe_passed_below"),
        )
        .select_from(plan_subtasks.join(plans, plans.c.id == s.plan_id))
        .where(*where)
        .order_by(s.plan_id, s.position)
    )
    return [
        {**dict(r._mapping), "probe_passed_below": bool(r.probe_passed_below)}
        for r in conn.execute(stmt).all()
    ]
