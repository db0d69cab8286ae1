"""The cascade: route, attempt, validate, climb one tier on failure, record every attempt.

The loop is written once, as a generator (:meth:`Cascade._steps`) that *yields* the I/O it needs
and receives the results:

* a call — one provider call, retried per the policy — answers a :class:`Completion` or the
  :class:`ProviderError`;
* an open — a streamed call, sent and awaited until its first events — answers a
  :class:`ProviderStream` or the error (nothing has reached the caller yet, so it can still climb);
* a relay — hand an opened stream to the caller — answers how the relay ended;
* a validation pass answers the verdicts.

Three drivers run it: :meth:`Cascade.run` (blocking), :meth:`Cascade.arun` (awaits) and
:meth:`Cascade.astream` (an async iterator that relays a live stream to its consumer). Cooldowns,
alternates, budget reservations, climbing and attempt records are therefore written once,
whichever way an answer leaves. Ledger writes happen inline, two commits per attempt (the budget
reservation before the call, skipped when no budget applies; then the settlement, the attempt's
row and, at the end, the task's row after validation), so every attempt is on disk before the
next hop starts and before the caller sees a result. The seams it calls out through are in
:mod:`tierwise.cascade.seams`.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from tierwise.cascade.budget import MemoryBudgets, budget_limits, input_token_bound
from tierwise.cascade.result import AttemptRecord, CascadeResult, Outcome, Role, Verdict
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
    LedgerError,
    ProviderError,
    StreamInterruptedError,
    UnknownModelError,
)
from tierwise.pricing.usage import Usage
from tierwise.providers.base import (
    AsyncProvider,
    Completion,
    CompletionRequest,
    Provider,
    ProviderStream,
    StreamingProvider,
)
from tierwise.task import Decision, Task

if TYPE_CHECKING:
    from tierwise.cascade.validators import Validator
    from tierwise.policy import Policy
    from tierwise.policy.schema import Tier
    from tierwise.pricing import ModelPrices, PriceCatalog
    from tierwise.providers.factory import ProviderPool
    from tierwise.routing import Router

T = TypeVar("T")

# -- the effects the loop yields ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Call:
    provider: AsyncProvider
    request: CompletionRequest


@dataclass(frozen=True, slots=True)
class _Open:
    provider: StreamingProvider
    request: CompletionRequest


@dataclass(frozen=True, slots=True)
class _Relay:
    stream: ProviderStream
    opened: StreamOpened


@dataclass(frozen=True, slots=True)
class _RelayEnd:
    """How a relay ended: normally (``completion`` set) or broken / abandoned (``error``)."""

    usage: Usage
    completion: Completion | None = None
    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class _Tried:
    """What a call or an open came to, and the failed tries before it that were billed."""

    result: object  # Completion, ProviderStream or ProviderError
    billed: tuple[ProviderError, ...] = ()


@dataclass(frozen=True, slots=True)
class _Reserve:
    task_id: str
    limits: Mapping[str, Decimal]
    amount: Decimal


@dataclass(frozen=True, slots=True)
class _Validate:
    validators: tuple[Validator, ...]
    output: str
    context: _Context


_Effect = _Call | _Open | _Relay | _Reserve | _Validate
_Steps = Generator[_Effect, object, T]


# -- what astream yields -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """The first item of :meth:`Cascade.astream`: the stream is open, nothing relayed yet.

    ``attempts`` are the failed attempts before this one (other models, lower tiers).
    """

    task_id: str
    tier: str
    model: str
    provider: StreamingProvider
    decision: Decision
    attempts: tuple[AttemptRecord, ...]


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """One batch of the provider's own stream events, to relay as they are."""

    batch: Sequence[object]


@dataclass(frozen=True, slots=True)
class StreamDone:
    """The last item: the stream ended normally and everything is recorded."""

    result: CascadeResult


StreamItem = StreamOpened | StreamChunk | StreamDone


@dataclass(frozen=True, slots=True)
class Pin:
    """Call exactly this model: no routing, alternates, climb or validators.

    ``tier`` is the ladder tier whose settings (timeout, output limit) apply; the attempt is
    recorded under ``label`` with tier index -1, never as a rung of the ladder.
    """

    tier: str
    model: str
    provider: AsyncProvider
    label: str = "passthrough"


@dataclass(slots=True)
class _Run:
    """Mutable state of one task's run."""

    task: Task
    decision: Decision
    limits: dict[str, Decimal]
    started: float
    builder: RequestBuilder
    attempts: list[AttemptRecord] = field(default_factory=list)
    #: Whether the task's row is in the ledger yet (written with its first attempt).
    begun: bool = False
    #: The reservation of the attempt awaiting validation, with its actual cost.
    held: tuple[object, Decimal] | None = None
    #: One reservation covering the whole climb (``[budgets] climb``), settled at the end.
    umbrella: object | None = None

    def next_no(self) -> int:
        return len(self.attempts)


class _Context:
    """What a validator sees: the task, the completion, and priced calls to other tiers."""

    def __init__(
        self,
        task: Task,
        tier: str,
        completion: Completion,
        call: Callable[[str, Task], Completion],
        acall: Callable[[str, Task], Awaitable[Completion]],
    ) -> None:
        self.task = task
        self.completion = completion
        self.tier = tier
        self._call = call
        self._acall = acall

    def call_tier(self, tier: str, task: Task) -> Completion:
        return self._call(tier, task)

    async def acall_tier(self, tier: str, task: Task) -> Completion:
        return await self._acall(tier, task)


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
        request_builder: turns a task into a provider request (a run may pass its own).
        env: where the default provider pool reads API keys (default ``os.environ``).
        sleep / clock / now: injectable time, for tests.
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
        #: kind → tasks started above their routed tier because the budget could not cover
        #: the climb (``[budgets] climb = "fit"``).
        self.budget_moves: Counter[str] = Counter()
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
        request_builder: RequestBuilder | None = None,
        pin: Pin | None = None,
    ) -> CascadeResult:
        """Run *task* to an accepted answer.

        Args:
            start_tier: start here instead of where the router would.
            limits: extra budget scopes (e.g. a gateway key's daily budget).
            request_builder: build this run's requests (default: the cascade's).
            pin: call exactly one model, with no routing, alternates, climb or validators.

        Raises:
            EscalationExhaustedError: every tier from the start to the top failed (has the trail).
            BudgetExceededError: a budget would be overrun by the next attempt (has the trail).
        """
        steps = self._steps(task, start_tier, limits, request_builder, pin, relay=False)
        return self._drive_sync(steps)

    async def arun(
        self,
        task: Task,
        *,
        start_tier: str | None = None,
        limits: Mapping[str, Decimal] | None = None,
        request_builder: RequestBuilder | None = None,
        pin: Pin | None = None,
    ) -> CascadeResult:
        """Async twin of :meth:`run`."""
        steps = self._steps(task, start_tier, limits, request_builder, pin, relay=False)
        return await self._drive_async(steps)

    async def astream(
        self,
        task: Task,
        *,
        start_tier: str | None = None,
        limits: Mapping[str, Decimal] | None = None,
        request_builder: RequestBuilder | None = None,
        pin: Pin | None = None,
    ) -> AsyncGenerator[StreamItem, None]:
        """Run *task* with its answer relayed live: :class:`StreamOpened`, the provider's
        batches as :class:`StreamChunk`, then :class:`StreamDone`.

        Until the first item, failures climb the ladder exactly as in :meth:`arun` (alternates,
        retries, the next tier), so an error raised before it means nothing reached the caller.
        A relayed answer cannot be validated before the caller sees it, so no validators run.
        Every provider must be a :class:`StreamingProvider`.

        Raises:
            EscalationExhaustedError, BudgetExceededError: before the first item, as :meth:`arun`.
            StreamInterruptedError: the stream broke after it had started (recorded ``partial``).
        """
        steps = self._steps(task, start_tier, limits, request_builder, pin, relay=True)
        value: object = None
        while True:
            try:
                effect = steps.send(value)
            except StopIteration as stop:
                yield StreamDone(cast(CascadeResult, stop.value))
                return
            if not isinstance(effect, _Relay):
                value = await self._perform_async(effect)
                continue
            stream = effect.stream
            try:
                yield effect.opened
                async for batch in stream.batches():
                    yield StreamChunk(batch)
                value = _RelayEnd(stream.usage, completion=stream.completion())
            except ProviderError as exc:
                value = _RelayEnd(stream.usage, error=exc)
            except BaseException as exc:  # the consumer went away (closed, cancelled), or a bug
                try:
                    steps.send(_RelayEnd(stream.usage, error=exc))  # records the partial attempt
                except (StopIteration, StreamInterruptedError):
                    pass
                finally:
                    await _close_shielded(stream)
                raise
            await _close_shielded(stream)

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

    def _drive_sync(self, steps: _Steps[T]) -> T:
        from tierwise.cascade.validators import run_validators
        from tierwise.providers.retry import retrying

        value: object = None
        try:
            while True:
                effect = steps.send(value)
                if isinstance(effect, _Call):
                    if not isinstance(effect.provider, Provider):
                        raise TypeError(
                            f"provider {effect.provider.name!r} has no blocking call: use arun"
                        )
                    billed: list[ProviderError] = []
                    try:
                        result: object = retrying(
                            partial(effect.provider.complete, effect.request),
                            self.retry,
                            sleep=self._sleep,
                            on_retry=_keep_billed(billed),
                        )
                    except ProviderError as exc:
                        result = exc
                    value = _Tried(result, tuple(billed))
                elif isinstance(effect, _Validate):
                    value = run_validators(effect.validators, effect.output, effect.context)
                elif isinstance(effect, _Reserve):
                    value = self._hold(effect)
                else:
                    raise TypeError("streams are relayed by Cascade.astream only")
        except StopIteration as stop:
            return cast(T, stop.value)

    async def _drive_async(self, steps: _Steps[T]) -> T:
        value: object = None
        try:
            while True:
                value = await self._perform_async(steps.send(value))
        except StopIteration as stop:
            return cast(T, stop.value)

    async def _perform_async(self, effect: _Effect) -> object:
        """Carry out one effect on the running loop (a relay is :meth:`astream`'s own)."""
        from tierwise.cascade.validators import arun_validators
        from tierwise.providers.retry import aretrying

        if isinstance(effect, _Validate):
            return await arun_validators(effect.validators, effect.output, effect.context)
        if isinstance(effect, _Reserve):
            if isinstance(self._budgets, MemoryBudgets):
                return self._hold(effect)  # in memory: no I/O to wait for
            import asyncio

            return await asyncio.to_thread(self._hold, effect)  # a database write: off the loop
        if isinstance(effect, _Relay):
            raise TypeError("streams are relayed by Cascade.astream only")
        billed: list[ProviderError] = []
        keep = _keep_billed(billed)
        result: object
        try:
            if isinstance(effect, _Call):
                op = partial(effect.provider.acomplete, effect.request)
                result = await aretrying(op, self.retry, sleep=_asleep, on_retry=keep)
            else:
                opening = partial(effect.provider.aopen, effect.request)
                result = await aretrying(opening, self.retry, sleep=_asleep, on_retry=keep)
        except ProviderError as exc:
            result = exc
        return _Tried(result, tuple(billed))

    # -- the loop ----------------------------------------------------------------------------

    def _steps(
        self,
        task: Task,
        start_tier: str | None,
        limits: Mapping[str, Decimal] | None,
        builder: RequestBuilder | None,
        pin: Pin | None,
        *,
        relay: bool,
    ) -> _Steps[CascadeResult]:
        if pin is not None:
            decision = Decision(
                pin.label, -1, "passthrough", task.kind, kind_known=task.kind in self.policy.kinds
            )
            plan = [(pin.tier, pin.label, -1)]
        else:
            decision = self.decide(task, start_tier)
            ladder = self.policy.ladder
            plan = [(ladder[i], ladder[i], i) for i in range(decision.tier_index, len(ladder))]
        run = _Run(
            task=task,
            decision=decision,
            limits=budget_limits(self.policy, task, self._now(), limits),
            started=self._clock(),
            builder=builder or self.request_builder,
        )
        kind = self.policy.kind(task.kind)
        validators = () if relay or pin is not None else self.validators_for(task)
        failure: Failure | None = None
        previous: int | None = None
        escalations: list[tuple[str, str]] = []
        interrupted: BaseException | None = None
        last_error: ProviderError | None = None
        try:
            if pin is None and run.limits and self.policy.model.budgets.climb != "per_attempt":
                skip = yield from self._cover_climb(run, plan, kind.max_tokens)
                plan = plan[skip:]
            for config_name, tier_name, index in plan:
                tier = self.policy.tier(config_name)
                max_tokens = task.max_tokens or kind.max_tokens or tier.max_tokens
                candidates = (
                    [(pin.model, pin.provider)] if pin is not None else self._candidates(tier_name)
                )
                outcome = yield from self._attempt_tier(
                    run,
                    tier,
                    (tier_name, index),
                    candidates,
                    max_tokens,
                    failure,
                    previous,
                    relay=relay,
                )
                last_error = outcome if isinstance(outcome, ProviderError) else None
                if isinstance(outcome, ProviderError):
                    reason = f"provider error: {type(outcome).__name__}: {outcome}"
                    failure, previous = Failure(tier_name, reason), run.next_no() - 1
                    self._escalated(task.kind, tier_name, type(outcome).__name__)
                    escalations.append((tier_name, reason))
                    continue
                if isinstance(outcome, _RelayEnd):
                    if outcome.error is None and outcome.completion is not None:
                        return self._finish_ok(
                            run, tier_name, outcome.completion, tuple(escalations)
                        )
                    interrupted = outcome.error or RuntimeError("the stream ended without a reply")
                    break
                completion = outcome
                verdicts: tuple[Verdict, ...] = ()
                if validators:
                    ctx = _Context(
                        task,
                        tier_name,
                        completion,
                        lambda t, sub: self._drive_sync(self._validator_call(run, t, sub)),
                        lambda t, sub: self._drive_async(self._validator_call(run, t, sub)),
                    )
                    checked = yield _Validate(validators, completion.text, ctx)
                    verdicts = cast(tuple[Verdict, ...], checked)
                failed = next((v for v in verdicts if not v.ok), None)
                with self._batch():  # the verdict, the settlement and the task's end: one commit
                    attempt_no = self._record_attempt_outcome(run, verdicts, failed)
                    if failed is None:
                        return self._finish_ok(run, tier_name, completion, tuple(escalations))
                # The next tier hears the whole story (detail); callers and the ledger the reason.
                failure = Failure(
                    tier_name,
                    f"{failed.validator}: {failed.detail or failed.reason}",
                    completion.text,
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
        if interrupted is not None:
            self._finish(run, "error", None, None)
            raise StreamInterruptedError(task.id, run.attempts, interrupted)
        self._finish(run, "exhausted", None, None)
        raise EscalationExhaustedError(task.id, run.attempts, last_error)

    def _candidates(self, tier: str) -> list[tuple[str, AsyncProvider]]:
        """The tier's models, primary first, skipping cooling ones while any other can serve."""
        entries = list(self.providers.for_tier(tier))
        return [e for e in entries if not self.cooldown.cooling(e[0])] or entries

    def _attempt_tier(
        self,
        run: _Run,
        tier: Tier,
        recorded_as: tuple[str, int],
        candidates: Sequence[tuple[str, AsyncProvider]],
        max_tokens: int,
        failure: Failure | None,
        previous: int | None,
        *,
        relay: bool,
    ) -> _Steps[Completion | ProviderError | _RelayEnd]:
        """One tier: the primary model, then alternates while calls keep failing.

        Returns the completion (its attempt recorded later, once validated), how a relay ended
        (recorded), or the last provider error (recorded). Budgets are reserved before each
        model is tried. Attempts are recorded under *recorded_as* (tier name and index).
        """
        label, index = recorded_as
        last_error: ProviderError | None = None
        for model, provider in candidates:
            request = run.builder(run.task, tier, model, max_tokens, failure)
            prices = self._prices(model, provider)
            reservation = yield from self._reserve(run, prices, request)
            _warm(provider)  # one-off client set-up is not the call's latency
            started_at, t0 = self._now(), self._clock()
            if relay:
                if not isinstance(provider, StreamingProvider):
                    self._release(reservation)
                    raise TypeError(f"provider {provider.name!r} cannot stream")
                tried = yield _Open(provider, request)
            else:
                tried = yield _Call(provider, request)
            assert isinstance(tried, _Tried)
            result = tried.result
            slot = _Slot(label, index, model, provider.name, started_at, t0, self.role, previous)
            spent = self._record_billed(run, slot, tried.billed, prices)
            if isinstance(result, ProviderError):
                self.cooldown.record_failure(model)
                last_error = result
                self._record_failed(run, slot, result, prices, reservation, spent)
                continue
            self.cooldown.record_success(model)
            if isinstance(result, Completion):
                cost = self._cost(result, prices)
                # Settled and recorded with its outcome once validated (one commit); pending now.
                run.held = (reservation, cost + spent)
                run.attempts.append(
                    slot.record(run, self._clock(), "accepted", completion=result, cost=cost)
                )
                return result
            stream = cast(ProviderStream, result)
            opened = StreamOpened(
                run.task.id,
                label,
                model,
                cast(StreamingProvider, provider),  # checked before the stream was opened
                run.decision,
                tuple(run.attempts),
            )
            ended = yield _Relay(stream, opened)
            assert isinstance(ended, _RelayEnd)
            if ended.completion is not None:
                cost = self._cost(ended.completion, prices)
                record = slot.record(
                    run, self._clock(), "accepted", completion=ended.completion, cost=cost
                )
            else:
                cost = _priced(ended.usage, prices)
                error = ended.error or RuntimeError("the relay ended without a reply")
                record = slot.record(
                    run, self._clock(), "partial", error=error, usage=ended.usage, cost=cost
                )
            with self._batch():
                self._settle(reservation, cost + spent)
                self._append(run, record)
            return ended
        assert last_error is not None  # for_tier always yields the primary
        return last_error

    def _validator_call(self, run: _Run, tier_name: str, task: Task) -> _Steps[Completion]:
        """A validator's own model call: priced, budgeted, recorded as a ``validator`` attempt."""
        tier = self.policy.tier(tier_name)
        model, provider = self.providers.for_tier(tier_name)[0]
        request = self.request_builder(task, tier, model, tier.max_tokens, None)
        prices = self._prices(model, provider)
        reservation = yield from self._reserve(run, prices, request)
        _warm(provider)
        started_at, t0 = self._now(), self._clock()
        tried = yield _Call(provider, request)
        assert isinstance(tried, _Tried)
        result = tried.result
        index = self.policy.tier_index(tier_name)
        slot = _Slot(tier_name, index, model, provider.name, started_at, t0, "validator", None)
        spent = self._record_billed(run, slot, tried.billed, prices)
        if isinstance(result, ProviderError):
            self._record_failed(run, slot, result, prices, reservation, spent)
            raise result
        assert isinstance(result, Completion)
        cost = self._cost(result, prices)
        with self._batch():
            self._settle(reservation, cost + spent)
            self._append(
                run, slot.record(run, self._clock(), "accepted", completion=result, cost=cost)
            )
        return result

    # -- bookkeeping ---------------------------------------------------------------------------

    def _record_billed(
        self,
        run: _Run,
        slot: _Slot,
        billed: tuple[ProviderError, ...],
        prices: ModelPrices | None,
    ) -> Decimal:
        """Record the retried tries the upstream billed anyway; return what they cost."""
        total = Decimal(0)
        if not billed:
            return total
        with self._batch():
            for error in billed:
                cost = _priced(error.usage or Usage(), prices)
                total += cost
                record = slot.record(
                    run, self._clock(), "error", error=error, usage=error.usage, cost=cost
                )
                self._append(run, record)
        return total

    def _record_failed(
        self,
        run: _Run,
        slot: _Slot,
        error: ProviderError,
        prices: ModelPrices | None,
        reservation: object,
        spent: Decimal,
    ) -> None:
        """Record a failed call (with its cost when it was billed) and free its reservation."""
        cost = _priced(error.usage, prices) if error.usage is not None else Decimal(0)
        with self._batch():
            if cost + spent > 0:
                self._settle(reservation, cost + spent)
            else:
                self._release(reservation)
            record = slot.record(
                run, self._clock(), "error", error=error, usage=error.usage, cost=cost
            )
            self._append(run, record)

    def _prices(self, model: str, provider: AsyncProvider) -> ModelPrices | None:
        try:
            return self.catalog.prices_for(model, provider.name)
        except UnknownModelError:
            if self.role == "replay":
                return None  # replayed rows carry their recorded cost
            raise

    def _reserve(
        self, run: _Run, prices: ModelPrices | None, request: CompletionRequest
    ) -> _Steps[object]:
        """Hold the attempt's worst-case cost against every budget of the task.

        A reservation is I/O (an atomic write to the ledger), so it is yielded like a call: the
        async driver runs it off the event loop.
        """
        from tierwise.pricing import max_cost

        if not run.limits or run.umbrella is not None:
            return None  # no budget applies, or the climb's reservation already covers it
        amount = Decimal(0)
        if prices is not None:
            amount = max_cost(
                prices, input_tokens=input_token_bound(request), max_tokens=request.max_tokens
            )
        held = yield _Reserve(run.task.id, run.limits, amount)
        if isinstance(held, BudgetExceededError | LedgerError):
            raise held
        return held

    def _cover_climb(
        self, run: _Run, plan: list[tuple[str, str, int]], kind_max: int | None
    ) -> _Steps[int]:
        """Reserve the worst case of a whole climb before the first call (``[budgets] climb``).

        Returns how many tiers to skip: 0 under ``reserve_ladder``; under ``fit`` the fewest
        that let the rest of the climb fit the budget (the decision says so). Raises the
        budget error, before any call, when nothing fits.
        """
        from tierwise.pricing import max_cost

        worst: list[Decimal] = []
        carried = 0  # each climb appends the rejected answer and a hint to the prompt
        for config_name, _, _ in plan:
            tier = self.policy.tier(config_name)
            model, provider = self._candidates(config_name)[0]
            max_tokens = run.task.max_tokens or kind_max or tier.max_tokens
            request = run.builder(run.task, tier, model, max_tokens, None)
            prices = self._prices(model, provider)
            bound = input_token_bound(request) + carried
            worst.append(
                Decimal(0)
                if prices is None
                else max_cost(prices, input_tokens=bound, max_tokens=request.max_tokens)
            )
            carried += max_tokens + _HINT_TOKENS
        starts = range(len(plan)) if self.policy.model.budgets.climb == "fit" else range(1)
        refused: BudgetExceededError | None = None
        for skip in starts:
            held = yield _Reserve(run.task.id, run.limits, sum(worst[skip:], Decimal(0)))
            if isinstance(held, LedgerError):
                raise held
            if isinstance(held, BudgetExceededError):
                refused = held
                continue
            run.umbrella = held
            if skip:
                routed = run.decision.tier
                run.decision = replace(
                    run.decision,
                    tier=plan[skip][1],
                    tier_index=plan[skip][2],
                    budget=f"started above {routed}: the budget left could not cover the "
                    f"climb from {routed} (${sum(worst, Decimal(0)):.6f} at worst)",
                )
                self.budget_moves[run.task.kind] += 1
            return skip
        assert refused is not None
        raise refused

    def _hold(self, effect: _Reserve) -> object:
        """Reserve; a refusal or a ledger failure is returned (and raised inside the loop, so
        the task is ended and recorded there), never thrown here."""
        try:
            return self._budgets.reserve(effect.task_id, effect.limits, effect.amount)
        except (BudgetExceededError, LedgerError) as exc:
            return exc

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
            if run.umbrella is not None:  # the climb's reservation becomes what was spent
                self._settle(run.umbrella, cost)
                run.umbrella = None
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


@dataclass(frozen=True, slots=True)
class _Slot:
    """Where and when one attempt was made; :meth:`record` writes its record once it ended."""

    tier: str
    tier_index: int
    model: str
    provider: str
    started_at: datetime
    t0: float
    role: Role
    escalated_from: int | None

    def record(
        self,
        run: _Run,
        now: float,
        outcome: Outcome,
        *,
        completion: Completion | None = None,
        error: BaseException | None = None,
        usage: Usage | None = None,
        cost: Decimal = Decimal(0),
    ) -> AttemptRecord:
        """The attempt's record: a completion's model, usage and text, or an error's class."""
        return AttemptRecord(
            task_id=run.task.id,
            attempt_no=run.next_no(),
            kind=run.task.kind,
            tier=self.tier,
            tier_index=self.tier_index,
            model=(completion.model or self.model) if completion is not None else self.model,
            provider=self.provider,
            usage=completion.usage if completion is not None else (usage or Usage()),
            cost_usd=cost,
            latency_s=now - self.t0,
            outcome=outcome,
            started_at=self.started_at,
            role=self.role,
            failure=None if error is None else str(error),
            error_class=None if error is None else type(error).__name__,
            escalated_from=self.escalated_from,
            stop_reason=None if completion is None else completion.stop_reason,
            output=None if completion is None else completion.text,
            session=run.task.session,
        )


def _priced(usage: Usage, prices: ModelPrices | None) -> Decimal:
    """What *usage* costs (a broken stream is billed for what arrived)."""
    from tierwise.pricing import cost_of

    return Decimal(0) if prices is None else cost_of(usage, prices)


#: Tokens a climb adds to the next tier's prompt besides the rejected answer (the hint turn).
_HINT_TOKENS = 256


def _warm(provider: AsyncProvider) -> None:
    """Let a provider do its one-off set-up (an SDK import) before an attempt is timed."""
    warm = getattr(provider, "warm", None)
    if callable(warm):
        warm()


def _keep_billed(billed: list[ProviderError]) -> Callable[[ProviderError], None]:
    """The retry loop's ``on_retry``: keep retried errors the upstream billed (they cost)."""

    def keep(error: ProviderError) -> None:
        if error.usage is not None and error.usage.total_tokens > 0:
            billed.append(error)

    return keep


async def _asleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


async def _close_shielded(stream: ProviderStream) -> None:
    """Close *stream* even while the task is being cancelled (the connection must go back)."""
    import anyio

    with anyio.CancelScope(shield=True):
        await stream.aclose()


def _src(policy: Policy) -> str | None:
    source: Path | None = policy.source
    return str(source) if source is not None else None
