"""Shadow mode: a task's answered request sent again to the tiers it did not try, to compare.

"Measure first": a share of a kind's tasks (``[kinds.X] shadow``, default ``[defaults]
shadow``, 0 unless set) is also answered by every tier it did not try (or the kind's
``shadow_tiers``) — *after* the caller has its answer, so shadow calls never delay or change
what the caller gets. Which tasks is decided from the task id alone (:func:`sampled`), so every
process and every rerun picks the same ones.

Each shadow call is a run of the cascade's one loop (:meth:`Cascade._steps
<tierwise.cascade.runner.Cascade>`), pinned at the tier, with the task's own request builder
(the gateway's forwards the caller's body: tools, tool choice, response format and system
prompt kept) and the kind's validators. It joins the task's row (:class:`~.steps.Side`): its
attempts continue the task's numbering with role ``shadow`` — a side role, so never a climb or
an escalation — and are paid from their own budget, ``[budgets] shadow_day_usd`` per UTC day
(scope ``shadow-day:<date>``), never the caller's key, kind, session or task budgets. When that
budget refuses a call, shadowing pauses until the next UTC day and :attr:`ShadowState.paused`
says so (the gateway shows it on ``/metrics``).

When a shadow answer arrives it is compared with every answer the task already has — the live
run's and earlier shadow ones — by the kind's answer format (:mod:`~tierwise.cascade.compare`),
and only the verdicts are written (:class:`~tierwise.records.AgreementRecord`), so teams with
``store_content = false`` get agreement rates too.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from tierwise.cascade.checking import Checks
from tierwise.cascade.compare import compare_answers
from tierwise.cascade.result import AttemptRecord, CascadeResult
from tierwise.cascade.seams import RequestBuilder
from tierwise.cascade.steps import Pin, Side, Steps
from tierwise.errors import BudgetExceededError, EscalationExhaustedError, TierwiseError
from tierwise.records import AgreementRecord, TierAnswer

if TYPE_CHECKING:
    from tierwise.task import Task

__all__ = ["ShadowRun", "ShadowState", "ShadowStep", "sampled"]

ShadowStatus = Literal["done", "not_sampled", "nothing_to_try", "paused", "off", "error"]
#: The budget scope shadow calls are reserved against, per UTC day.
SCOPE_PREFIX = "shadow-day:"


def sampled(task_id: str, share: float) -> bool:
    """Whether the task with *task_id* is in a *share* of tasks (0..1), decided by its id alone.

    The first 8 bytes of the id's SHA-256 as a fraction of 2**64: uniform over ids, the same in
    every process and every run, and nested (a task sampled at 0.05 is sampled at 0.10).
    """
    if share <= 0:
        return False
    if share >= 1:
        return True
    digest = hashlib.sha256(task_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


@dataclass(frozen=True, slots=True)
class ShadowRun:
    """What shadowing one task did.

    ``status``: ``done`` (every planned tier answered or failed), ``not_sampled`` (outside the
    kind's share), ``nothing_to_try`` (the task tried every tier, or it has no ladder tier),
    ``paused`` (the shadow budget is spent for the day: ``reason`` says which and until when;
    tiers run before the refusal are kept), ``off`` (no share for the kind), ``error`` (a
    shadow run failed unexpectedly; ``reason`` says how). ``answers`` are the shadow answers
    with their verdicts, ``agreements`` every pair compared, ``attempts`` every row written.
    """

    task_id: str
    status: ShadowStatus
    reason: str = ""
    answers: tuple[TierAnswer, ...] = ()
    agreements: tuple[AgreementRecord, ...] = ()
    attempts: tuple[AttemptRecord, ...] = ()
    cost_usd: Decimal = Decimal(0)

    @property
    def paused(self) -> bool:
        return self.status == "paused"


@dataclass(slots=True)
class ShadowState:
    """A cascade's shadow bookkeeping: the pause, and counts of what shadowing did."""

    #: The budget scope that refused a shadow call (shadowing pauses while it is today's).
    paused_scope: str | None = None
    #: Why it paused, for status lines.
    paused_reason: str = ""
    #: (kind, status) → shadow runs.
    runs: dict[tuple[str, str], int] = field(default_factory=dict)
    #: Shadow spend so far in this process (USD).
    spent_usd: Decimal = Decimal(0)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def paused(self, scope: str | None) -> bool:
        """Whether shadowing is paused for budget *scope* (today's)."""
        return scope is not None and scope == self.paused_scope

    def count(self, kind: str, run: ShadowRun) -> None:
        with self._lock:
            key = (kind, run.status)
            self.runs[key] = self.runs.get(key, 0) + 1
            self.spent_usd += run.cost_usd

    def status(self, now: datetime) -> dict[str, Any]:
        """The status line's facts: paused or not, why, and the shadow spend of this process."""
        scope = f"{SCOPE_PREFIX}{now.date().isoformat()}"
        paused = self.paused(scope)
        return {
            "paused": paused,
            "reason": self.paused_reason if paused else "",
            "spent_usd": format(self.spent_usd, "f"),
        }


class ShadowStep(Checks):
    """Shadow calls for :class:`~tierwise.cascade.runner.Cascade` (its public ``shadow`` and
    ``ashadow``)."""

    request_builder: RequestBuilder
    shadow_state: ShadowState
    _now: Callable[[], datetime]
    # The loop and its drivers, defined by Cascade.
    _steps: Callable[..., Steps[CascadeResult]]
    _drive_sync: Callable[[Steps[Any]], Any]
    _drive_async: Callable[[Steps[Any]], Any]

    # -- public ----------------------------------------------------------------------------

    def shadow_due(self, task: Task) -> bool:
        """Whether *task* is in its kind's shadow share (see :func:`sampled`)."""
        return sampled(task.id, self.policy.kind(task.kind).shadow)

    def shadow(
        self,
        result: CascadeResult,
        *,
        task: Task | None = None,
        request_builder: RequestBuilder | None = None,
        force: bool = False,
    ) -> ShadowRun:
        """Shadow an answered task: send it to the tiers it did not try, compare, record.

        Call it after the caller has what it needs (the calls take as long as the tiers do).
        Returns at once with ``not_sampled`` unless the kind's share picks the task (or
        *force*). *task* defaults to ``result.task``; *request_builder* should be the one the
        task ran with (default: the cascade's).
        """
        steps = self._shadow_steps(result, task, request_builder, force)
        run: ShadowRun = self._drive_sync(steps)
        return run

    async def ashadow(
        self,
        result: CascadeResult,
        *,
        task: Task | None = None,
        request_builder: RequestBuilder | None = None,
        force: bool = False,
    ) -> ShadowRun:
        """Async twin of :meth:`shadow`."""
        steps = self._shadow_steps(result, task, request_builder, force)
        run: ShadowRun = await self._drive_async(steps)
        return run

    def shadow_tiers(self, task: Task, result: CascadeResult) -> list[str]:
        """The tiers a shadowed *task* goes to: the kind's ``shadow_tiers`` or every ladder
        tier, minus those its run tried (a concrete-model call has no ladder: none)."""
        own = [a for a in result.attempts if a.role == self.role]
        if not own or any(a.tier_index < 0 for a in own):
            return []
        tried = {a.tier for a in own}
        wanted = self.policy.kind(task.kind).shadow_tiers or self.policy.ladder
        return [t for t in self.policy.ladder if t in wanted and t not in tried]

    # -- the run ---------------------------------------------------------------------------

    def _shadow_steps(
        self,
        result: CascadeResult,
        task: Task | None,
        builder: RequestBuilder | None,
        force: bool,
    ) -> Steps[ShadowRun]:
        task = task or result.task
        if task is None:
            raise ValueError("shadow() needs the task: pass task=, or a result from run()/arun()")
        kind = self.policy.kind(task.kind)
        run = yield from self._shadow_tiers(task, result, builder, force, kind.answer)
        self.shadow_state.count(self.policy.kind_label(task.kind), run)
        return run

    def _shadow_tiers(
        self,
        task: Task,
        result: CascadeResult,
        builder: RequestBuilder | None,
        force: bool,
        answer_format: str,
    ) -> Steps[ShadowRun]:
        share = self.policy.kind(task.kind).shadow
        if not force and share <= 0:
            return ShadowRun(task.id, "off", f"kind {task.kind!r} has no shadow share")
        if not force and not sampled(task.id, share):
            return ShadowRun(task.id, "not_sampled", f"outside the {share:g} shadow share")
        tiers = self.shadow_tiers(task, result)
        if not tiers:
            return ShadowRun(task.id, "nothing_to_try", "the task tried every tier")
        limits, scope = self._shadow_limits()
        if self.shadow_state.paused(scope):
            return ShadowRun(task.id, "paused", self.shadow_state.paused_reason)
        known = _answers(result, self.role)
        first_no = max((a.attempt_no for a in result.attempts), default=-1) + 1
        answers: list[TierAnswer] = []
        # The live run's own answers are compared too (a task that climbed has two), so a
        # shadowed task yields every pair of the tiers that answered it.
        pairs = [
            self._pair(task, *known[j], *known[i], answer_format)
            for i in range(len(known))
            for j in range(i + 1, len(known))
        ]
        if self.ledger is not None and pairs:
            with self._batch():
                self.ledger.record_agreements(pairs)
        attempts: list[AttemptRecord] = []
        status: ShadowStatus = "done"
        reason = ""
        for tier in tiers:
            model, provider = self._candidates(tier)[0]
            pin = Pin(tier, model, provider, label=tier, index=self.policy.tier_index(tier))
            side = Side(first_no + len(attempts), limits, "shadow")
            try:
                done = yield from self._steps(
                    task, None, None, builder, pin, relay=False, side=side
                )
                trail: Sequence[AttemptRecord] = done.attempts
            except EscalationExhaustedError as exc:  # rejected by a validator, or errored
                trail = exc.attempts
            except BudgetExceededError as exc:
                attempts.extend(exc.attempts)
                status, reason = "paused", self._pause(exc)
                break
            except TierwiseError as exc:  # e.g. no price for the model: say so, stop here
                status, reason = "error", f"{tier}: {type(exc).__name__}: {exc}"
                break
            attempts.extend(trail)
            own = _answer(trail)
            if own is None:
                continue  # a provider error: no answer to compare
            record, text = own
            fresh = [
                self._pair(task, record, text, prior, prior_text, answer_format)
                for prior, prior_text in known
            ]
            known.append(own)
            answers.append(record)
            pairs.extend(fresh)
            if self.ledger is not None and fresh:
                with self._batch():
                    self.ledger.record_agreements(fresh)
        cost = sum((a.cost_usd for a in attempts), Decimal(0))
        return ShadowRun(
            task.id, status, reason, tuple(answers), tuple(pairs), tuple(attempts), cost
        )

    def _shadow_limits(self) -> tuple[Mapping[str, Decimal], str | None]:
        """The shadow budget's scope for today and its limit (none when it is not set)."""
        limit = self.policy.model.budgets.shadow_day_usd
        if limit is None:
            return {}, None
        scope = f"{SCOPE_PREFIX}{self._now().date().isoformat()}"
        return {scope: limit}, scope

    def _pause(self, exc: BudgetExceededError) -> str:
        state = self.shadow_state
        state.paused_scope = exc.budget
        day = exc.budget.removeprefix(SCOPE_PREFIX)
        state.paused_reason = (
            f"shadow budget spent: ${exc.spent_usd} of ${exc.limit_usd} on {day} (UTC); "
            "shadowing paused until the next UTC day ([budgets] shadow_day_usd)"
        )
        return state.paused_reason

    def _pair(
        self,
        task: Task,
        new: TierAnswer,
        new_text: str,
        prior: TierAnswer,
        prior_text: str,
        answer_format: str,
    ) -> AgreementRecord:
        similarity = self.policy.model.shadow.similarity
        found = compare_answers(new_text, prior_text, answer_format, similarity=similarity)
        low, high = (prior, new) if prior.tier_index <= new.tier_index else (new, prior)
        return AgreementRecord(
            task_id=task.id,
            kind=task.kind,
            low=low,
            high=high,
            agree=found.agree,
            method=found.method,
            similarity=found.similarity,
            created_at=self._now(),
        )


def _answers(result: CascadeResult, role: str) -> list[tuple[TierAnswer, str]]:
    """The live run's answers: per tier, its last attempt that answered (accepted or rejected)."""
    by_tier: dict[str, tuple[TierAnswer, str]] = {}
    for a in result.attempts:
        if a.role != role or a.tier_index < 0 or a.output is None:
            continue
        if a.outcome not in ("accepted", "rejected"):
            continue
        answer = TierAnswer(a.tier, a.tier_index, a.model, a.attempt_no, "live", a.passed)
        by_tier[a.tier] = (answer, a.output)
    return sorted(by_tier.values(), key=lambda pair: pair[0].tier_index)


def _answer(trail: Sequence[AttemptRecord]) -> tuple[TierAnswer, str] | None:
    """A shadow run's own answer, or ``None`` when its call failed.

    Billed retries come before the answer and its validators' model calls after it, so the
    answer is the trail's first attempt that answered (accepted or rejected).
    """
    for a in trail:
        if a.outcome in ("accepted", "rejected") and a.output is not None:
            answer = TierAnswer(a.tier, a.tier_index, a.model, a.attempt_no, "shadow", a.passed)
            return answer, a.output
    return None
