"""The ``agreement`` validator: other tiers answer the same task; all must agree."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from tierwise.cascade.result import Verdict
from tierwise.cascade.validators._base import BaseValidator, ValidationContext
from tierwise.cascade.validators._text import Normalise, normalise_answer, shorten
from tierwise.errors import BudgetExceededError, ProviderError

if TYPE_CHECKING:
    from tierwise.providers.base import Completion

_WHAT = {
    "exact": "an answer",
    "lower": "an answer",
    "choice": "a multiple-choice letter (A–J)",
    "number": "a number",
    "json": "a JSON value",
}


class AgreementValidator(BaseValidator):
    """Asks each tier in ``tiers`` the same task and passes when every answer, normalised, equals
    the output's (see :func:`tierwise.cascade.validators.normalise_answer` for the modes).

    The tiers are asked one after another and the check stops at the first disagreement, so no
    more priced calls are made than the verdict needs; each call goes through the context, so
    the cascade budgets, prices and records it as a ``validator`` attempt of the task. A failed
    call (provider error, budget) fails the check with that reason. The score is the share of
    the asked tiers that agreed.
    """

    def __init__(self, name: str, tiers: Sequence[str], normalise: Normalise = "lower") -> None:
        super().__init__(name)
        self.tiers = tuple(tiers)
        self.normalise: Normalise = normalise

    def _mine(self, output: str) -> tuple[object, str] | Verdict:
        mine = normalise_answer(output, self.normalise)
        if mine is None:
            return self.fail(f"could not find {_WHAT[self.normalise]} in the output")
        return mine

    def _compare(
        self, tier: str, mine: tuple[object, str], theirs: Completion, agreed: int
    ) -> Verdict | None:
        other = normalise_answer(theirs.text, self.normalise)
        if other is None:
            return self.fail(
                f"tier {tier} gave no {_WHAT[self.normalise].removeprefix('a ')}"
                f" to compare: {shorten(theirs.text)!r}",
                agreed / len(self.tiers),
            )
        if other[0] != mine[0]:
            return self.fail(
                f"tier {tier} answered {shorten(other[1])!r}, this output {shorten(mine[1])!r}",
                agreed / len(self.tiers),
            )
        return None

    def _call_failed(self, tier: str, exc: Exception, agreed: int) -> Verdict:
        if isinstance(exc, ProviderError):
            what = f"provider error: {type(exc).__name__}: {exc}"
        elif isinstance(exc, BudgetExceededError):
            what = f"not allowed by budget {exc.budget}"
        else:
            what = f"{type(exc).__name__}: {exc}"
        return self.fail(f"could not ask tier {tier}: {what}", agreed / len(self.tiers))

    def _check(self, output: str, ctx: ValidationContext) -> Verdict:
        mine = self._mine(output)
        if isinstance(mine, Verdict):
            return mine
        for agreed, tier in enumerate(self.tiers):
            try:
                theirs = ctx.call_tier(tier, ctx.task)
            except Exception as exc:
                return self._call_failed(tier, exc, agreed)
            verdict = self._compare(tier, mine, theirs, agreed)
            if verdict is not None:
                return verdict
        return self.ok(1.0)

    async def _acheck(self, output: str, ctx: ValidationContext) -> Verdict:
        mine = self._mine(output)
        if isinstance(mine, Verdict):
            return mine
        for agreed, tier in enumerate(self.tiers):
            try:
                theirs = await ctx.acall_tier(tier, ctx.task)
            except Exception as exc:
                return self._call_failed(tier, exc, agreed)
            verdict = self._compare(tier, mine, theirs, agreed)
            if verdict is not None:
                return verdict
        return self.ok(1.0)
