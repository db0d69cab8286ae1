"""The cascade's checks: each kind's validators, built once, and their own model calls.

:class:`Checks` is a base of :class:`~tierwise.cascade.runner.Cascade`. A kind's validators are
built from the policy once per (kind, named extras) and cached; a ``learned`` validator is the
saved response verifier (:class:`~tierwise.cascade.seams.LearnedModels`). A validator that asks
another tier (``agreement``, the learned verifier on choices and numbers) does so through
:meth:`Checks._validator_call`: priced, budgeted and recorded as a ``validator`` attempt — or,
inside a shadow call, as part of the shadow's spend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tierwise.cascade.judging import JudgeStep
from tierwise.cascade.seams import LearnedModels, RequestBuilder
from tierwise.cascade.steps import Call, Run, Slot, Steps, Tried, warm
from tierwise.errors import ProviderError
from tierwise.providers.base import Completion

if TYPE_CHECKING:
    from tierwise.cascade.validators import Validator
    from tierwise.policy.schema import ValidatorSpec
    from tierwise.task import Task


class Checks(JudgeStep):
    """Validators for :class:`~tierwise.cascade.runner.Cascade`, and their model calls."""

    learned: LearnedModels | None
    request_builder: RequestBuilder
    _validators: dict[tuple[str, tuple[str, ...]], tuple[Validator, ...]]

    def validators_for(self, task: Task) -> tuple[Validator, ...]:
        """The kind's validators plus any named ones the task asks for (built once, cached)."""
        extra = task.validators or ()
        key = (task.kind, tuple(extra))
        cached = self._validators.get(key)
        if cached is None:
            config = self.policy.kind(task.kind)
            built = [
                self._build(s, n)
                for s, n in zip(config.validators, config.validator_names, strict=True)
            ]
            for name in extra:
                spec = self.policy.model.validators[name]  # names are checked by the caller
                built.append(self._build(spec, name))
            cached = self._validators[key] = tuple(built)
        return cached

    def _build(self, spec: ValidatorSpec, name: str | None) -> Validator:
        """One validator of the policy; a ``learned`` one is the saved verifier."""
        if spec.type == "learned":
            assert self.learned is not None  # refused at construction otherwise
            return self.learned.validator(name or "learned")
        from tierwise.cascade.validators import build_validator

        return build_validator(spec, base_dir=self.policy.base_dir, name=name)

    def _validator_call(self, run: Run, tier_name: str, task: Task) -> Steps[Completion]:
        """A validator's own model call: priced, budgeted, recorded as a ``validator`` attempt."""
        tier = self.policy.tier(tier_name)
        model, provider = self.providers.for_tier(tier_name)[0]
        request = self.request_builder(task, tier, model, tier.max_tokens, None)
        prices = self._prices(model, provider)
        reservation = yield from self._reserve(run, prices, request)
        warm(provider)
        started_at, t0 = self._now(), self._clock()
        tried = yield Call(provider, request)
        assert isinstance(tried, Tried)
        result = tried.result
        index = self.policy.tier_index(tier_name)
        role = run.role if run.joined else "validator"  # a shadow check's calls are shadow spend
        slot = Slot(tier_name, index, model, provider.name, started_at, t0, role, None)
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
