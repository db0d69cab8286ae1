"""What a cascade run produces: verdicts, attempt records and the result."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal

from tierwise.pricing.usage import Usage
from tierwise.providers.base import Completion
from tierwise.task import Decision

Outcome = Literal["accepted", "rejected", "error", "partial"]
Role = Literal["live", "probe", "validator", "replay"]


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

    @property
    def passed(self) -> bool:
        return self.outcome == "accepted"


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

    @property
    def escalated(self) -> bool:
        return len({a.tier for a in self.attempts if a.role != "validator"}) > 1
