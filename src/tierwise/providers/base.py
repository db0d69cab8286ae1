"""The provider seam: one call to one model, in a neutral shape, blocking or async."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable
from urllib.parse import urlsplit

from tierwise.pricing.usage import Usage
from tierwise.task import Message

StopReason = Literal["end", "max_tokens", "tool_use", "refusal", "other"]
Api = Literal["anthropic", "openai"]
MaxTokensParam = Literal["max_tokens", "max_completion_tokens"]

#: Each API's own stop value → tierwise's neutral stop reason (anything else is ``other``).
STOP_REASONS: Mapping[Api, Mapping[str, StopReason]] = {
    "anthropic": {
        "end_turn": "end",
        "stop_sequence": "end",
        "max_tokens": "max_tokens",
        "model_context_window_exceeded": "max_tokens",
        "tool_use": "tool_use",
        "refusal": "refusal",
        "pause_turn": "other",
    },
    "openai": {
        "stop": "end",
        "length": "max_tokens",
        "tool_calls": "tool_use",
        "function_call": "tool_use",
        "content_filter": "refusal",
    },
}


def neutral_stop_reason(api: Api, raw: object) -> StopReason:
    """The neutral stop reason for an Anthropic ``stop_reason`` or OpenAI ``finish_reason``."""
    return STOP_REASONS[api].get(raw if isinstance(raw, str) else "", "other")


def openai_max_tokens_param(base_url: str | None) -> MaxTokensParam:
    """How an OpenAI-compatible server takes the output limit.

    OpenAI itself (no ``base_url``, or ``api.openai.com``) wants ``max_completion_tokens`` (its
    reasoning models refuse ``max_tokens``); other servers widely accept only ``max_tokens``.
    """
    if base_url is None:
        return "max_completion_tokens"
    host = urlsplit(base_url).hostname or ""
    official = host == "api.openai.com" or host.endswith(".openai.com")
    return "max_completion_tokens" if official else "max_tokens"


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
class AsyncProvider(Protocol):
    """Calls one upstream without blocking. Raises only :class:`tierwise.errors.ProviderError`."""

    name: str

    async def acomplete(self, request: CompletionRequest) -> Completion: ...


@runtime_checkable
class Provider(AsyncProvider, Protocol):
    """Calls one upstream, blocking or async (what :meth:`Cascade.run` needs)."""

    def complete(self, request: CompletionRequest) -> Completion: ...


class ProviderStream(Protocol):
    """A streamed call that has been opened: its first events have arrived, none relayed yet.

    Until :meth:`batches` is iterated nothing has reached the caller, so a failure to open can
    still move on to another model or tier. The batches are the provider's own (opaque to the
    cascade, which hands them on); :attr:`usage` is final once they are exhausted.
    """

    @property
    def usage(self) -> Usage:
        """The usage reported so far (final once the stream has ended)."""
        ...

    def batches(self) -> AsyncIterator[Sequence[object]]:
        """The stream's events as they arrive, one batch per network read.

        Raises:
            ProviderError: the stream broke or the upstream sent an error event.
        """
        ...

    def completion(self) -> Completion:
        """The whole answer, once the batches are exhausted."""
        ...

    async def aclose(self) -> None:
        """Release the connection (idempotent)."""
        ...


@runtime_checkable
class StreamingProvider(AsyncProvider, Protocol):
    """A provider that can also relay an answer as it streams."""

    async def aopen(self, request: CompletionRequest) -> ProviderStream:
        """Send *request* streamed and wait for its first events.

        Raises:
            ProviderError: the call failed before any event arrived.
        """
        ...
