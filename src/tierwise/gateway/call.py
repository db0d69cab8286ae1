"""One request being served (:class:`Call`) and what goes back (:class:`Reply`)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from tierwise.cascade.runner import Pin
from tierwise.gateway.dialects import Dialect
from tierwise.task import Task

__all__ = ["Call", "Reply", "Route"]

#: How the model name was read: ``tierwise/auto``, ``tierwise/<kind>``, a concrete model id, or
#: ``tierwise/plan-execute`` (plan-execute-review).
Route = Literal["auto", "kind", "model", "plan"]


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
    kind_fallback: str | None = None
    target_model: str | None = None
    #: The concrete model to call (``route == "model"``), resolved before anything is sent.
    pin: Pin | None = None
    #: The caller's body translated for the other dialect, built once when first needed.
    bodies: dict[str, dict[str, Any]] = field(default_factory=dict)

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
