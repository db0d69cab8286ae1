"""What the cascade's one loop is made of: the effects it yields, the records of a run.

Internal to :mod:`tierwise.cascade`: :mod:`~tierwise.cascade.runner` yields these effects from
:meth:`Cascade._steps <tierwise.cascade.runner.Cascade>` and its drivers perform them;
:class:`Run` is one task's state, :class:`Slot` where and when one attempt was made. The
stream items (:class:`StreamOpened`, :class:`StreamChunk`, :class:`StreamDone`) and
:class:`Pin` are public through :mod:`tierwise.cascade.runner`; :class:`Side` makes a run join
a task already recorded (shadow calls, :mod:`tierwise.cascade.shadow`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from tierwise.cascade.result import AttemptRecord, CascadeResult, Outcome, Role
from tierwise.cascade.seams import RequestBuilder
from tierwise.errors import ProviderError
from tierwise.pricing.usage import Usage
from tierwise.providers.base import (
    AsyncProvider,
    Completion,
    CompletionRequest,
    ProviderStream,
    StreamingProvider,
)
from tierwise.task import Decision, Task

if TYPE_CHECKING:
    from tierwise.cascade.validators import Validator
    from tierwise.pricing import ModelPrices

T = TypeVar("T")

# -- the effects the loop yields ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Call:
    provider: AsyncProvider
    request: CompletionRequest
    #: One try, no retries (the judge: its timeout is the whole wait).
    once: bool = False


@dataclass(frozen=True, slots=True)
class Open:
    provider: StreamingProvider
    request: CompletionRequest


@dataclass(frozen=True, slots=True)
class Relay:
    stream: ProviderStream
    opened: StreamOpened


@dataclass(frozen=True, slots=True)
class RelayEnd:
    """How a relay ended: normally (``completion`` set) or broken / abandoned (``error``)."""

    usage: Usage
    completion: Completion | None = None
    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class Tried:
    """What a call or an open came to, and the failed tries before it that were billed."""

    result: object  # Completion, ProviderStream or ProviderError
    billed: tuple[ProviderError, ...] = ()


@dataclass(frozen=True, slots=True)
class Reserve:
    task_id: str
    limits: Mapping[str, Decimal]
    amount: Decimal


@dataclass(frozen=True, slots=True)
class Validate:
    validators: tuple[Validator, ...]
    output: str
    context: Context


Effect = Call | Open | Relay | Reserve | Validate
Steps = Generator[Effect, object, T]


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
    #: The tier index recorded (-1: not a rung; a shadow call records its tier's own index).
    index: int = -1


@dataclass(frozen=True, slots=True)
class Side:
    """A run whose attempts join a task already in the ledger: a shadow call.

    Its attempts are numbered from ``first_no`` and recorded with ``role`` (its validators'
    model calls too), reserved against ``limits`` only (never the task's, session's, kind's or
    key's budgets), and the task's row is neither begun nor finished. A pinned side run's answer
    is validated as the live one would be.
    """

    first_no: int
    limits: Mapping[str, Decimal]
    role: Role


@dataclass(slots=True)
class Run:
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
    #: Where in ``attempts`` the attempt awaiting validation is.
    pending: int | None = None
    #: One reservation covering the whole climb (``[budgets] climb``), settled at the end.
    umbrella: object | None = None
    #: What this run's attempts are (the cascade's role, or a side run's).
    role: Role = "live"
    #: The attempt number of this run's first attempt (a side run continues its task's).
    first_no: int = 0
    #: The task's row belongs to another run (a side run): never begun or finished here.
    joined: bool = False

    def next_no(self) -> int:
        return self.first_no + len(self.attempts)


class Context:
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


@dataclass(frozen=True, slots=True)
class Slot:
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
        run: Run,
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
            **plan_columns(run.task, self.role),
        )


def plan_columns(task: Task, role: Role) -> dict[str, Any]:
    """The cost-tree columns of an attempt of *task* (none outside a plan)."""
    ref = task.plan
    if ref is None:
        return {}
    return {
        "plan_id": ref.plan_id,
        "subtask_id": ref.subtask_id,
        "parent_id": ref.parent_id,
        "plan_role": "judge" if role == "judge" else ref.plan_role,
    }


def priced(usage: Usage, prices: ModelPrices | None) -> Decimal:
    """What *usage* costs (a broken stream is billed for what arrived)."""
    from tierwise.pricing import cost_of

    return Decimal(0) if prices is None else cost_of(usage, prices)


def warm(provider: AsyncProvider) -> None:
    """Let a provider do its one-off set-up (an SDK import) before an attempt is timed."""
    warm = getattr(provider, "warm", None)
    if callable(warm):
        warm()


def keep_billed(billed: list[ProviderError]) -> Callable[[ProviderError], None]:
    """The retry loop's ``on_retry``: keep retried errors the upstream billed (they cost)."""

    def keep(error: ProviderError) -> None:
        if error.usage is not None and error.usage.total_tokens > 0:
            billed.append(error)

    return keep


async def asleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


async def close_shielded(stream: ProviderStream) -> None:
    """Close *stream* even while the task is being cancelled (the connection must go back)."""
    import anyio

    with anyio.CancelScope(shield=True):
        await stream.aclose()
