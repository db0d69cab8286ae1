"""The cascade: route, attempt, validate, climb one tier on failure, record every attempt.

The loop is written once, as a generator that *yields* the two kinds of I/O it needs — a provider
call and a validation pass — and receives their results. :meth:`Cascade.run` drives it with
blocking calls and :meth:`Cascade.arun` with awaits, so the sync and async paths can never drift
apart. Ledger writes happen inline, two commits per attempt (the budget reservation before the
call, skipped when no budget applies; then the settlement, the attempt's row and, at the end, the
task's row after validation), so every attempt is on disk before the next hop starts and before
the caller sees a result. The seams it calls out through are in :mod:`tierwise.cascade.seams`.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Generator, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tierwise.cascade.budget import MemoryBudgets, budget_limits, input_token_bound
from tierwise.cascade.result import AttemptRecord, CascadeResult, Role, Verdict
from tierwise.cascade.seams import (
    Failure,
    LedgerSink,
    ProviderSource,
    RequestBuilder,
    Scorer,
    default_request_builder,
)
from tierwise.errors import (
    BudgetExceededError,
    EscalationExhaustedError,
    ProviderError,
    UnknownModelError,
)
from tierwise.pricing.usage import Usage
from tierwise.providers.base import Completion, CompletionRequest, Provider
from tierwise.task import Decision, Task

if TYPE_CHECKING:
    from tierwise.cascade.validators import Validator
    from tierwise.policy import Policy
    from tierwise.policy.schema import Tier
    from tierwise.pricing import ModelPrices, PriceCatalog
    from tierwise.providers.factory import ProviderPool
    from tierwise.routing import Router


# -- the effects the loop yields ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Call:
    provider: Provider
    request: CompletionRequest


@dataclass(frozen=True, slots=True)
class _Validate:
    validators: tuple[Validator, ...]
    output: str
    context: _Context


@dataclass(slots=True)
class _Run:
    """Mutable state of one task's run."""

    task: Task
    decision: Decision
    limits: dict[str, Decimal]
    started: float
    attempts: list[AttemptRecord] = field(default_factory=list)
    #: Whether the task's row is in the ledger yet (written with its first attempt).
    begun: bool = False
    #: The reservation of the attempt awaiting validation, with its actual cost.
    held: tuple[Any, Decimal] | None = None

    def next_no(self) -> int:
        return len(self.attempts)


class _Context:
    """What a validator sees: the task, the completion, and priced calls to other tiers."""

    def __init__(self, cascade: Cascade, run: _Run, tier: str, completion: Completion) -> None:
        self.task = run.task
        self.completion = completion
        self.tier = tier
        self._cascade = cascade
        self._run = run

    def call_tier(self, tier: str, task: Task) -> Completion:
        result: Completion = self._cascade._drive_sync(
            self._cascade._validator_call(self._run, tier, task)
        )
        return result

    async def acall_tier(self, tier: str, task: Task) -> Completion:
        result: Completion = await self._cascade._drive_async(
            self._cascade._validator_call(self._run, tier, task)
        )
        return result


_Steps = Generator["_Call | _Validate", Any, Any]


class Cascade:
    """Run tasks up the ladder until a validated answer, recording every attempt.

    Args:
        policy: the routing policy (tiers, rules, validators, budgets).
        providers: where tier models come from; default: real SDK providers for the policy.
        ledger: where attempts are recorded and budgets reserved; ``None`` keeps budgets in memory.
        router: default ``Router(policy)``.
        scorer: optional pre-routing scorer proposing a start tier (frontier pins still hold).
        catalog: prices; default ``PriceCatalog(policy.model.prices)``.
        role: what the rows are: ``live`` traffic, a ``probe`` or a ``replay``.
        request_builder: turns a task into a provider request (the gateway passes its own).
        sleep / asleep / clock: injectable time, for tests.
    """

    def __init__(
        self,
        policy: Policy,
        *,
        providers: ProviderSource | None = None,
        ledger: LedgerSink | None = None,
        router: Router | None = None,
        scorer: Scorer | None = None,
        catalog: PriceCatalog | None = None,
        role: Role = "live",
        request_builder: RequestBuilder | None = None,
        env: Mapping[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.perf_counter,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        from tierwise.pricing import PriceCatalog
        from tierwise.providers.retry import CooldownTracker, RetryPolicy
        from tierwise.routing import Router

        self._owns_providers = providers is None
        if providers is None:
            from tierwise.providers.factory import ProviderPool

            providers = ProviderPool(policy, env=os.environ if env is None else env)
        self.policy = policy
        self.providers: ProviderSource | ProviderPool = providers
        self.ledger = ledger
        self.router = router or Router(policy)
        self.scorer = scorer
        self.catalog = catalog or PriceCatalog(policy.model.prices)
        self.role: Role = role
        self.request_builder = request_builder or default_request_builder
        self.retry = RetryPolicy.from_policy(policy.model.retry)
        self.cooldown = CooldownTracker(clock=time.monotonic, policy=self.retry)
        self._sleep = sleep
        self._clock = clock
        self._now = now
        self._budgets: LedgerSink | MemoryBudgets = (
            ledger if ledger is not None else MemoryBudgets()
        )
        self._validators: dict[tuple[str, tuple[str, ...]], tuple[Validator, ...]] = {}
        #: (kind, from tier, reason) → count; read by learning and metrics.
        self.escalations: Counter[tuple[str, str, str]] = Counter()
        if ledger is not None:
            ledger.record_policy_revision(
                policy.revision, json.dumps(policy.model.model_dump(mode="json")), _src(policy)
            )

    # -- public API ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the provider clients the cascade created itself (not ones passed in)."""
        if self._owns_providers:
            close = getattr(self.providers, "close", None)
            if close is not None:
                close()

    async def aclose(self) -> None:
        """Close the clients the cascade created, on the running loop (async clients need it)."""
        if self._owns_providers:
            aclose = getattr(self.providers, "aclose", None)
            if aclose is not None:
                await aclose()

    def __enter__(self) -> Cascade:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Cascade:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def run(
        self,
        task: Task,
        *,
        start_tier: str | None = None,
        limits: Mapping[str, Decimal] | None = None,
    ) -> CascadeResult:
        """Run *task* to an accepted answer.

        Raises:
            EscalationExhaustedError: every tier from the start to the top failed (has the trail).
            BudgetExceededError: a budget would be overrun by the next attempt (has the trail).
        """
        result: CascadeResult = self._drive_sync(self._steps(task, start_tier, limits))
        return result

    async def arun(
        self,
        task: Task,
        *,
        start_tier: str | None = None,
        limits: Mapping[str, Decimal] | None = None,
    ) -> CascadeResult:
        """Async twin of :meth:`run`."""
        result: CascadeResult = await self._drive_async(self._steps(task, start_tier, limits))
        return result

    def decide(self, task: Task, start_tier: str | None = None) -> Decision:
        """The decision the cascade starts from: explicit tier, scorer proposal, or the router."""
        if start_tier is None and self.scorer is not None:
            start_tier = self.scorer.propose(task)
        if start_tier is not None:
            return self.router.start_at(task, start_tier)
        return self.router.route(task)

    def validators_for(self, task: Task) -> tuple[Validator, ...]:
        """The kind's validators plus any named ones the task asks for (built once, cached)."""
        extra = task.validators or ()
        key = (task.kind, tuple(extra))
        cached = self._validators.get(key)
        if cached is None:
            from tierwise.cascade.validators import build_validator

            base = self.policy.base_dir
            config = self.policy.kind(task.kind)
            built = [
                build_validator(s, base_dir=base, name=n)
                for s, n in zip(config.validators, config.validator_names, strict=True)
            ]
            for name in extra:
                spec = self.policy.model.validators[name]  # names are checked by the caller
                built.append(build_validator(spec, base_dir=base, name=name))
            cached = self._validators[key] = tuple(built)
        return cached

    # -- drivers -----------------------------------------------------------------------------

    def _drive_sync(self, steps: _Steps) -> Any:
        from tierwise.cascade.validators import run_validators
        from tierwise.providers.retry import call_with_retries

        value: Any = None
        try:
            while True:
                effect = steps.send(value)
                if isinstance(effect, _Call):
                    try:
                        value = call_with_retries(
                            effect.provider, effect.request, self.retry, sleep=self._sleep
                        )
                    except ProviderError as exc:
                        value = exc
                else:
                    value = run_validators(effect.validators, effect.output, effect.context)
        except StopIteration as stop:
            return stop.value

    async def _drive_async(self, steps: _Steps) -> Any:
        import asyncio

        from tierwise.cascade.validators import arun_validators
        from tierwise.providers.retry import acall_with_retries

        async def asleep(seconds: float) -> None:
            await asyncio.sleep(seconds)

        value: Any = None
        try:
            while True:
                effect = steps.send(value)
                if isinstance(effect, _Call):
                    try:
                        value = await acall_with_retries(
                            effect.provider, effect.request, self.retry, sleep=asleep
                        )
                    except ProviderError as exc:
                        value = exc
                else:
                    value = await arun_validators(effect.validators, effect.output, effect.context)
        except StopIteration as stop:
            return stop.value

    # -- the loop ----------------------------------------------------------------------------

    def _steps(
        self, task: Task, start_tier: str | None, limits: Mapping[str, Decimal] | None
    ) -> _Steps:
        decision = self.decide(task, start_tier)
        run = _Run(
            task=task,
            decision=decision,
            limits=budget_limits(self.policy, task, self._now(), limits),
            started=self._clock(),
        )
        kind = self.policy.kind(task.kind)
        validators = self.validators_for(task)
        ladder = self.policy.ladder
        failure: Failure | None = None
        previous: int | None = None
        escalations: list[tuple[str, str]] = []
        try:
            for index in range(decision.tier_index, len(ladder)):
                tier_name = ladder[index]
                tier = self.policy.tier(tier_name)
                max_tokens = task.max_tokens or kind.max_tokens or tier.max_tokens
                completion = yield from self._attempt_tier(
                    run, tier, index, max_tokens, failure, previous
                )
                if isinstance(completion, ProviderError):
                    reason = f"provider error: {type(completion).__name__}: {completion}"
                    failure, previous = Failure(tier_name, reason), run.next_no() - 1
                    self._escalated(task.kind, tier_name, type(completion).__name__)
                    escalations.append((tier_name, reason))
                    continue
                verdicts: tuple[Verdict, ...] = ()
                if validators:
                    ctx = _Context(self, run, tier_name, completion)
                    verdicts = yield _Validate(validators, completion.text, ctx)
                failed = next((v for v in verdicts if not v.ok), None)
                with self._batch():  # the verdict, the settlement and the task's end: one commit
                    attempt_no = self._record_attempt_outcome(run, verdicts, failed)
                    if failed is None:
                        return self._finish_ok(run, tier_name, completion, tuple(escalations))
                failure = Failure(
                    tier_name, f"{failed.validator}: {failed.reason}", completion.text
                )
                previous = attempt_no
                self._escalated(task.kind, tier_name, failed.validator)
                escalations.append((tier_name, failure.reason))
        except BudgetExceededError as exc:
            self._finish(run, "budget", None, None)
            raise BudgetExceededError(
                exc.budget, exc.limit_usd, exc.spent_usd, exc.needed_usd, run.attempts
            ) from None
        except BaseException:
            self._finish(run, "error", None, None)  # leave no task 'running' behind
            raise
        self._finish(run, "exhausted", None, None)
        raise EscalationExhaustedError(task.id, run.attempts)

    def _attempt_tier(
        self,
        run: _Run,
        tier: Tier,
        index: int,
        max_tokens: int,
        failure: Failure | None,
        previous: int | None,
    ) -> _Steps:
        """One tier: the primary model, then alternates while calls keep failing.

        Returns the completion (its attempt recorded later, once validated) or the last
        provider error (already recorded). Budgets are reserved before each model is tried.
        """
        candidates = list(self.providers.for_tier(tier.name))
        usable = [c for c in candidates if not self.cooldown.cooling(c[0])] or candidates
        last_error: ProviderError | None = None
        for model, provider in usable:
            request = self.request_builder(run.task, tier, model, max_tokens, failure)
            prices = self._prices(model, provider)
            reservation = self._reserve(run, prices, request)
            started_at, t0 = self._now(), self._clock()
            result = yield _Call(provider, request)
            latency = self._clock() - t0
            if isinstance(result, ProviderError):
                self.cooldown.record_failure(model)
                last_error = result
                with self._batch():
                    self._release(reservation)
                    self._append(
                        run,
                        AttemptRecord(
                            task_id=run.task.id,
                            attempt_no=run.next_no(),
                            kind=run.task.kind,
                            tier=tier.name,
                            tier_index=index,
                            model=model,
                            provider=provider.name,
                            usage=Usage(),
                            cost_usd=Decimal(0),
                            latency_s=latency,
                            outcome="error",
                            started_at=started_at,
                            role=self.role,
                            failure=str(result),
                            error_class=type(result).__name__,
                            escalated_from=previous,
                            session=run.task.session,
                        ),
                    )
                continue
            self.cooldown.record_success(model)
            cost = self._cost(result, prices)
            # Settled and recorded with its outcome once validated (one commit); pending meanwhile.
            run.held = (reservation, cost)
            run.attempts.append(
                AttemptRecord(
                    task_id=run.task.id,
                    attempt_no=run.next_no(),
                    kind=run.task.kind,
                    tier=tier.name,
                    tier_index=index,
                    model=result.model or model,
                    provider=provider.name,
                    usage=result.usage,
                    cost_usd=cost,
                    latency_s=latency,
                    outcome="accepted",
                    started_at=started_at,
                    role=self.role,
                    escalated_from=previous,
                    stop_reason=result.stop_reason,
                    output=result.text,
                    session=run.task.session,
                )
            )
            return result
        assert last_error is not None  # for_tier always yields the primary
        return last_error

    def _validator_call(self, run: _Run, tier_name: str, task: Task) -> _Steps:
        """A validator's own model call: priced, budgeted, recorded as a ``validator`` attempt."""
        tier = self.policy.tier(tier_name)
        model, provider = self.providers.for_tier(tier_name)[0]
        request = self.request_builder(task, tier, model, tier.max_tokens, None)
        prices = self._prices(model, provider)
        reservation = self._reserve(run, prices, request)
        started_at, t0 = self._now(), self._clock()
        result = yield _Call(provider, request)
        latency = self._clock() - t0
        common: dict[str, Any] = dict(
            task_id=run.task.id,
            kind=run.task.kind,
            tier=tier_name,
            tier_index=self.policy.tier_index(tier_name),
            model=model,
            provider=provider.name,
            latency_s=latency,
            started_at=started_at,
            role="validator",
            session=run.task.session,
        )
        if isinstance(result, ProviderError):
            with self._batch():
                self._release(reservation)
                self._append(
                    run,
                    AttemptRecord(
                        attempt_no=run.next_no(),
                        usage=Usage(),
                        cost_usd=Decimal(0),
                        outcome="error",
                        failure=str(result),
                        error_class=type(result).__name__,
                        **common,
                    ),
                )
            raise result
        cost = self._cost(result, prices)
        with self._batch():
            self._settle(reservation, cost)
            self._append(
                run,
                AttemptRecord(
                    attempt_no=run.next_no(),
                    usage=result.usage,
                    cost_usd=cost,
                    outcome="accepted",
                    stop_reason=result.stop_reason,
                    output=result.text,
                    **common,
                ),
            )
        return result

    # -- bookkeeping ---------------------------------------------------------------------------

    def _prices(self, model: str, provider: Provider) -> ModelPrices | None:
        try:
            return self.catalog.prices_for(model, provider.name)
        except UnknownModelError:
            if self.role == "replay":
                return None  # replayed rows carry their recorded cost
            raise

    def _reserve(self, run: _Run, prices: ModelPrices | None, request: CompletionRequest) -> Any:
        from tierwise.pricing import max_cost

        amount = Decimal(0)
        if prices is not None:
            amount = max_cost(
                prices, input_tokens=input_token_bound(request), max_tokens=request.max_tokens
            )
        if not run.limits:
            return None  # no budget applies: nothing to hold, and no commit to pay for
        return self._budgets.reserve(run.task.id, run.limits, amount)

    def _settle(self, reservation: Any, cost: Decimal) -> None:
        if reservation is not None:
            self._budgets.settle(reservation, cost)

    def _release(self, reservation: Any) -> None:
        if reservation is not None:
            self._budgets.release(reservation)

    def _cost(self, completion: Completion, prices: ModelPrices | None) -> Decimal:
        from tierwise.pricing import cost_of

        if completion.recorded_cost_usd is not None:
            return Decimal(completion.recorded_cost_usd)
        if prices is None:
            raise UnknownModelError(completion.model)
        return cost_of(completion.usage, prices)

    def _batch(self) -> AbstractContextManager[None]:
        """Group ledger writes into one transaction (one fsync); a no-op without a ledger."""
        return self.ledger.batch() if self.ledger is not None else nullcontext()

    def _begin(self, run: _Run) -> None:
        """Write the task's row, once, in the transaction of its first attempt or its end."""
        if self.ledger is not None and not run.begun:
            self.ledger.begin_task(
                run.task,
                run.decision,
                policy_revision=self.policy.revision,
                role=self.role,
                store_content=self.policy.model.store_content,
            )
        run.begun = True

    def _append(self, run: _Run, attempt: AttemptRecord) -> None:
        run.attempts.append(attempt)
        self._begin(run)
        if self.ledger is not None:
            self.ledger.record_attempt(attempt, store_content=self.policy.model.store_content)

    def _record_attempt_outcome(
        self, run: _Run, verdicts: tuple[Verdict, ...], failed: Verdict | None
    ) -> int:
        """Finalise the pending main attempt with its verdicts and write it to the ledger."""
        # The pending attempt is the last non-validator one; validator calls came after it.
        pos = max(i for i, a in enumerate(run.attempts) if a.role != "validator")
        pending = run.attempts[pos]
        from dataclasses import replace

        final = replace(
            pending,
            outcome="accepted" if failed is None else "rejected",
            verdicts=verdicts,
            failure=None if failed is None else f"{failed.validator}: {failed.reason}",
        )
        run.attempts[pos] = final
        if run.held is not None:
            reservation, cost = run.held
            self._settle(reservation, cost)
            run.held = None
        self._begin(run)
        if self.ledger is not None:
            self.ledger.record_attempt(final, store_content=self.policy.model.store_content)
        return final.attempt_no

    def _finish_ok(
        self,
        run: _Run,
        tier: str,
        completion: Completion,
        escalations: tuple[tuple[str, str], ...],
    ) -> CascadeResult:
        cost, latency = self._finish(run, "accepted", tier, completion.text)
        return CascadeResult(
            task_id=run.task.id,
            output=completion.text,
            tier=tier,
            model=completion.model,
            decision=run.decision,
            attempts=tuple(run.attempts),
            cost_usd=cost,
            latency_s=latency,
            stop_reason=completion.stop_reason,
            escalations=escalations,
            completion=completion,
        )

    def _finish(
        self, run: _Run, outcome: str, tier: str | None, output: str | None
    ) -> tuple[Decimal, float]:
        cost = sum((a.cost_usd for a in run.attempts), Decimal(0))
        latency = self._clock() - run.started
        with self._batch():
            if run.held is not None:  # interrupted while validating: the call was paid for
                stop = Verdict("cascade", False, "interrupted while validating")
                self._record_attempt_outcome(run, (), stop)
            self._begin(run)
            if self.ledger is None:
                return cost, latency
            self.ledger.finish_task(
                run.task.id,
                outcome=outcome,
                final_tier=tier,
                cost_usd=cost,
                latency_s=latency,
                attempts=len(run.attempts),
                output=output,
                store_content=self.policy.model.store_content,
            )
        return cost, latency

    def _escalated(self, kind: str, tier: str, reason: str) -> None:
        self.escalations[(kind, tier, reason)] += 1


def _src(policy: Policy) -> str | None:
    source: Path | None = policy.source
    return str(source) if source is not None else None
