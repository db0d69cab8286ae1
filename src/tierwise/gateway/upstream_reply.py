"""What an upstream said, as a :class:`~tierwise.providers.base.Completion`, and how long the
current request waited on upstreams (the gateway's overhead leaves that time out).

Shared by the whole-reply path (:mod:`tierwise.gateway.upstream`) and the streamed one
(:mod:`tierwise.gateway.upstream_stream`).
"""

from __future__ import annotations

import contextvars
import json
from dataclasses import dataclass
from typing import Any

from tierwise.gateway.dialects import Dialect, neutral_stop_reason
from tierwise.gateway.translate import text_of_anthropic_content, text_of_openai_content
from tierwise.pricing import Usage
from tierwise.providers.base import Completion

__all__ = ["UpstreamReply", "add_upstream_time", "completion_from", "upstream_seconds"]

#: Seconds the current request spent waiting on upstreams (the gateway's overhead excludes it).
_UPSTREAM_TIME: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar(
    "tierwise_upstream_time", default=None
)


def upstream_seconds() -> list[float]:
    """Start accounting upstream wait time for the current request; returns the accumulator."""
    acc = [0.0]
    _UPSTREAM_TIME.set(acc)
    return acc


def add_upstream_time(seconds: float) -> None:
    """Count *seconds* of upstream wait toward the current request (if it is counted)."""
    acc = _UPSTREAM_TIME.get()
    if acc is not None:
        acc[0] += seconds


@dataclass(frozen=True, slots=True)
class UpstreamReply:
    """What the upstream said: its JSON (collected, for streams) and, when not streamed, bytes."""

    data: dict[str, Any]
    dialect: Dialect
    body: bytes | None = None
    streamed: bool = False


def completion_from(
    data: dict[str, Any],
    dialect: Dialect,
    *,
    provider: str,
    model: str,
    usage: Usage,
    latency_s: float,
    body: bytes | None = None,
    streamed: bool = False,
    request_id: str | None = None,
) -> Completion:
    """A :class:`Completion` for an upstream reply in either dialect.

    ``text`` is the answer's text; an answer made only of tool calls is represented by their
    JSON (``[{"name": ..., "input": ...}]``) so validators still see what the model produced.
    """
    if dialect == "anthropic":
        text = text_of_anthropic_content(
            [
                b
                for b in data.get("content") or ()
                if isinstance(b, dict) and b.get("type") == "text"
            ]
        )
        calls = [
            {"name": b.get("name"), "input": b.get("input")}
            for b in data.get("content") or ()
            if isinstance(b, dict) and b.get("type") == "tool_use"
        ]
        raw_stop = data.get("stop_reason")
    else:
        choice = (data.get("choices") or [{}])[0] or {}
        message = choice.get("message") or {}
        text = text_of_openai_content(message.get("content")) or str(message.get("refusal") or "")
        calls = []
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            try:
                args: Any = json.loads(function.get("arguments") or "{}")
            except json.JSONDecodeError:
                args = function.get("arguments")
            calls.append({"name": function.get("name"), "input": args})
        raw_stop = choice.get("finish_reason")
    if not text and calls:
        text = json.dumps(calls)
    return Completion(
        text=text,
        model=str(data.get("model") or model),
        provider=provider,
        usage=usage,
        stop_reason=neutral_stop_reason(dialect, raw_stop),
        raw_stop_reason=raw_stop if isinstance(raw_stop, str) else None,
        request_id=request_id,
        latency_s=latency_s,
        raw=UpstreamReply(data, dialect, body, streamed),
    )
