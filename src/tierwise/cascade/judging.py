"""The layer-2 judge as a step of the cascade's loop: ask, bound by floors and pins, record.

:class:`JudgeStep` is a base of :class:`~tierwise.cascade.runner.Cascade`; the prompt, the
answer's schema and the cache live in :mod:`tierwise.cascade.judge`.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import TYPE_CHECKING

from tierwise.cascade.accounts import Accounts
from tierwise.cascade.judge import (
    JudgeCache,
    judge_prompt,
    judge_request,
    parse_judgement,
    prompt_hash,
)
from tierwise.cascade.result import Verdict
from tierwise.cascade.steps import Call, Run, Slot, Steps, Tried, warm
from tierwise.errors import BudgetExceededError, ProviderError
from tierwise.providers.base import Completion

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from tierwise.routing import Router


class JudgeStep(Accounts):
    """Asks the judge tier where a task goes when no rule decided it (``doubt = "judge"``)."""

    router: Router
    judge_cache: JudgeCache
    _now: Callable[[], datetime]

    def _asks_judge(self, run: Run) -> bool:
        """Whether the router left the task to the judge: no rule matched, the kind's doubt is
        ``judge``, and floors and pins leave more than one tier to pick from."""
        decision = run.decision
        if decision.doubt != "judge" or decision.rule_index is not None:
            return False
        lowest = self.router.judged(run.task, self.policy.ladder[0], "")
        return lowest.tier_index < len(self.policy.ladder) - 1

    def _judge(self, run: Run) -> Steps[None]:
        """Ask the judge where the task goes, before its first attempt; sets ``run.decision``.

        One try at the judge tier's primary model with ``[judge] timeout_s``, priced, budgeted
        and recorded as a ``judge`` attempt. Its pick goes through :meth:`Router.judged`
        (floors and pins hold) and is cached by (kind, prompt hash); a failure, a timeout, an
        answer outside the schema or a budget that cannot cover the call leaves the kind's
        ``judge_fallback`` decision in force, saying why.
        """
        task, settings = run.task, self.policy.model.judge
        fallback = self.policy.kind(task.kind).judge_fallback
        system, prompt = judge_prompt(task, self.policy)
        key = (task.kind, prompt_hash(system, prompt))
        cached = self.judge_cache.get(key)
        if cached is not None:
            run.decision = self.router.judged(task, cached.tier, f"{cached.reason} (cached)")
            return
        tier_name = settings.tier or self.policy.ladder[0]
        model, provider = self._candidates(tier_name)[0]
        request = judge_request(task, self.policy, model, system, prompt)
        prices = self._prices(model, provider)

        def fell_back(why: str) -> None:
            run.decision = replace(run.decision, judge=f"fell back to {fallback!r}: {why}")

        try:
            reservation = yield from self._reserve(run, prices, request)
        except BudgetExceededError as exc:
            fell_back(f"not asked, the budget {exc.budget} cannot cover the call")
            return
        warm(provider)
        started_at, t0 = self._now(), self._clock()
        tried = yield Call(provider, request, once=True)
        assert isinstance(tried, Tried)
        index = self.policy.tier_index(tier_name)
        slot = Slot(tier_name, index, model, provider.name, started_at, t0, "judge", None)
        result = tried.result
        if isinstance(result, ProviderError):
            fell_back(f"the judge failed ({type(result).__name__})")
            self._record_failed(run, slot, result, prices, reservation, Decimal(0))
            return
        assert isinstance(result, Completion)
        cost = self._cost(result, prices)
        record = slot.record(run, self._clock(), "accepted", completion=result, cost=cost)
        try:
            judgement = parse_judgement(result.text, self.policy.ladder)
        except ValueError as exc:
            fell_back(str(exc))
            verdict = Verdict("judge", False, str(exc))
            record = replace(record, outcome="rejected", verdicts=(verdict,), failure=str(exc))
        else:
            run.decision = self.router.judged(task, judgement.tier, judgement.reason)
            self.judge_cache.put(key, judgement)
        with self._batch():
            self._settle(reservation, cost)
            self._append(run, record)
