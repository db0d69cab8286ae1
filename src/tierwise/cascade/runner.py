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
from collections.abc import (
    AsyncGenerator,
    Callable,
    Collection,
    Mapping,
    Sequence,
)
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, cast

from tierwise.cascade.budget import MemoryBudgets, budget_limits
from tierwise.cascade.judge import (
    JudgeCache,
)
from tierwise.cascade.result import CascadeResult, Role, Verdict
from tierwise.cascade.seams import (
    Failure,
    LearnedModels,
    LedgerSink,
    ProviderSource,
    RequestBuilder,
    Scorer,
    default_request_builder,
)
from tierwise.cascade.shadow import ShadowState, ShadowStep
from tierwise.cascade.steps import (
    Call,
    Context,
    Effect,
    Open,
    Relay,
    RelayEnd,
    Reserve,
    Run,
    Side,
    Slot,
    Steps,
    Tried,
    Validate,
    asleep,
    close_shielded,
    keep_billed,
    priced,
    warm,
)
from tierwise.cascade.steps import Pin as Pin
from tierwise.cascade.steps import StreamChunk as StreamChunk
from tierwise.cascade.steps import StreamDone as StreamDone
from tierwise.cascade.steps import StreamItem as StreamItem
from tierwise.cascade.steps import StreamOpened as StreamOpened
from tierwise.errors import (
    BudgetExceededError,
    EscalationExhaustedError,
    ProviderError,
    StreamInterruptedError,
)
from tierwise.providers.base import (
    AsyncProvider,
    Completion,
    Provider,
    ProviderStream,
    StreamingProvider,
)
from tierwise.task import Decision, Task

if TYPE_CHECKING:
    from tierwise.cascade.validators import Validator
    from tierwise.policy import Policy
    from tierwise.policy.schema import Tier
    from tierwise.pricing import PriceCatalog
    from tierwise.providers.factory import ProviderPool
    from tierwise.routing import Router

T = TypeVar("T")


class Cascade(ShadowStep):
    """Run tasks up the ladder until a validated answer, recording every attempt.

    Args:
        policy: the routing policy (tiers, rules, validators, budgets).
        providers: where tier models come from; default: real SDK providers for the policy.
        ledger: where attempts are recorded and budgets reserved; ``None`` keeps budgets in memory.
        router: default ``Router(policy)``.
        scorer: optional pre-routing scorer proposing a start tier (frontier pins still hold).
        learned: the saved learned router and verifier, for policies whose kinds start
            ``learned`` or use ``learned`` validators (:func:`tierwise.evaluation.load_learned`).
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
        learned: LearnedModels | None = None,
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

        if learned is None and policy.uses_learned:
            from tierwise.errors import PolicyError, PolicyIssue

            uses = " and ".join(sorted(policy.learned_uses))
            raise PolicyError(
                [
                    PolicyIssue(
                        "learned.path",
                        f"this policy uses the saved learned {uses}; pass them to the cascade: "
                        "Cascade(policy, learned=tierwise.evaluation.load_learned(policy))",
                    )
                ]
            )
        self._owns_providers = providers is None
        if providers is None:
            from tierwise.providers.factory import ProviderPool

            providers = ProviderPool(policy, env=os.environ if env is None else env)
        self.policy = policy
        self.providers: ProviderSource | ProviderPool = providers
        self.ledger = ledger
        self.router = router or Router(policy)
        self.scorer = scorer
        self.learned = learned
        self.catalog = catalog or PriceCatalog(policy.model.prices)
        self.role: Role = role
        self.request_builder = request_builder or default_request_builder
        self.retry = RetryPolicy.from_policy(policy.model.retry)
        self._once = replace(self.retry, attempts=1)
        #: The layer-2 judge's answers by (kind, prompt hash), for ``[judge] cache_s``.
        self.judge_cache = JudgeCache(policy.model.judge.cache_s)
        #: Shadow mode's pause and counts (:mod:`tierwise.cascade.shadow`).
        self.shadow_state = ShadowState()
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
        validators: Sequence[Validator] | None = None,
        avoid_models: Collection[str] = (),
    ) -> CascadeResult:
        """Run *task* to an accepted answer.

        Args:
            start_tier: start here instead of where the router would.
            limits: extra budget scopes (e.g. a gateway key's daily budget).
            request_builder: build this run's requests (default: the cascade's).
            pin: call exactly one model, with no routing, alternates, climb or validators.
            validators: check outputs with these instead of the kind's (a plan's planner and
                reviewer check their answers' shape this way).
            avoid_models: never call these models (a reviewer must not be the model whose
                output it reviews); a tier left without a model is skipped.

        Raises:
            EscalationExhaustedError: every tier from the start to the top failed (has the trail).
            BudgetExceededError: a budget would be overrun by the next attempt (has the trail).
        """
        steps = self._steps(
            task,
            start_tier,
            limits,
            request_builder,
            pin,
            relay=False,
            validators=validators,
            avoid=frozenset(avoid_models),
        )
        return self._drive_sync(steps)

    async def arun(
        self,
        task: Task,
        *,
        start_tier: str | None = None,
        limits: Mapping[str, Decimal] | None = None,
        request_builder: RequestBuilder | None = None,
        pin: Pin | None = None,
        validators: Sequence[Validator] | None = None,
        avoid_models: Collection[str] = (),
    ) -> CascadeResult:
        """Async twin of :meth:`run`."""
        steps = self._steps(
            task,
            start_tier,
            limits,
            request_builder,
            pin,
            relay=False,
            validators=validators,
            avoid=frozenset(avoid_models),
        )
        return await self._drive_async(steps)

    async def astream(
        self,
        task: Task,
        *,
        start_tier: str | None = None,
        limits: Mapping[str, Decimal] | None = None,
        request_builder: RequestBuilder | None = None,
        pin: Pin | None = None,
        validators: Sequence[Validator] | None = None,
        avoid_models: Collection[str] = (),
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
        steps = self._steps(
            task,
            start_tier,
            limits,
            request_builder,
            pin,
            relay=True,
            validators=validators,
            avoid=frozenset(avoid_models),
        )
        value: object = None
        while True:
            try:
                effect = steps.send(value)
            except StopIteration as stop:
                yield StreamDone(cast(CascadeResult, stop.value))
                return
            if not isinstance(effect, Relay):
                value = await self._perform_async(effect)
                continue
            stream = effect.stream
            try:
                yield effect.opened
                async for batch in stream.batches():
                    yield StreamChunk(batch)
                value = RelayEnd(stream.usage, completion=stream.completion())
            except ProviderError as exc:
                value = RelayEnd(stream.usage, error=exc)
            except BaseException as exc:  # the consumer went away (closed, cancelled), or a bug
                try:
                    steps.send(RelayEnd(stream.usage, error=exc))  # records the partial attempt
                except (StopIteration, StreamInterruptedError):
                    pass
                finally:
                    await close_shielded(stream)
                raise
            await close_shielded(stream)

    def decide(self, task: Task, start_tier: str | None = None) -> Decision:
        """The decision the cascade starts from: an explicit tier, the scorer's proposal, the
        saved learned router's for a ``start = "learned"`` kind, or the router."""
        if start_tier is None and self.scorer is not None:
            start_tier = self.scorer.propose(task)
        learned = self.learned
        if start_tier is None and learned and self.policy.kind(task.kind).start == "learned":
            start_tier = learned.propose(task)
        if start_tier is not None:
            return self.router.start_at(task, start_tier)
        return self.router.route(task)

    # -- drivers -----------------------------------------------------------------------------

    def _drive_sync(self, steps: Steps[T]) -> T:
        from tierwise.cascade.validators import run_validators
        from tierwise.providers.retry import retrying

        value: object = None
        try:
            while True:
                effect = steps.send(value)
                if isinstance(effect, Call):
                    if not isinstance(effect.provider, Provider):
                        raise TypeError(
                            f"provider {effect.provider.name!r} has no blocking call: use arun"
                        )
                    billed: list[ProviderError] = []
                    try:
                        result: object = retrying(
                            partial(effect.provider.complete, effect.request),
                            self._once if effect.once else self.retry,
                            sleep=self._sleep,
                            on_retry=keep_billed(billed),
                        )
                    except ProviderError as exc:
                        result = exc
                    value = Tried(result, tuple(billed))
                elif isinstance(effect, Validate):
                    value = run_validators(effect.validators, effect.output, effect.context)
                elif isinstance(effect, Reserve):
                    value = self._hold(effect)
                else:
                    raise TypeError("streams are relayed by Cascade.astream only")
        except StopIteration as stop:
            return cast(T, stop.value)

    async def _drive_async(self, steps: Steps[T]) -> T:
        value: object = None
        try:
            while True:
                value = await self._perform_async(steps.send(value))
        except StopIteration as stop:
            return cast(T, stop.value)

    async def _perform_async(self, effect: Effect) -> object:
        """Carry out one effect on the running loop (a relay is :meth:`astream`'s own)."""
        from tierwise.cascade.validators import arun_validators
        from tierwise.providers.retry import aretrying

        if isinstance(effect, Validate):
            return await arun_validators(effect.validators, effect.output, effect.context)
        if isinstance(effect, Reserve):
            if isinstance(self._budgets, MemoryBudgets):
                return self._hold(effect)  # in memory: no I/O to wait for
            import asyncio

            return await asyncio.to_thread(self._hold, effect)  # a database write: off the loop
        if isinstance(effect, Relay):
            raise TypeError("streams are relayed by Cascade.astream only")
        billed: list[ProviderError] = []
        keep = keep_billed(billed)
        result: object
        try:
            if isinstance(effect, Call):
                op = partial(effect.provider.acomplete, effect.request)
                retry = self._once if effect.once else self.retry
                result = await aretrying(op, retry, sleep=asleep, on_retry=keep)
            else:
                opening = partial(effect.provider.aopen, effect.request)
                result = await aretrying(opening, self.retry, sleep=asleep, on_retry=keep)
        except ProviderError as exc:
            result = exc
        return Tried(result, tuple(billed))

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
        validators: Sequence[Validator] | None = None,
        avoid: frozenset[str] = frozenset(),
        side: Side | None = None,
    ) -> Steps[CascadeResult]:
        if pin is not None:
            decision = Decision(
                pin.label,
                pin.index,
                "passthrough",
                task.kind,
                kind_known=task.kind in self.policy.kinds,
            )
        else:
            decision = self.decide(task, start_tier)
        run = Run(
            task=task,
            decision=decision,
            limits=(
                dict(side.limits)
                if side is not None
                else budget_limits(self.policy, task, self._now(), limits)
            ),
            started=self._clock(),
            builder=builder or self.request_builder,
            role=self.role if side is None else side.role,
            first_no=0 if side is None else side.first_no,
            joined=side is not None,
            begun=side is not None,
        )
        kind = self.policy.kind(task.kind)
        checks: tuple[Validator, ...] = ()
        # A pin is one model, unchecked; a side run's pinned answer is checked as the live one.
        if not relay and (pin is None or side is not None):
            checks = self.validators_for(task) if validators is None else tuple(validators)
        failure: Failure | None = None
        previous: int | None = None
        escalations: list[tuple[str, str]] = []
        interrupted: BaseException | None = None
        last_error: ProviderError | None = None
        try:
            if pin is not None:
                plan = [(pin.tier, pin.label, pin.index)]
            else:
                if start_tier is None and self._asks_judge(run):
                    yield from self._judge(run)
                ladder = self.policy.ladder
                plan = [(t, t, i) for i, t in enumerate(ladder) if i >= run.decision.tier_index]
            if pin is None and run.limits and self.policy.model.budgets.climb != "per_attempt":
                skip = yield from self._cover_climb(run, plan, kind.max_tokens, avoid)
                plan = plan[skip:]
            for config_name, tier_name, index in plan:
                tier = self.policy.tier(config_name)
                max_tokens = task.max_tokens or kind.max_tokens or tier.max_tokens
                candidates = (
                    [(pin.model, pin.provider)]
                    if pin is not None
                    else self._candidates(tier_name, avoid)
                )
                if not candidates:
                    continue  # every model of this tier is one the run must avoid
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
                    previous = run.next_no() - 1
                    # Nothing was answered: the next tier inherits the last rejected answer, if any.
                    if failure is None or failure.output is None:
                        failure = Failure(tier_name, reason)
                    self._escalated(run, tier_name, type(outcome).__name__)
                    escalations.append((tier_name, reason))
                    continue
                if isinstance(outcome, RelayEnd):
                    if outcome.error is None and outcome.completion is not None:
                        return self._finish_ok(
                            run, tier_name, outcome.completion, tuple(escalations)
                        )
                    interrupted = outcome.error or RuntimeError("the stream ended without a reply")
                    break
                completion = outcome
                verdicts: tuple[Verdict, ...] = ()
                if checks:
                    ctx = Context(
                        task,
                        tier_name,
                        completion,
                        lambda t, sub: self._drive_sync(self._validator_call(run, t, sub)),
                        lambda t, sub: self._drive_async(self._validator_call(run, t, sub)),
                    )
                    checked = yield Validate(checks, completion.text, ctx)
                    verdicts = cast(tuple[Verdict, ...], checked)
                failed = next((v for v in verdicts if not v.ok), None)
                with self._batch():  # the verdict, the settlement and the task's end: one commit
                    attempt_no = self._record_attempt_outcome(run, verdicts, failed)
                    if failed is None:
                        return self._finish_ok(run, tier_name, completion, tuple(escalations))
                # The next tier hears the whole story (detail); callers and the ledger the reason.
                earlier = () if failure is None or failure.output is None else failure.earlier
                if failure is not None and failure.output is not None:
                    earlier = (*earlier, (failure.tier, failure.reason))
                failure = Failure(
                    tier_name,
                    f"{failed.validator}: {failed.detail or failed.reason}",
                    completion.text,
                    model=completion.model,
                    earlier=earlier,
                )
                previous = attempt_no
                self._escalated(run, tier_name, failed.validator)
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

    def _attempt_tier(
        self,
        run: Run,
        tier: Tier,
        recorded_as: tuple[str, int],
        candidates: Sequence[tuple[str, AsyncProvider]],
        max_tokens: int,
        failure: Failure | None,
        previous: int | None,
        *,
        relay: bool,
    ) -> Steps[Completion | ProviderError | RelayEnd]:
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
            warm(provider)  # one-off client set-up is not the call's latency
            started_at, t0 = self._now(), self._clock()
            if relay:
                if not isinstance(provider, StreamingProvider):
                    self._release(reservation)
                    raise TypeError(f"provider {provider.name!r} cannot stream")
                tried = yield Open(provider, request)
            else:
                tried = yield Call(provider, request)
            assert isinstance(tried, Tried)
            result = tried.result
            slot = Slot(label, index, model, provider.name, started_at, t0, run.role, previous)
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
                run.pending = len(run.attempts)
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
            ended = yield Relay(stream, opened)
            assert isinstance(ended, RelayEnd)
            if ended.completion is not None:
                cost = self._cost(ended.completion, prices)
                record = slot.record(
                    run, self._clock(), "accepted", completion=ended.completion, cost=cost
                )
            else:
                cost = priced(ended.usage, prices)
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


def _src(policy: Policy) -> str | None:
    source: Path | None = policy.source
    return str(source) if source is not None else None
