"""The validator seam: what a validator sees, what it returns, and how a list of them runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from tierwise.cascade.result import Verdict

if TYPE_CHECKING:
    from tierwise.providers.base import Completion
    from tierwise.task import Task

#: Reasons are cut to this many characters: they go to the ledger and to the next model's prompt.
MAX_REASON = 500


class ValidationContext(Protocol):
    """What a validator may look at besides the output, and how it makes priced model calls.

    The cascade passes its own context; calls made through ``call_tier``/``acall_tier`` are
    budgeted, priced and recorded in the ledger as ``validator`` attempts of the task.
    """

    @property
    def task(self) -> Task:
        """The task being answered."""
        ...

    @property
    def completion(self) -> Completion | None:
        """The provider's completion whose text is being validated (stop reason, usage, …)."""
        ...

    @property
    def tier(self) -> str:
        """The tier that produced the output."""
        ...

    def call_tier(self, tier: str, task: Task) -> Completion:
        """Ask *tier* to answer *task*; raises a ``ProviderError`` when the call fails."""
        ...

    async def acall_tier(self, tier: str, task: Task) -> Completion:
        """Async twin of :meth:`call_tier`."""
        ...


@runtime_checkable
class Validator(Protocol):
    """Judges one output. Never raises to steer control flow: a failure is a failed Verdict."""

    name: str

    def check(self, output: str, ctx: ValidationContext) -> Verdict:
        """Judge *output* (blocking)."""
        ...

    async def acheck(self, output: str, ctx: ValidationContext) -> Verdict:
        """Judge *output* without blocking the event loop."""
        ...


def crashed(name: str, exc: BaseException) -> Verdict:
    """The failed verdict standing for a validator that raised."""
    return Verdict(name, False, clip(f"validator crashed: {type(exc).__name__}: {exc}"))


def clip(reason: str, limit: int = MAX_REASON) -> str:
    """A reason cut to *limit* characters, keeping its end (where errors usually say most)."""
    return reason if len(reason) <= limit else "…" + reason[-(limit - 1) :]


class BaseValidator:
    """Base for the built-ins: subclasses write ``_check`` (and ``_acheck`` when they block).

    ``check`` and ``acheck`` turn any exception into a failed verdict and stamp the validator's
    name on what ``_check`` returns. The default ``_acheck`` runs ``_check`` inline: built-ins
    that do not block (parsing, regexes) cost microseconds and need no thread.
    """

    name: str

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    def _check(self, output: str, ctx: ValidationContext) -> Verdict:
        raise NotImplementedError

    async def _acheck(self, output: str, ctx: ValidationContext) -> Verdict:
        return self._check(output, ctx)

    def ok(self, score: float | None = None, reason: str = "") -> Verdict:
        """A passing verdict under this validator's name."""
        return Verdict(self.name, True, clip(reason), score)

    def fail(self, reason: str, score: float | None = None, *, detail: str = "") -> Verdict:
        """A failing verdict under this validator's name.

        *reason* is what callers may see; *detail* (optional) is the longer text for the next
        tier's prompt only.
        """
        return Verdict(self.name, False, clip(reason), score, clip(detail))

    def check(self, output: str, ctx: ValidationContext) -> Verdict:
        """Judge *output*; never raises (an exception becomes a failed verdict)."""
        try:
            return self._stamp(self._check(output, ctx))
        except Exception as exc:
            return crashed(self.name, exc)

    async def acheck(self, output: str, ctx: ValidationContext) -> Verdict:
        """Async twin of :meth:`check`."""
        try:
            return self._stamp(await self._acheck(output, ctx))
        except Exception as exc:
            return crashed(self.name, exc)

    def _stamp(self, verdict: Verdict) -> Verdict:
        if verdict.validator == self.name:
            return verdict
        return replace(verdict, validator=self.name)


def _guarded(validator: Validator, verdict: object) -> Verdict:
    name = getattr(validator, "name", type(validator).__name__)
    if not isinstance(verdict, Verdict):
        return Verdict(
            name, False, f"validator returned {type(verdict).__name__}, expected a Verdict"
        )
    return verdict


def run_validators(
    validators: Sequence[Validator], output: str, ctx: ValidationContext
) -> tuple[Verdict, ...]:
    """Run *validators* in order on *output*, stopping at the first failure.

    The policy lists validators cheapest first; stopping early means a priced check (an
    ``agreement`` call to another tier) never runs for an output a free check already rejected.
    Returns the verdicts of the validators that ran — the last one failed unless all passed.
    A validator that raises counts as failed (``validator crashed: <ExcType>: <message>``).
    """
    verdicts: list[Verdict] = []
    for validator in validators:
        try:
            verdict = _guarded(validator, validator.check(output, ctx))
        except Exception as exc:
            verdict = crashed(getattr(validator, "name", type(validator).__name__), exc)
        verdicts.append(verdict)
        if not verdict.ok:
            break
    return tuple(verdicts)


async def arun_validators(
    validators: Sequence[Validator], output: str, ctx: ValidationContext
) -> tuple[Verdict, ...]:
    """Async twin of :func:`run_validators` (same order, same early stop)."""
    verdicts: list[Verdict] = []
    for validator in validators:
        try:
            verdict = _guarded(validator, await validator.acheck(output, ctx))
        except Exception as exc:
            verdict = crashed(getattr(validator, "name", type(validator).__name__), exc)
        verdicts.append(verdict)
        if not verdict.ok:
            break
    return tuple(verdicts)


@dataclass(frozen=True, slots=True)
class StaticContext:
    """A context for validating outputs outside a cascade (tests, offline evaluation, tools).

    It carries the task and, optionally, the completion; it cannot call other tiers, so an
    ``agreement`` validator run with it fails with the reason.
    """

    task: Task
    completion: Completion | None = None
    tier: str = ""

    def call_tier(self, tier: str, task: Task) -> Completion:
        """Always raises: a static context has no models to ask."""
        raise RuntimeError(f"no model calls outside a cascade (asked tier {tier!r})")

    async def acall_tier(self, tier: str, task: Task) -> Completion:
        """Always raises: a static context has no models to ask."""
        raise RuntimeError(f"no model calls outside a cascade (asked tier {tier!r})")
