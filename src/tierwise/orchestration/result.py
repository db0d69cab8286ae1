"""What a plan run produces (:class:`PlanResult`, :class:`SubtaskResult`) and where a plan's own
rows go (:class:`PlanStore`, which :class:`tierwise.ledger.Ledger` satisfies)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from tierwise.ledger.plans import PlannedSubtask, SubtaskEnd
from tierwise.orchestration.plan import Plan, Subtask
from tierwise.records import AttemptRecord

if TYPE_CHECKING:
    from datetime import datetime

__all__ = ["PlanResult", "PlanStore", "SubtaskResult"]


class PlanStore(Protocol):
    """Where a plan's own rows go (:class:`tierwise.ledger.Ledger` is one)."""

    def record_plan(
        self,
        plan_id: str,
        goal: str,
        *,
        prompt_version: str,
        policy_revision: str | None,
        planner_tier: str,
        reviewer_tier: str | None,
        store_content: bool,
    ) -> None: ...

    def record_subtasks(
        self,
        plan_id: str,
        subtasks: Sequence[PlannedSubtask],
        *,
        planner_model: str | None,
        planner_provider: str | None,
        store_content: bool,
    ) -> None: ...

    def finish_subtask(self, plan_id: str, subtask_id: str, end: SubtaskEnd) -> None: ...

    def finish_plan(
        self, plan_id: str, *, status: str, failure: str | None, cost_usd: Decimal
    ) -> None: ...

    def calibration_rows(
        self, *, since: datetime | None = None, until: datetime | None = None
    ) -> list[dict[str, Any]]: ...


@dataclass(frozen=True, slots=True)
class SubtaskResult:
    """How one subtask went: outcome, output, where it ended, its climbs and its review.

    ``outcome``: ``accepted``, ``rejected`` (the reviewer refused the top tier's output),
    ``failed`` (no tier produced an output its validators passed), ``budget``, or ``skipped``
    (a dependency was not accepted). ``review``: ``accepted``, ``rejected``, ``skipped`` (with
    ``review_note`` saying why) or ``off``.
    """

    subtask: Subtask
    outcome: str
    output: str | None = None
    tier: str | None = None
    model: str | None = None
    validator_climbs: int = 0
    reviewer_climbs: int = 0
    review: str = "off"
    review_note: str | None = None
    task_ids: tuple[str, ...] = ()
    attempts: tuple[AttemptRecord, ...] = ()

    @property
    def cost_usd(self) -> Decimal:
        return sum((a.cost_usd for a in self.attempts), Decimal(0))


@dataclass(frozen=True, slots=True)
class PlanResult:
    """A whole plan's run: status, the final output, every subtask and every attempt.

    ``status``: ``accepted`` (every subtask accepted), ``failed`` (some were not), ``refused``
    (no valid plan), ``budget`` (the planner could not be paid for) or ``error``.
    ``output`` joins the accepted outputs of the subtasks nothing depends on.
    """

    plan_id: str
    goal: str
    status: str
    plan: Plan | None
    output: str | None
    subtasks: tuple[SubtaskResult, ...]
    planner_attempts: tuple[AttemptRecord, ...]
    failure: str | None = None
    planner_task_id: str | None = None

    @property
    def attempts(self) -> tuple[AttemptRecord, ...]:
        """Every attempt of the plan, the planner's first."""
        return self.planner_attempts + tuple(a for s in self.subtasks for a in s.attempts)

    @property
    def cost_usd(self) -> Decimal:
        return sum((a.cost_usd for a in self.attempts), Decimal(0))

    def as_dict(self) -> dict[str, Any]:
        """The run as plain data (outputs included; attempts counted, not listed)."""
        return {
            "plan_id": self.plan_id,
            "status": self.status,
            "output": self.output,
            "failure": self.failure,
            "cost_usd": str(self.cost_usd),
            "attempts": len(self.attempts),
            "planner": {
                "task_id": self.planner_task_id,
                "cost_usd": str(sum((a.cost_usd for a in self.planner_attempts), Decimal(0))),
            },
            "subtasks": [
                {
                    "id": r.subtask.id,
                    "kind": r.subtask.kind,
                    "depends_on": list(r.subtask.depends_on),
                    "planned_tier": r.subtask.planned_tier,
                    "assigned_tier": r.subtask.tier,
                    "raised": r.subtask.raised,
                    "justification": r.subtask.justification,
                    "outcome": r.outcome,
                    "tier": r.tier,
                    "model": r.model,
                    "validator_climbs": r.validator_climbs,
                    "reviewer_climbs": r.reviewer_climbs,
                    "review": r.review,
                    "review_note": r.review_note,
                    "cost_usd": str(r.cost_usd),
                    "output": r.output,
                }
                for r in self.subtasks
            ],
        }

    @property
    def task_ids(self) -> tuple[str, ...]:
        """Every cascade task the plan ran (the gateway commits each before answering)."""
        own = (self.planner_task_id,) if self.planner_task_id else ()
        return own + tuple(t for s in self.subtasks for t in s.task_ids)
