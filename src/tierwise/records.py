"""The records every layer passes around: token usage, verdicts and attempts.

They sit on the ground layer beside :mod:`tierwise.task` so that the cascade, the ledger, the
error tree and the evaluation can all speak of an attempt without importing one another.
Frozen dataclasses with slots, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from typing import Literal

__all__ = [
    "SIDE_ROLES",
    "AgreementRecord",
    "AttemptRecord",
    "Outcome",
    "PlanRef",
    "PlanRole",
    "Role",
    "TierAnswer",
    "Usage",
    "Verdict",
]


@dataclass(frozen=True, slots=True)
class Usage:
    """Disjoint token buckets of one call (or a sum of calls)."""

    input_tokens: int = 0  # uncached input only
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    cache_read_tokens: int = 0
    output_tokens: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"usage bucket {f.name} must be a non-negative int, got {value!r}")

    def __add__(self, other: Usage) -> Usage:
        return Usage(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    @property
    def total_input_tokens(self) -> int:
        """Every input token, cached or not."""
        return (
            self.input_tokens
            + self.cache_write_5m_tokens
            + self.cache_write_1h_tokens
            + self.cache_read_tokens
        )

    @property
    def total_tokens(self) -> int:
        return self.total_input_tokens + self.output_tokens

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


Outcome = Literal["accepted", "rejected", "error", "partial"]
#: Why a call was made. ``live``: the caller's own task; ``probe``: a cheaper tier tried on a share
#: of a kind's traffic to see whether it now passes; ``shadow``: a call made beside the live one
#: only to compare, whose output is never used (the same request sent to a tier the task did not
#: try, after the caller had its answer; paid from the shadow budget); ``validator``: a
#: validator's own model call; ``judge``: the layer-2 judge asked where the task should go;
#: ``replay``: a recorded answer replayed by the evaluation. Only ``live`` counts toward the
#: escalation rate (:mod:`tierwise.ledger.escalation`).
Role = Literal["live", "probe", "shadow", "validator", "replay", "judge"]
#: Roles of side calls: priced and recorded with their task, but never a rung of its climb.
SIDE_ROLES: frozenset[str] = frozenset({"validator", "judge", "shadow"})
#: What a call does in a plan-execute-review run (the ``plan_role`` column).
PlanRole = Literal["planner", "executor", "reviewer", "judge"]


@dataclass(frozen=True, slots=True)
class PlanRef:
    """Where a task sits in a plan's cost tree; its attempts carry these in the ledger.

    ``parent_id`` is the id of the task whose result caused this one: the planner's task for a
    subtask's first execution, the execution a review reviews, the review that sent an
    execution one tier up (``None`` for the planner itself).
    """

    plan_id: str
    plan_role: PlanRole
    subtask_id: str | None = None
    parent_id: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """One validator's judgement of one output.

    ``reason`` is short and safe to show callers (error bodies, ledger rows); ``detail``, when
    set, is the longer text meant for the next tier's prompt (e.g. a check command's output),
    which may hold what the caller must not see.
    """

    validator: str
    ok: bool
    reason: str = ""
    score: float | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One provider call made for a task, successful or not, with its exact cost."""

    task_id: str
    attempt_no: int  # 0-based within the task
    kind: str
    tier: str
    tier_index: int
    model: str
    provider: str
    usage: Usage
    cost_usd: Decimal
    latency_s: float
    outcome: Outcome
    started_at: datetime
    role: Role = "live"
    verdicts: tuple[Verdict, ...] = ()
    failure: str | None = None  # the reason it did not pass: validator reason or error message
    error_class: str | None = None
    escalated_from: int | None = None  # attempt_no of the attempt this one climbed from
    stop_reason: str | None = None
    output: str | None = None
    session: str | None = None
    #: Set for the attempts of a plan-execute-review run (see :class:`PlanRef`).
    plan_id: str | None = None
    subtask_id: str | None = None
    parent_id: str | None = None
    plan_role: PlanRole | None = None

    @property
    def passed(self) -> bool:
        return self.outcome == "accepted"


@dataclass(frozen=True, slots=True)
class TierAnswer:
    """One tier's answer to a shadowed task, as agreement compares it (the text is not kept).

    ``role`` is ``live`` for the answers the task's own run got, ``shadow`` for the others;
    ``passed`` whether the answer passed the kind's validators.
    """

    tier: str
    tier_index: int
    model: str
    attempt_no: int
    role: Role
    passed: bool


@dataclass(frozen=True, slots=True)
class AgreementRecord:
    """How two tiers' answers to one shadowed task compare: stored without the answers, so it
    exists under ``store_content = false`` too. ``low`` is the cheaper tier's answer.

    ``agree`` is ``None`` when neither answer had a value of the kind's answer format;
    ``method`` says how they were compared (``label``, ``choice``, ``json``, ``number`` or
    ``text≥0.6``: token-set overlap at that threshold, with ``similarity`` the overlap found).
    """

    task_id: str
    kind: str
    low: TierAnswer
    high: TierAnswer
    agree: bool | None
    method: str
    similarity: float | None
    created_at: datetime
