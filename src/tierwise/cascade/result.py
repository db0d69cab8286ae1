"""What a cascade run produces: the accepted answer and its trail.

The attempt and verdict records live on the ground layer (:mod:`tierwise.records`); they are
re-exported here for callers of the cascade.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from tierwise.providers.base import Completion
from tierwise.records import SIDE_ROLES
from tierwise.records import AttemptRecord as AttemptRecord
from tierwise.records import Outcome as Outcome
from tierwise.records import Role as Role
from tierwise.records import Verdict as Verdict
from tierwise.task import Decision, Task


@dataclass(frozen=True, slots=True)
class CascadeResult:
    """The accepted output and the whole trail that led to it."""

    task_id: str
    output: str
    tier: str
    model: str
    decision: Decision
    attempts: tuple[AttemptRecord, ...]
    cost_usd: Decimal
    latency_s: float
    stop_reason: str | None = None
    escalations: tuple[tuple[str, str], ...] = field(default=())  # (from tier, reason)
    completion: Completion | None = None  # the accepted attempt's completion (raw body included)
    task: Task | None = None  # the task that was run (what shadow calls send again)

    @property
    def escalated(self) -> bool:
        return len({a.tier for a in self.attempts if a.role not in SIDE_ROLES}) > 1
