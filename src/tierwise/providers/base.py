"""The provider seam: one call to one model, in a neutral shape, blocking or async."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from tierwise.pricing.usage import Usage
from tierwise.task import Message

StopReason = Literal["end", "max_tokens", "tool_use", "refusal", "other"]


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    """What to ask one model. ``extra`` carries provider-specific fields untouched."""

    model: str
    messages: tuple[Message, ...]
    system: str | None = None
    max_tokens: int = 1024
    temperature: float | None = None
    timeout_s: float = 60.0
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Completion:
    """One model's answer with the usage the provider reported."""

    text: str
    model: str
    provider: str
    usage: Usage
    stop_reason: StopReason
    raw_stop_reason: str | None = None
    request_id: str | None = None
    latency_s: float = 0.0
    #: Recorded cost in USD when the provider knows it better than the catalog (replay data).
    recorded_cost_usd: str | None = None
    #: The upstream's own response body (dict) or collected stream, for callers that relay it
    #: verbatim (the gateway). Providers that have nothing to relay leave it ``None``.
    raw: Any = None


@runtime_checkable
class Provider(Protocol):
    """Calls one upstream. Implementations raise only :class:`tierwise.errors.ProviderError`s."""

    name: str

    def complete(self, request: CompletionRequest) -> Completion: ...

    async def acomplete(self, request: CompletionRequest) -> Completion: ...
