"""One request being served (:class:`Call`) and what goes back (:class:`Reply`)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from tierwise.cascade.runner import Cascade, Pin
from tierwise.gateway.dialects import Dialect
from tierwise.gateway.logs import RequestLog
from tierwise.gateway.upstream import UpstreamPool
from tierwise.task import Task

if TYPE_CHECKING:
    from tierwise.cascade.result import CascadeResult
    from tierwise.cascade.seams import LearnedModels
    from tierwise.cascade.shadow import ShadowState
    from tierwise.gateway.recorder import GroupCommitLedger
    from tierwise.policy import Policy

__all__ = ["Call", "Reply", "Route", "Routing"]

#: How the model name was read: ``tierwise/auto``, ``tierwise/<kind>``, a concrete model id, or
#: ``tierwise/plan-execute`` (plan-execute-review).
Route = Literal["auto", "kind", "model", "plan"]


@dataclass(frozen=True, slots=True)
class Routing:
    """Everything a policy decides, swapped as one value when the policy is reloaded.

    A request takes the routing in force when it arrives and keeps it to the end, so a reload
    never mixes two policies within one request.
    """

    policy: Policy
    pool: UpstreamPool
    cascade: Cascade
    validator_names: frozenset[str]
    dialects: frozenset[Dialect]

    @classmethod
    def build(
        cls,
        policy: Policy,
        pool: UpstreamPool,
        recorder: GroupCommitLedger,
        shadow_state: ShadowState | None = None,
        learned: LearnedModels | None = None,
    ) -> Routing:
        """The routing of *policy* over *pool*, recording through *recorder*; *shadow_state*
        is shared with the routing it replaces (a reload keeps shadowing's pause); *learned*
        are the saved models the policy uses (:func:`tierwise.evaluation.load_learned`).

        Raises:
            PolicyError: the policy uses learned models and *learned* is ``None``.
        """
        cascade = Cascade(policy, providers=pool, ledger=recorder, learned=learned)
        if shadow_state is not None:
            cascade.shadow_state = shadow_state
        return cls(
            policy=policy,
            pool=pool,
            cascade=cascade,
            validator_names=frozenset(policy.model.validators),
            dialects=frozenset(p.dialect for t in policy.ladder for _, p in pool.for_tier(t)),
        )


@dataclass(slots=True)
class Call:
    """One request being served: the caller's JSON, the task, and what the gateway decided."""

    dialect: Dialect
    body: dict[str, Any]
    raw_size: int
    task: Task
    route: Route
    stream: bool
    include_usage: bool
    caller_max_tokens: int | None
    forward_headers: dict[str, str]
    limits: dict[str, Decimal]
    started: float
    upstream: list[float]
    #: The policy in force when the request arrived (kept to its end, whatever reloads).
    routing: Routing
    kind_fallback: str | None = None
    target_model: str | None = None
    #: The concrete model to call (``route == "model"``), resolved before anything is sent.
    pin: Pin | None = None
    #: The caller's body translated for the other dialect, built once when first needed.
    bodies: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The request's log line, filled in as it is served (see :mod:`tierwise.gateway.logs`).
    log: RequestLog | None = None
    #: The accepted result once the caller has it all (what a shadow run sends again).
    done: CascadeResult | None = None

    def overhead_s(self) -> float:
        """Seconds spent in the gateway so far, upstream waits excluded."""
        return max(0.0, time.perf_counter() - self.started - self.upstream[0])


@dataclass(slots=True)
class Reply:
    """What to send back: a JSON body or a stream of SSE bytes, with status and headers."""

    status: int
    headers: dict[str, str]
    body: bytes | None = None
    stream: AsyncIterator[bytes] | None = None
    #: The stream writes the request's log line itself when it ends (a live relay does).
    logs_itself: bool = False
    #: Run once the reply's last byte was sent (shadow calls); never delays the reply.
    after: Callable[[], Awaitable[None]] | None = None
