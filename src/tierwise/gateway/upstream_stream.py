"""One streamed upstream call (:class:`UpstreamStream`): relays the upstream's events as they
arrive and folds them into the final answer, with its usage, as a
:class:`~tierwise.providers.base.Completion`. Opened by
:meth:`tierwise.gateway.upstream.RawProvider.aopen`.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from tierwise.errors import (
    BadResponseError,
    ProviderError,
)
from tierwise.gateway.http import TransportError, UpstreamResponse
from tierwise.gateway.replies import reply_problem
from tierwise.gateway.sse import AnthropicCollector, Event, OpenAICollector, SSEDecoder
from tierwise.gateway.upstream_reply import add_upstream_time, completion_from
from tierwise.pricing import (
    Usage,
    merge_anthropic_stream_usage,
    usage_from_anthropic,
    usage_from_openai,
)
from tierwise.providers.base import Completion, CompletionRequest

if TYPE_CHECKING:
    from tierwise.gateway.upstream import RawProvider

__all__ = ["UpstreamStream"]


class UpstreamStream:
    """One streamed upstream call: relays events and folds them into the final answer."""

    def __init__(
        self, provider: RawProvider, request: CompletionRequest, body: dict[str, Any]
    ) -> None:
        self.provider = provider
        self.request = request
        self.body = body
        self.model = request.model
        self._response: UpstreamResponse | None = None
        self._decoder = SSEDecoder()
        self._anthropic = AnthropicCollector() if provider.dialect == "anthropic" else None
        self._openai = OpenAICollector() if provider.dialect == "openai" else None
        self._usage = Usage()
        self._done = False
        self.started = time.perf_counter()
        self.elapsed = 0.0
        self.request_id: str | None = None
        self._gen: AsyncIterator[list[tuple[Event, dict[str, Any] | None]]] | None = None
        self._first: list[tuple[Event, dict[str, Any] | None]] | None = None

    async def __aenter__(self) -> UpstreamStream:
        provider = self.provider
        headers = provider.headers(self.request)
        headers["accept"] = "text/event-stream"
        t0 = time.perf_counter()
        try:
            response = await provider.transport.send(
                provider.url, json.dumps(self.body).encode(), headers, self.request.timeout_s
            )
            if response.status != 200:
                content = await response.read()
                raise provider.status_error(self.model, response.status, content, response.headers)
        except TransportError as exc:
            raise provider.transport_error(self.model, exc) from None
        finally:
            self._account(t0)
        self._response = response
        self.request_id = provider.redacted(
            response.headers.get("request-id") or response.headers.get("x-request-id")
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Release the upstream connection (idempotent)."""
        response, self._response = self._response, None
        if response is not None:
            await response.aclose()

    def _account(self, t0: float) -> None:
        spent = time.perf_counter() - t0
        self.elapsed += spent
        add_upstream_time(spent)

    async def prime(self) -> None:
        """Wait for the first events (kept for :meth:`batches`); raises the mapped error.

        Until they arrive nothing has been relayed, so a caller can still try another model.
        """
        self._gen = self._batches()
        try:
            self._first = await self._gen.__anext__()
        except StopAsyncIteration:
            raise BadResponseError(
                f"{self.provider.name} model {self.model!r}: the stream ended before any event",
                provider=self.provider.name,
                model=self.model,
            ) from None

    async def batches(self) -> AsyncIterator[list[tuple[Event, dict[str, Any] | None]]]:
        """The upstream's events as they arrive, one list per network read.

        Each event keeps its exact bytes and its parsed JSON (``None`` for ``ping`` and
        ``[DONE]``). Raises the mapped :class:`ProviderError` when the stream breaks.
        """
        if self._gen is None:
            self._gen = self._batches()
        elif self._first is not None:
            first, self._first = self._first, None
            yield first
        async for batch in self._gen:
            yield batch

    async def events(self) -> AsyncIterator[tuple[Event, dict[str, Any] | None]]:
        """:meth:`batches`, one event at a time."""
        async for batch in self.batches():
            for item in batch:
                yield item

    async def _batches(self) -> AsyncIterator[list[tuple[Event, dict[str, Any] | None]]]:
        assert self._response is not None, "use the stream as an async context manager"
        iterator = self._response.aiter_bytes().__aiter__()
        while True:
            t0 = time.perf_counter()
            try:
                chunk = await iterator.__anext__()
            except StopAsyncIteration:
                self._account(t0)
                break
            except TransportError as exc:
                self._account(t0)
                raise self._billed(self.provider.transport_error(self.model, exc)) from None
            self._account(t0)
            batch, error = self._fold_all(self._decoder.feed(chunk))
            if batch:
                yield batch
            if error is not None:
                raise self._billed(error)
        batch, error = self._fold_all(self._decoder.flush())
        if batch:
            yield batch
        if error is not None:
            raise self._billed(error)
        if not self._done:
            raise self._billed(
                BadResponseError(
                    f"{self.provider.name} model {self.model!r}: the stream ended before its "
                    "last event (cut short)",
                    provider=self.provider.name,
                    model=self.model,
                )
            )

    def _billed(self, error: ProviderError) -> ProviderError:
        """*error* carrying the usage reported so far: a stream that started was billed."""
        if error.usage is None and self._usage.total_tokens > 0:
            error.usage = self._usage
        return error

    def _fold_all(
        self, events: list[Event]
    ) -> tuple[list[tuple[Event, dict[str, Any] | None]], ProviderError | None]:
        """Fold events; on an error event, what came before it and the error to raise next."""
        out: list[tuple[Event, dict[str, Any] | None]] = []
        for event in events:
            scrubbed = self.provider.scrub(event.raw)
            if scrubbed is not event.raw:  # the upstream reflected the key: never relay it
                event = Event(
                    event.event, self.provider.scrub(event.data.encode()).decode(), scrubbed
                )
            try:
                out.append((event, self._fold(event)))
            except ProviderError as exc:
                return out, exc
            except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
                return out, BadResponseError(
                    f"{self.provider.name} model {self.model!r}: a stream event is not valid "
                    f"in its dialect ({type(exc).__name__}: {exc})",
                    provider=self.provider.name,
                    model=self.model,
                )
        return out, None

    def _fold(self, event: Event) -> dict[str, Any] | None:
        if self._anthropic is not None:
            if event.event == "ping":
                return None
            data = self._json(event)
            self._anthropic.feed(data)
            kind = data.get("type")
            if kind == "message_start":
                self._usage = usage_from_anthropic((data.get("message") or {}).get("usage"))
            elif kind == "message_delta" and data.get("usage"):
                self._usage = merge_anthropic_stream_usage(self._usage, data["usage"])
            elif kind == "message_stop":
                self._done = True
            elif kind == "error":
                raise self._stream_error(data)
            return data
        assert self._openai is not None
        if event.data.strip() == "[DONE]":
            self._done = True
            return None
        data = self._json(event)
        if "error" in data and not data.get("choices"):
            raise self._stream_error(data)
        self._openai.feed(data)
        if data.get("usage"):
            self._usage = usage_from_openai(data["usage"])
        return data

    def _json(self, event: Event) -> dict[str, Any]:
        try:
            data = json.loads(event.data)
        except json.JSONDecodeError as exc:
            raise BadResponseError(
                f"{self.provider.name} model {self.model!r}: a stream event is not valid JSON "
                f"({exc})",
                provider=self.provider.name,
                model=self.model,
            ) from None
        if not isinstance(data, dict):
            raise BadResponseError(
                f"{self.provider.name} model {self.model!r}: a stream event is not an object",
                provider=self.provider.name,
                model=self.model,
            )
        return data

    def _stream_error(self, data: dict[str, Any]) -> ProviderError:
        err = data.get("error") or {}
        etype = err.get("type") if isinstance(err, dict) else None
        status = {"overloaded_error": 529, "rate_limit_error": 429}.get(str(etype), 500)
        return self.provider.status_error(self.model, status, json.dumps(data).encode(), {})

    @property
    def usage(self) -> Usage:
        """Usage so far (final once the stream has ended)."""
        return self._usage

    @property
    def finished(self) -> bool:
        """Whether the upstream's final event (``message_stop`` / ``[DONE]``) arrived."""
        return self._done

    def collected(self) -> dict[str, Any]:
        """The answer folded so far, as the non-streamed response object."""
        if self._anthropic is not None:
            return self._anthropic.result()
        assert self._openai is not None
        return self._openai.result()

    def completion(self) -> Completion:
        """The whole answer as a :class:`Completion` (after the events are exhausted).

        Raises:
            BadResponseError: the events do not add up to a valid answer.
        """
        data = self.collected()
        problem = reply_problem(self.provider.dialect, data)
        if problem is not None:
            raise self._billed(
                BadResponseError(
                    f"{self.provider.name} model {self.model!r}: the streamed reply is not a "
                    f"valid answer: {problem}",
                    provider=self.provider.name,
                    model=self.model,
                )
            )
        return completion_from(
            data,
            self.provider.dialect,
            provider=self.provider.name,
            model=self.model,
            usage=self._usage,
            latency_s=self.elapsed,
            streamed=True,
            request_id=self.request_id,
        )
