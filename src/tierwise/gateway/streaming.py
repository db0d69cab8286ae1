"""Live streams: the upstream's events relayed to the caller in the caller's dialect.

The cascade decides and records (:meth:`~tierwise.cascade.Cascade.astream`: the same attempt
loop as unstreamed requests, so a failure before the first byte climbs); this module only turns
the upstream's events into the caller's bytes — verbatim when dialects match (OpenAI's usage
chunk is removed when the caller did not ask for it: the gateway always asks, to price the
call), translated event by event otherwise — and ends the stream: a ``: tierwise {...}``
comment with cost and attempts (the headers left before they were known), or, when the
upstream broke after bytes had left, an error event in the caller's dialect.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Any, Protocol, cast

import anyio

from tierwise.cascade.runner import StreamChunk, StreamDone, StreamItem, StreamOpened
from tierwise.errors import StreamInterruptedError
from tierwise.gateway.call import Call
from tierwise.gateway.dialects import Dialect, RequestError, error_body
from tierwise.gateway.errors import failure_error
from tierwise.gateway.sse import (
    DONE,
    AnthropicToOpenAIStream,
    Event,
    OpenAIToAnthropicStream,
    encode_comment,
    stream_error_event,
)
from tierwise.gateway.upstream import RawProvider
from tierwise.records import AttemptRecord

__all__ = ["Committer", "StreamRelay", "relay", "trailer"]

#: What the upstream stream's batches hold: each event's exact bytes and its JSON.
Batch = Sequence[tuple[Event, dict[str, Any] | None]]


class Committer(Protocol):
    """What a relay needs from the service: commit a task's rows, and count its attempts."""

    async def commit(self, task_id: str) -> None: ...

    def commit_later(self, task_id: str) -> None: ...

    def observe(
        self, call: Call, attempts: Sequence[AttemptRecord], overhead_s: float | None
    ) -> None: ...


class StreamRelay:
    """Turns one upstream stream's events into the caller's SSE bytes."""

    def __init__(self, caller: Dialect, upstream: Dialect, *, include_usage: bool) -> None:
        self.caller = caller
        self.upstream = upstream
        self.include_usage = include_usage
        same = caller == upstream
        self._to_openai = (
            AnthropicToOpenAIStream(include_usage=include_usage)
            if not same and caller == "openai"
            else None
        )
        self._to_anthropic = (
            OpenAIToAnthropicStream() if not same and caller == "anthropic" else None
        )

    def convert(self, batch: Batch) -> bytes:
        """The bytes for one upstream read; OpenAI's ``[DONE]`` is held back for the trailer."""
        return b"".join(b for event, data in batch for b in self._event(event, data))

    def _event(self, event: Event, data: dict[str, Any] | None) -> list[bytes]:
        if self.upstream == "anthropic":
            if data is None:  # ping
                return [event.raw] if self._to_openai is None else []
            if self._to_openai is not None:
                return [b for b in self._to_openai.feed(data) if b != DONE]
            return [event.raw]
        if data is None:  # [DONE]
            return []
        if self._to_anthropic is not None:
            return self._to_anthropic.feed(data)
        if not self.include_usage and not data.get("choices") and data.get("usage"):
            return []  # the usage chunk the gateway asked for on its own behalf
        return [event.raw]

    def closing(self) -> bytes:
        """What a translated stream still owes after the upstream's last event."""
        return b"".join(self._to_anthropic.finish()) if self._to_anthropic is not None else b""


def trailer(
    task_id: str, tier: str, model: str, attempts: int, cost: Decimal, overhead_s: float
) -> bytes:
    """The final SSE comment carrying what the headers could not: cost, attempts, overhead."""
    return encode_comment(
        "tierwise "
        + json.dumps(
            {
                "task_id": task_id,
                "tier": tier,
                "model": model,
                "attempts": attempts,
                "cost_usd": format(cost, "f"),
                "overhead_ms": round(overhead_s * 1000, 3),
            }
        )
    )


async def relay(
    service: Committer,
    call: Call,
    opened: StreamOpened,
    items: AsyncGenerator[StreamItem, None],
) -> AsyncIterator[bytes]:
    """The caller's stream: relayed batches, then the trailer (or an error event).

    The attempt is recorded by the cascade however the stream ends; if the caller goes away,
    closing *items* records it as ``partial`` and its rows are committed without waiting. The
    request's log line is written here, when the stream ends (one generator, not a wrapper per
    chunk: a stream's cost is per chunk).
    """
    provider = opened.provider
    assert isinstance(provider, RawProvider), "the gateway's pool holds raw providers"
    converter = StreamRelay(call.dialect, provider.dialect, include_usage=call.include_usage)
    task_id = call.task.id
    try:
        done: StreamDone | None = None
        try:
            async for item in items:
                if isinstance(item, StreamChunk):
                    out = converter.convert(cast(Batch, item.batch))
                    if out:
                        yield out
                elif isinstance(item, StreamDone):
                    done = item
            closing = converter.closing()
            if closing:
                yield closing
        except StreamInterruptedError as exc:
            service.observe(call, exc.attempts, call.overhead_s())
            if call.log is not None:
                call.log.error = type(exc.cause).__name__
            await _commit_quietly(service.commit, task_id)
            failed = failure_error(task_id, exc)
            body = error_body(call.dialect, failed.status, failed.message)
            yield stream_error_event(call.dialect, body)
            return
        assert done is not None, "a relay ends with StreamDone or an error"
        result = done.result
        overhead = call.overhead_s()
        service.observe(call, result.attempts, overhead)
        await _commit_quietly(service.commit, task_id)
        call.done = result  # the relay ended well: its task may be shadowed once sent
        yield trailer(
            task_id, result.tier, result.model, len(result.attempts), result.cost_usd, overhead
        )
        if call.dialect == "openai":
            yield DONE
    except BaseException as exc:  # the caller went away (closed, cancelled), or a bug
        if call.log is not None:
            call.log.error = call.log.error or type(exc).__name__
        with anyio.CancelScope(shield=True):
            await items.aclose()  # records the partial attempt, if it was under way
        service.commit_later(task_id)
        raise
    finally:  # the request's one log line, however the stream ended
        if call.log is not None:
            call.log.write(200, time.perf_counter() - call.started, call.overhead_s())


async def _commit_quietly(commit: Callable[[str], Awaitable[None]], task_id: str) -> None:
    """Commit mid-stream: a failure is logged by the service; the stream is already under way."""
    with contextlib.suppress(RequestError):
        await commit(task_id)
