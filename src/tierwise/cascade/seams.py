"""The cascade's seams: what it calls out to and what it hands the next tier.

:class:`ProviderSource` (where tier models come from), :class:`LedgerSink` (where attempts go and
budgets are reserved), :class:`Scorer` (a pre-routing hook proposing the start tier), and the
request builder that turns a task — plus the previous tier's :class:`Failure`, told to the next
tier as a handoff note (:mod:`tierwise.cascade.handoff`) — into a request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, Protocol

from tierwise.cascade.result import AttemptRecord
from tierwise.providers.base import AsyncProvider, CompletionRequest
from tierwise.records import AgreementRecord
from tierwise.task import Decision, Message, Task

if TYPE_CHECKING:
    from tierwise.cascade.validators import Validator
    from tierwise.policy.schema import Tier

__all__ = [
    "Failure",
    "LearnedModels",
    "LedgerSink",
    "ProviderSource",
    "RequestBuilder",
    "Scorer",
    "default_request_builder",
]


@dataclass(frozen=True, slots=True)
class Failure:
    """Why the previous tier's attempt was not accepted, handed to the next tier as context.

    ``reason`` is what the next tier is told (a validator's ``detail`` when it set one, else its
    ``reason``); ``output`` the rejected answer (``None`` after a provider error: nothing was
    answered, so nothing is handed up); ``model`` the model that wrote it; ``rejected_by``
    whether an automatic ``check`` or a ``reviewer`` refused it; ``earlier`` the (tier, reason)
    of the task's rejections before this one, oldest first.
    """

    tier: str
    reason: str
    output: str | None = None
    model: str | None = None
    rejected_by: Literal["check", "reviewer"] = "check"
    earlier: tuple[tuple[str, str], ...] = ()

    def note(self, task: Task) -> str:
        """The handoff note that follows the rejected answer (:mod:`tierwise.cascade.handoff`)."""
        from tierwise.cascade.handoff import handoff_note

        return handoff_note(task, self)


RequestBuilder = Callable[[Task, "Tier", str, int, "Failure | None"], CompletionRequest]


class Scorer(Protocol):
    """A pre-routing scorer (e.g. a learned router): proposes the tier to start at, or ``None``."""

    def propose(self, task: Task) -> str | None: ...


class LearnedModels(Protocol):
    """The saved learned router and response verifier a policy uses live
    (:func:`tierwise.evaluation.live.load_learned` reads them): the scorer of kinds with
    ``start = "learned"``, and what a ``learned`` validator applies."""

    def propose(self, task: Task) -> str | None: ...

    def validator(self, name: str) -> Validator: ...


class LedgerSink(Protocol):
    """What the cascade writes to: :class:`tierwise.ledger.Ledger`, or a wrapper around it
    (the gateway's group-commit recorder). Budgets are reserved through the same object."""

    def batch(self) -> AbstractContextManager[None]: ...

    def record_policy_revision(
        self, revision: str, policy_json: str, source: str | None
    ) -> None: ...

    def begin_task(
        self,
        task: Task,
        decision: Decision,
        *,
        policy_revision: str,
        role: str,
        store_content: bool,
    ) -> None: ...

    def record_attempt(self, attempt: AttemptRecord, *, store_content: bool) -> int: ...

    def record_agreements(self, agreements: Sequence[AgreementRecord]) -> None: ...

    def finish_task(
        self,
        task_id: str,
        *,
        outcome: str,
        final_tier: str | None,
        cost_usd: Decimal,
        latency_s: float,
        attempts: int,
        output: str | None,
        store_content: bool,
    ) -> None: ...

    def reserve(self, task_id: str, limits: Mapping[str, Decimal], amount_usd: Decimal) -> Any: ...

    def settle(self, reservation: Any, actual_usd: Decimal) -> None: ...

    def release(self, reservation: Any) -> None: ...


class ProviderSource(Protocol):
    """Where the cascade gets providers: ``for_tier`` lists (model, provider), primary first.

    Blocking runs need blocking providers (``Provider``); async runs take any ``AsyncProvider``;
    live streams need ``StreamingProvider`` (all three in :mod:`tierwise.providers.base`).
    """

    def for_tier(self, tier: str) -> Sequence[tuple[str, AsyncProvider]]: ...


def default_request_builder(
    task: Task, tier: Tier, model: str, max_tokens: int, failure: Failure | None
) -> CompletionRequest:
    """Build the request for one attempt: the task's turns, plus the handoff when escalating.

    The rejected output goes back as the assistant's turn and the handoff note
    (:func:`~tierwise.cascade.handoff.handoff_note`: what was asked, what was answered, why it
    was rejected, what to avoid) as the next user turn, so the stronger model sees what went
    wrong instead of starting blind — or building on it.
    """
    messages = [*task.history, Message("user", task.prompt)]
    if failure is not None and failure.output is not None:
        messages.append(Message("assistant", failure.output or "(empty answer)"))
        messages.append(Message("user", failure.note(task)))
    return CompletionRequest(
        model=model,
        messages=tuple(messages),
        system=task.system,
        max_tokens=max_tokens,
        timeout_s=tier.timeout_s,
        extra={"prompt_id": task.id, "kind": task.kind},
    )
