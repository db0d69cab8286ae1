"""Plan-execute-review: a planner tier plans once, cheap tiers execute, a reviewer tier gates.

Every model call is a run of the cascade's one loop (:meth:`tierwise.cascade.Cascade.arun`):

1. **Plan.** The planner tier (``[plan] planner_tier``, default the top) answers the goal with a
   task graph (:data:`~tierwise.orchestration.plan.PLAN_SCHEMA`), checked by
   :class:`~tierwise.orchestration.checks.PlanCheck`: a refused plan climbs with its problems
   in the handoff note, and when no tier plans validly the plan fails with a
   :class:`~tierwise.orchestration.plan.PlanError`. Assigned tiers are raised to floors and
   frontier pins.
2. **Execute.** Each subtask runs through the cascade from its assigned tier (its kind's
   validators, climbing as usual), as soon as the subtasks it depends on are accepted — so
   independent ones run concurrently (``[plan] max_parallel``) — with their outputs in its
   prompt. A subtask whose dependency was not accepted is skipped.
3. **Review.** The reviewer tier (``[plan] reviewer_tier``, default the second from the
   bottom; never below the executor's tier) accepts the output or rejects it; a rejected
   output runs again one tier up, with the rejected answer and the review as its handoff note.
   The reviewer is never the model that wrote the output: the cascade is told to avoid it, so
   another model of the tier (an alternate) reviews, or the next tier up when the tier has
   none — and when no tier from there to the top has another model (the executor was the top
   tier's only model), the review is skipped and the reason recorded.

Budgets: ``plan:<id>`` (``[plan] budget_usd``) covers every call of the plan, and
``plan-subtask:<id>:<subtask>`` (``[plan] subtask_budget_usd``) each subtask's executions and
reviews, on top of the tasks' own scopes. Every call's attempts carry the plan's id, their
subtask, their parent (the call that caused them) and their role in the plan, so the ledger
holds the whole cost tree (``tierwise plan show``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from tierwise.cascade.seams import Failure, RequestBuilder, default_request_builder
from tierwise.errors import BudgetExceededError, EscalationExhaustedError, TierwiseError
from tierwise.ledger.plans import PlannedSubtask, SubtaskEnd
from tierwise.orchestration.checks import PlanCheck, ReviewCheck
from tierwise.orchestration.plan import Plan, PlanError, Subtask, parse_plan
from tierwise.orchestration.prompts import (
    PLAN_PROMPT_VERSION,
    Review,
    executor_prompt,
    parse_review,
    planner_prompt,
    reviewer_prompt,
)
from tierwise.orchestration.result import PlanResult, PlanStore, SubtaskResult
from tierwise.records import SIDE_ROLES, AttemptRecord, PlanRef
from tierwise.task import Task

if TYPE_CHECKING:
    from tierwise.cascade import Cascade, CascadeResult
    from tierwise.policy.schema import Tier
    from tierwise.providers.base import CompletionRequest

__all__ = ["PLAN_KIND", "PlanRunner"]

#: The kind the planner's and the reviewer's tasks are recorded under (reserved in policies).
PLAN_KIND = "plan-execute"
#: Output limits of the planner's and the reviewer's calls.
PLANNER_MAX_TOKENS = 4096
REVIEWER_MAX_TOKENS = 400


@dataclass(slots=True)
class _Run:
    plan_id: str
    goal: str
    limits: dict[str, Decimal]
    planner_task_id: str | None = None
    results: dict[str, SubtaskResult] = field(default_factory=dict)


class PlanRunner:
    """Run goals as plan-execute-review through a :class:`~tierwise.cascade.Cascade`.

    Args:
        cascade: runs every call (its providers, ledger and budgets); async providers.
        store: where the plan's own rows go (default: the cascade's ledger when it is a
            :class:`~tierwise.ledger.Ledger`, else nowhere).
        planner_tier / reviewer_tier / review / max_parallel / budget_usd /
            subtask_budget_usd: override the policy's ``[plan]`` settings.
    """

    def __init__(
        self,
        cascade: Cascade,
        *,
        store: PlanStore | None = None,
        planner_tier: str | None = None,
        reviewer_tier: str | None = None,
        review: bool | None = None,
        max_parallel: int | None = None,
        budget_usd: Decimal | None = None,
        subtask_budget_usd: Decimal | None = None,
    ) -> None:
        policy = cascade.policy
        settings = policy.model.plan
        self.cascade = cascade
        self.policy = policy
        if store is None:
            from tierwise.ledger import Ledger

            store = cascade.ledger if isinstance(cascade.ledger, Ledger) else None
        self.store = store
        self.planner_tier = planner_tier or settings.planner_tier or policy.ladder[-1]
        # The articles' reviewer is Sonnet or Opus: by default the second tier from the bottom
        # (it moves up past the executor's tier and model as needed).
        ladder = policy.ladder
        self.reviewer_tier = (
            reviewer_tier or settings.reviewer_tier or ladder[min(1, len(ladder) - 1)]
        )
        for tier in (self.planner_tier, self.reviewer_tier):
            policy.tier(tier)  # an unknown tier is an error now, not mid-plan
        self.review = settings.review if review is None else review
        self.max_parallel = max_parallel or settings.max_parallel
        self.budget_usd = budget_usd if budget_usd is not None else settings.budget_usd
        self.subtask_budget_usd = (
            subtask_budget_usd if subtask_budget_usd is not None else settings.subtask_budget_usd
        )

    # -- public API ------------------------------------------------------------------------------

    def run(
        self,
        goal: str,
        *,
        limits: Mapping[str, Decimal] | None = None,
        plan_id: str | None = None,
        progress: Callable[[SubtaskResult], None] | None = None,
    ) -> PlanResult:
        """Blocking twin of :meth:`arun`: runs it on an event loop of its own (so not from
        inside a running one), then closes the async clients the cascade opened on that loop
        (they cannot outlive it; the cascade opens new ones when used again)."""

        async def once() -> PlanResult:
            try:
                return await self.arun(goal, limits=limits, plan_id=plan_id, progress=progress)
            finally:
                await self.cascade.aclose()

        return asyncio.run(once())

    async def arun(
        self,
        goal: str,
        *,
        limits: Mapping[str, Decimal] | None = None,
        plan_id: str | None = None,
        progress: Callable[[SubtaskResult], None] | None = None,
    ) -> PlanResult:
        """Plan *goal*, execute its subtasks, review each output; record everything.

        Args:
            limits: extra budget scopes for every call (e.g. a gateway key's daily budget).
            plan_id: the plan's id (default: a new random one).
            progress: called with each subtask's result as it ends.

        Returns:
            The :class:`PlanResult`; a plan whose subtasks did not all pass has status
            ``failed`` (nothing is raised for it). A plan no tier could produce validly has
            status ``refused`` and its :class:`PlanError` as ``failure``.
        """
        run = _Run(plan_id or uuid.uuid4().hex, goal, dict(limits or {}))
        if self.budget_usd is not None:
            run.limits[f"plan:{run.plan_id}"] = self.budget_usd
        store_content = self.policy.model.store_content
        await self._store(
            "record_plan",
            run.plan_id,
            goal,
            prompt_version=PLAN_PROMPT_VERSION,
            policy_revision=self.policy.revision,
            planner_tier=self.planner_tier,
            reviewer_tier=self.reviewer_tier if self.review else None,
            store_content=store_content,
        )
        planned = await self._plan(run)
        if isinstance(planned, PlanResult):
            await self._finish(planned)
            return planned
        plan, planner = planned
        await self._store(
            "record_subtasks",
            run.plan_id,
            [_planned(i, s, self.policy) for i, s in enumerate(plan)],
            planner_model=planner.model,
            planner_provider=_provider_of(planner),
            store_content=store_content,
        )
        await self._execute(run, plan, progress)
        results = tuple(run.results[s.id] for s in plan)
        failed = [r for r in results if r.outcome != "accepted"]
        sinks = [run.results[s.id] for s in plan.sinks]
        if len(sinks) == 1:
            output = sinks[0].output
        else:
            output = "\n\n".join(f"## {r.subtask.id}\n{r.output}" for r in sinks)
        result = PlanResult(
            plan_id=run.plan_id,
            goal=goal,
            status="failed" if failed else "accepted",
            plan=plan,
            output=None if failed else output,
            subtasks=results,
            planner_attempts=planner.attempts,
            failure="; ".join(f"{r.subtask.id}: {r.outcome}" for r in failed) or None,
            planner_task_id=planner.task_id,
        )
        await self._finish(result)
        return result

    # -- the three roles -------------------------------------------------------------------------

    async def _plan(self, run: _Run) -> tuple[Plan, CascadeResult] | PlanResult:
        rates = await self._failure_rates() if self.policy.model.plan.prompt_failure_rates else ()
        system, prompt = planner_prompt(run.goal, self.policy, rates)
        task = Task(
            kind=PLAN_KIND,
            prompt=prompt,
            system=system,
            max_tokens=PLANNER_MAX_TOKENS,
            plan=PlanRef(run.plan_id, "planner"),
        )
        run.planner_task_id = task.id
        check = PlanCheck(self.policy, self.cascade.router)
        try:
            planner = await self.cascade.arun(
                task, start_tier=self.planner_tier, limits=run.limits, validators=(check,)
            )
        except (EscalationExhaustedError, BudgetExceededError) as exc:
            status, failure = self._why_planning_failed(exc, run.plan_id)
            return PlanResult(
                run.plan_id, run.goal, status, None, None, (), exc.attempts, failure, task.id
            )
        return parse_plan(planner.output, self.policy, router=self.cascade.router), planner

    def _why_planning_failed(self, exc: TierwiseError, plan_id: str) -> tuple[str, str]:
        """The plan's status and failure when no planner call produced a valid plan."""
        if isinstance(exc, BudgetExceededError):
            return "budget", str(exc)
        assert isinstance(exc, EscalationExhaustedError)
        if exc.last_error is not None:
            return "error", str(exc)
        # Every tier answered and no plan passed the check: the last one's problems, in full.
        rejected = [a for a in exc.attempts if a.outcome == "rejected" and a.role not in SIDE_ROLES]
        problems = ["no tier produced a valid plan"]
        if rejected and rejected[-1].output is not None:
            try:
                parse_plan(rejected[-1].output, self.policy, router=self.cascade.router)
            except PlanError as refused:
                problems = list(refused.problems)
        return "refused", str(PlanError(problems, plan_id))

    async def _execute(
        self, run: _Run, plan: Plan, progress: Callable[[SubtaskResult], None] | None
    ) -> None:
        """Run every subtask once its dependencies are done; independent ones concurrently."""
        done = {s.id: asyncio.Event() for s in plan}
        slots = asyncio.Semaphore(self.max_parallel)

        async def one(subtask: Subtask) -> None:
            try:
                for dep in subtask.depends_on:
                    await done[dep].wait()
                blocked = [d for d in subtask.depends_on if run.results[d].outcome != "accepted"]
                if blocked:
                    note = "dependency not accepted: " + ", ".join(blocked)
                    result = SubtaskResult(subtask, "skipped", review_note=note)
                else:
                    async with slots:
                        result = await self._subtask(run, subtask)
                run.results[subtask.id] = result
                if progress is not None:
                    progress(result)
                await self._store(
                    "finish_subtask",
                    run.plan_id,
                    subtask.id,
                    SubtaskEnd(
                        outcome=result.outcome,
                        final_tier=result.tier,
                        final_tier_index=(
                            None if result.tier is None else self.policy.tier_index(result.tier)
                        ),
                        validator_climbs=result.validator_climbs,
                        reviewer_climbs=result.reviewer_climbs,
                        review=result.review if result.outcome != "skipped" else None,
                        review_note=result.review_note,
                    ),
                )
            finally:
                done[subtask.id].set()

        try:
            async with asyncio.TaskGroup() as group:
                for subtask in plan:
                    group.create_task(one(subtask))
        except BaseExceptionGroup as group_error:  # a ledger failure, say: raise it as it was
            raise group_error.exceptions[0] from None

    async def _subtask(self, run: _Run, subtask: Subtask) -> SubtaskResult:
        """Execute one subtask from its assigned tier; review; climb one tier on a rejection."""
        limits = dict(run.limits)
        if self.subtask_budget_usd is not None:
            limits[f"plan-subtask:{run.plan_id}:{subtask.id}"] = self.subtask_budget_usd
        inputs = [(d, run.results[d].output or "") for d in subtask.depends_on]
        prompt = executor_prompt(run.goal, subtask, inputs)
        ladder = self.policy.ladder
        tier, parent = subtask.tier, run.planner_task_id
        failure: Failure | None = None
        attempts: list[AttemptRecord] = []
        task_ids: list[str] = []
        climbs = {"validator": 0, "reviewer": 0}

        def ended(outcome: str, **kw: Any) -> SubtaskResult:
            return SubtaskResult(
                subtask,
                outcome,
                validator_climbs=climbs["validator"],
                reviewer_climbs=climbs["reviewer"],
                task_ids=tuple(task_ids),
                attempts=tuple(attempts),
                **kw,
            )

        while True:
            task = Task(
                kind=subtask.kind,
                prompt=prompt,
                max_tokens=0,  # the kind's or the tier's limit
                plan=PlanRef(run.plan_id, "executor", subtask.id, parent),
            )
            task_ids.append(task.id)
            try:
                done = await self.cascade.arun(
                    task, start_tier=tier, limits=limits, request_builder=_handing(failure)
                )
            except EscalationExhaustedError as exc:
                attempts.extend(exc.attempts)
                climbs["validator"] += _climbs(exc.attempts)
                return ended("failed", review_note=_last_reason(exc.attempts))
            except BudgetExceededError as exc:
                attempts.extend(exc.attempts)
                return ended("budget", review_note=str(exc))
            attempts.extend(done.attempts)
            climbs["validator"] += len(done.escalations)
            if not self.review:
                return ended("accepted", output=done.output, tier=done.tier, model=done.model)
            verdict = await self._review(run, subtask, done, limits, attempts, task_ids)
            if isinstance(verdict, str):  # skipped, and why
                return ended(
                    "accepted",
                    output=done.output,
                    tier=done.tier,
                    model=done.model,
                    review="skipped",
                    review_note=verdict,
                )
            review, review_task = verdict
            if review.accepted:
                return ended(
                    "accepted",
                    output=done.output,
                    tier=done.tier,
                    model=done.model,
                    review="accepted",
                    review_note=review.reason,
                )
            index = self.policy.tier_index(done.tier)
            if index + 1 >= len(ladder):
                return ended(
                    "rejected",
                    output=done.output,
                    tier=done.tier,
                    model=done.model,
                    review="rejected",
                    review_note=review.reason,
                )
            earlier = () if failure is None else (*failure.earlier, (failure.tier, failure.reason))
            failure = Failure(
                done.tier,
                f"reviewer: {review.reason}",
                done.output,
                model=done.model,
                rejected_by="reviewer",
                earlier=earlier,
            )
            tier, parent = ladder[index + 1], review_task
            climbs["reviewer"] += 1

    async def _review(
        self,
        run: _Run,
        subtask: Subtask,
        done: CascadeResult,
        limits: Mapping[str, Decimal],
        attempts: list[AttemptRecord],
        task_ids: list[str],
    ) -> tuple[Review, str] | str:
        """Ask the reviewer about *done*'s output: the review and its task id, or why none."""
        policy = self.policy
        start = max(policy.tier_index(self.reviewer_tier), _index(done, policy))
        tier = next(
            (
                name
                for name in policy.ladder[start:]
                if any(m != done.model for m, _ in self.cascade.providers.for_tier(name))
            ),
            None,
        )
        if tier is None:
            top = policy.ladder[-1]
            return (
                f"the reviewer tier {top!r} has no model but {done.model}, which wrote the "
                "output (models favour their own answers); give the tier an alternate to review"
            )
        system, prompt = reviewer_prompt(run.goal, subtask, done.output)
        task = Task(
            kind=PLAN_KIND,
            prompt=prompt,
            system=system,
            max_tokens=REVIEWER_MAX_TOKENS,
            plan=PlanRef(run.plan_id, "reviewer", subtask.id, done.task_id),
        )
        task_ids.append(task.id)
        try:
            reviewed = await self.cascade.arun(
                task,
                start_tier=tier,
                limits=limits,
                validators=(ReviewCheck(),),
                avoid_models=(done.model,),
            )
        except (EscalationExhaustedError, BudgetExceededError) as exc:
            attempts.extend(exc.attempts)
            return f"the review failed: {exc}"
        attempts.extend(reviewed.attempts)
        return parse_review(reviewed.output), task.id

    # -- bookkeeping -----------------------------------------------------------------------------

    async def _failure_rates(self) -> list[str]:
        from tierwise.orchestration.calibration import failure_rate_lines

        if self.store is None:
            return []
        rows = await asyncio.to_thread(self.store.calibration_rows)
        return failure_rate_lines(rows)

    async def _finish(self, result: PlanResult) -> None:
        await self._store(
            "finish_plan",
            result.plan_id,
            status=result.status,
            failure=result.failure,
            cost_usd=result.cost_usd,
        )

    async def _store(self, method: str, *args: Any, **kwargs: Any) -> None:
        """Call the plan store off the event loop (a database write), when there is one."""
        if self.store is not None:
            await asyncio.to_thread(getattr(self.store, method), *args, **kwargs)


def _planned(position: int, s: Subtask, policy: Any) -> PlannedSubtask:
    return PlannedSubtask(
        subtask_id=s.id,
        position=position,
        kind=s.kind,
        prompt=s.prompt,
        depends_on=s.depends_on,
        planned_tier=s.planned_tier,
        assigned_tier=s.tier,
        assigned_tier_index=policy.tier_index(s.tier),
        justification=s.justification,
        raised=s.raised,
    )


def _handing(failure: Failure | None) -> RequestBuilder | None:
    """A request builder whose first attempt carries the review's handoff (none without one)."""
    if failure is None:
        return None

    def build(
        task: Task, tier: Tier, model: str, max_tokens: int, own: Failure | None
    ) -> CompletionRequest:
        return default_request_builder(task, tier, model, max_tokens, own or failure)

    return build


def _index(done: CascadeResult, policy: Any) -> int:
    return int(policy.tier_index(done.tier))


def _provider_of(result: CascadeResult) -> str | None:
    main = [a for a in result.attempts if a.role not in SIDE_ROLES and a.outcome == "accepted"]
    return main[-1].provider if main else None


def _climbs(attempts: Sequence[AttemptRecord]) -> int:
    tiers = {a.tier for a in attempts if a.role not in SIDE_ROLES}
    return max(0, len(tiers) - 1)


def _last_reason(attempts: Sequence[AttemptRecord]) -> str | None:
    main = [a for a in attempts if a.role not in SIDE_ROLES]
    return main[-1].failure if main else None
