"""The cascade's books: prices, budget holds and settlements, and every attempt's record.

:class:`Accounts` is the base of :class:`~tierwise.cascade.runner.Cascade`: the loop decides,
these methods write down what it decided and what it cost — into the ledger when there is one
(each attempt committed before the next hop), into in-memory budgets otherwise.
"""

from __future__ import annotations

from collections import Counter
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from tierwise.cascade.budget import MemoryBudgets, input_token_bound
from tierwise.cascade.handoff import HANDOFF_MAX_BYTES
from tierwise.cascade.result import AttemptRecord, CascadeResult, Verdict
from tierwise.cascade.seams import LedgerSink, ProviderSource
from tierwise.cascade.steps import Reserve, Run, Slot, Steps, priced
from tierwise.errors import BudgetExceededError, LedgerError, ProviderError, UnknownModelError
from tierwise.pricing.usage import Usage
from tierwise.providers.base import AsyncProvider, Completion, CompletionRequest

if TYPE_CHECKING:
    from collections.abc import Callable

    from tierwise.policy import Policy
    from tierwise.pricing import ModelPrices, PriceCatalog
    from tierwise.providers.retry import CooldownTracker
    from tierwise.records import Role


class Accounts:
    """Prices, budgets and records for :class:`~tierwise.cascade.runner.Cascade`."""

    policy: Policy
    ledger: LedgerSink | None
    catalog: PriceCatalog
    role: Role
    escalations: Counter[tuple[str, str, str]]
    budget_moves: Counter[str]
    providers: ProviderSource
    cooldown: CooldownTracker
    _budgets: LedgerSink | MemoryBudgets
    _clock: Callable[[], float]

    def _record_billed(
        self,
        run: Run,
        slot: Slot,
        billed: tuple[ProviderError, ...],
        prices: ModelPrices | None,
    ) -> Decimal:
        """Record the retried tries the upstream billed anyway; return what they cost."""
        total = Decimal(0)
        if not billed:
            return total
        with self._batch():
            for error in billed:
                cost = priced(error.usage or Usage(), prices)
                total += cost
                record = slot.record(
                    run, self._clock(), "error", error=error, usage=error.usage, cost=cost
                )
                self._append(run, record)
        return total

    def _record_failed(
        self,
        run: Run,
        slot: Slot,
        error: ProviderError,
        prices: ModelPrices | None,
        reservation: object,
        spent: Decimal,
    ) -> None:
        """Record a failed call (with its cost when it was billed) and free its reservation."""
        cost = priced(error.usage, prices) if error.usage is not None else Decimal(0)
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

    def _hold(self, effect: Reserve) -> object:
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

    def _begin(self, run: Run) -> None:
        """Write the task's row, once, in the transaction of its first attempt or its end."""
        if self.ledger is not None and not run.begun:
            self.ledger.begin_task(
                run.task,
                run.decision,
                policy_revision=self.policy.revision,
                role=run.role,
                store_content=self.policy.model.store_content,
            )
        run.begun = True

    def _append(self, run: Run, attempt: AttemptRecord) -> None:
        run.attempts.append(attempt)
        self._begin(run)
        if self.ledger is not None:
            self.ledger.record_attempt(attempt, store_content=self.policy.model.store_content)

    def _record_attempt_outcome(
        self, run: Run, verdicts: tuple[Verdict, ...], failed: Verdict | None
    ) -> int:
        """Finalise the pending main attempt with its verdicts and write it to the ledger."""
        pos = run.pending  # validator calls may have been appended after it
        assert pos is not None, "no attempt awaits validation"
        run.pending = None
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
        run: Run,
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
            task=run.task,
        )

    def _finish(
        self, run: Run, outcome: str, tier: str | None, output: str | None
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
            if run.joined or self.ledger is None:  # a side run's task row is not its own
                return cost, latency
            self._begin(run)
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

    def _escalated(self, run: Run, tier: str, reason: str) -> None:
        if not run.joined:  # a shadow call that fails is no climb of its task
            self.escalations[(run.task.kind, tier, reason)] += 1

    def _candidates(
        self, tier: str, avoid: frozenset[str] = frozenset()
    ) -> list[tuple[str, AsyncProvider]]:
        """The tier's models, primary first, skipping cooling ones while any other can serve,
        and never one in *avoid* (the result is then empty when the tier has no other)."""
        entries = [e for e in self.providers.for_tier(tier) if e[0] not in avoid]
        return [e for e in entries if not self.cooldown.cooling(e[0])] or entries

    # -- budgets --------------------------------------------------------------------------------

    def _reserve(
        self, run: Run, prices: ModelPrices | None, request: CompletionRequest
    ) -> Steps[object]:
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
        held = yield Reserve(run.task.id, run.limits, amount)
        if isinstance(held, BudgetExceededError | LedgerError):
            raise held
        return held

    def _cover_climb(
        self,
        run: Run,
        plan: list[tuple[str, str, int]],
        kind_max: int | None,
        avoid: frozenset[str] = frozenset(),
    ) -> Steps[int]:
        """Reserve the worst case of a whole climb before the first call (``[budgets] climb``).

        Returns how many tiers to skip: 0 under ``reserve_ladder``; under ``fit`` the fewest
        that let the rest of the climb fit the budget (the decision says so). Raises the
        budget error, before any call, when nothing fits.
        """
        from tierwise.pricing import max_cost

        worst: list[Decimal] = []
        carried = 0  # each climb appends the rejected answer and a handoff note to the prompt
        for config_name, _, _ in plan:
            tier = self.policy.tier(config_name)
            candidates = self._candidates(config_name, avoid)
            if not candidates:
                worst.append(Decimal(0))
                continue
            model, provider = candidates[0]
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
            held = yield Reserve(run.task.id, run.limits, sum(worst[skip:], Decimal(0)))
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


#: Tokens a climb adds to the next tier's prompt besides the rejected answer: the handoff note
#: (at most this many bytes, so at most this many tokens) and its turn's framing.
_HINT_TOKENS = HANDOFF_MAX_BYTES + 8
