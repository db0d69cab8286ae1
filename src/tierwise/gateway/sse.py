"""Server-sent events in both dialects: decode, collect, re-encode and translate streams.

* :class:`SSEDecoder` turns upstream bytes into :class:`Event`\\s, each keeping its exact bytes
  so a same-dialect stream can be relayed verbatim.
* :class:`AnthropicCollector` / :class:`OpenAICollector` fold a stream into the complete
  response object (what a non-streamed call would have returned), usage included.
* :func:`anthropic_stream` / :func:`openai_stream` encode a complete answer as the event
  sequence the official SDKs expect (used after buffering and validating).
* :class:`AnthropicToOpenAIStream` / :class:`OpenAIToAnthropicStream` translate a live stream
  event by event when the tier speaks the other dialect.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tierwise.gateway.dialects import (
    anthropic_usage_to_openai,
    finish_reason_to_stop_reason,
    openai_usage_to_anthropic,
    stop_reason_to_finish_reason,
)

__all__ = [
    "DONE",
    "AnthropicCollector",
    "AnthropicToOpenAIStream",
    "Event",
    "OpenAICollector",
    "OpenAIToAnthropicStream",
    "SSEDecoder",
    "anthropic_stream",
    "encode_comment",
    "encode_event",
    "openai_stream",
    "stream_error_event",
]

DONE = b"data: [DONE]\n\n"


def encode_event(data: Any, event: str | None = None) -> bytes:
    """One SSE event; ``data`` is JSON-encoded unless it is already a string."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


def encode_comment(text: str) -> bytes:
    """An SSE comment line (clients ignore it): ``: text``."""
    return f": {text}\n\n".encode()


@dataclass(frozen=True, slots=True)
class Event:
    """One decoded server-sent event and its exact bytes on the wire."""

    event: str | None
    data: str
    raw: bytes

    def json(self) -> Any:
        """The event's data parsed as JSON."""
        return json.loads(self.data)


class SSEDecoder:
    """Incremental SSE parser: feed it bytes as they arrive, get complete events back.

    Comment-only blocks (``: keep-alive``) produce no event; ``\\r\\n`` line ends are accepted.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._cr = b""

    def feed(self, chunk: bytes) -> list[Event]:
        """Events completed by *chunk* (an incomplete tail is kept for the next call)."""
        self._buffer += self._cr + chunk
        self._cr = b""
        if b"\r" in self._buffer:
            if self._buffer.endswith(b"\r"):  # may be the first half of a split \r\n
                self._buffer, self._cr = self._buffer[:-1], b"\r"
            self._buffer = self._buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        events: list[Event] = []
        while True:
            end = self._buffer.find(b"\n\n")
            if end < 0:
                return events
            block, self._buffer = self._buffer[: end + 2], self._buffer[end + 2 :]
            parsed = _parse_block(block)
            if parsed is not None:
                events.append(parsed)

    def flush(self) -> list[Event]:
        """Whatever complete event remains when the stream ends without a final blank line."""
        rest, self._buffer = self._buffer + self._cr.replace(b"\r", b"\n"), b""
        self._cr = b""
        if not rest.strip():
            return []
        parsed = _parse_block(rest.rstrip(b"\n") + b"\n\n")
        return [parsed] if parsed is not None else []


def _parse_block(block: bytes) -> Event | None:
    name: str | None = None
    data: list[str] = []
    for line in block.decode("utf-8", errors="replace").split("\n"):
        if not line or line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
    if name is None and not data:
        return None
    return Event(name, "\n".join(data), block)


def stream_error_event(dialect: str, body: dict[str, Any]) -> bytes:
    """An error in the middle of a stream, as the dialect's SDK recognises it."""
    if dialect == "anthropic":
        return encode_event(body, "error")
    return encode_event(body)


# -- collectors --------------------------------------------------------------------------------


#: More content blocks than any real answer has (a bound on what a hostile stream can allocate).
_MAX_BLOCKS = 4096


class AnthropicCollector:
    """Fold Anthropic stream events into the final ``message`` object.

    Usage is merged the way the API defines it: ``message_start`` carries input and cache
    counts, each ``message_delta`` carries cumulative counts that replace earlier ones.
    """

    def __init__(self) -> None:
        self.message: dict[str, Any] = {}
        self._json: dict[int, list[str]] = {}
        self.started = False
        self.finished = False
        self.error: dict[str, Any] | None = None

    def feed(self, data: dict[str, Any]) -> None:
        """Fold one event (its parsed data)."""
        kind = data.get("type")
        if kind == "message_start":
            self.started = True
            self.message = dict(data.get("message") or {})
            self.message["content"] = list(self.message.get("content") or [])
            self.message["usage"] = dict(self.message.get("usage") or {})
        elif kind == "content_block_start":
            block = dict(data.get("content_block") or {})
            index = int(data.get("index", len(self.message.get("content", []))))
            if not 0 <= index < _MAX_BLOCKS:
                raise ValueError(f"content block index {index} is out of range")
            content = self.message.setdefault("content", [])
            while len(content) <= index:
                content.append({})
            content[index] = block
            if block.get("type") in ("tool_use", "server_tool_use"):
                self._json[index] = []
        elif kind == "content_block_delta":
            self._delta(int(data.get("index", 0)), data.get("delta") or {})
        elif kind == "content_block_stop":
            index = int(data.get("index", 0))
            if index in self._json:
                text = "".join(self._json.pop(index))
                block = self.message["content"][index]
                try:
                    block["input"] = json.loads(text) if text.strip() else {}
                except json.JSONDecodeError:
                    block["input"] = {"_raw_arguments": text}
        elif kind == "message_delta":
            delta = data.get("delta") or {}
            for key in ("stop_reason", "stop_sequence"):
                if key in delta:
                    self.message[key] = delta[key]
            usage = self.message.setdefault("usage", {})
            for key, value in (data.get("usage") or {}).items():
                if value is not None:
                    usage[key] = value
        elif kind == "message_stop":
            self.finished = True
        elif kind == "error":
            self.error = data

    def _delta(self, index: int, delta: dict[str, Any]) -> None:
        content = self.message.get("content") or []
        if not 0 <= index < len(content):
            return
        block = content[index]
        kind = delta.get("type")
        if kind == "text_delta":
            block["text"] = block.get("text", "") + str(delta.get("text", ""))
        elif kind == "input_json_delta":
            self._json.setdefault(index, []).append(str(delta.get("partial_json", "")))
        elif kind == "thinking_delta":
            block["thinking"] = block.get("thinking", "") + str(delta.get("thinking", ""))
        elif kind == "signature_delta":
            block["signature"] = delta.get("signature")
        elif kind == "citations_delta":
            block.setdefault("citations", []).append(delta.get("citation"))

    def result(self) -> dict[str, Any]:
        """The message as a non-streamed call would have returned it."""
        return self.message


class OpenAICollector:
    """Fold ``chat.completion.chunk`` objects into the final ``chat.completion`` object."""

    def __init__(self) -> None:
        self.id: str | None = None
        self.model = ""
        self.created = 0
        self.content: list[str] = []
        self.refusal: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.extra: dict[str, Any] = {}
        self.finished = False
        self.started = False
        self.error: dict[str, Any] | None = None

    def feed(self, chunk: dict[str, Any]) -> None:
        """Fold one chunk (its parsed data)."""
        if "error" in chunk and not chunk.get("choices"):
            self.error = chunk
            return
        self.started = True
        self.id = self.id or chunk.get("id")
        self.model = chunk.get("model") or self.model
        self.created = chunk.get("created") or self.created
        for key in ("system_fingerprint", "service_tier"):
            if chunk.get(key) is not None:
                self.extra[key] = chunk[key]
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("content"):
                self.content.append(delta["content"])
            if delta.get("refusal"):
                self.refusal.append(delta["refusal"])
            for call in delta.get("tool_calls") or ():
                slot = self.tool_calls.setdefault(
                    int(call.get("index", 0)),
                    {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
                )
                if call.get("id"):
                    slot["id"] = call["id"]
                function = call.get("function") or {}
                if function.get("name"):
                    slot["function"]["name"] += function["name"]
                if function.get("arguments"):
                    slot["function"]["arguments"] += function["arguments"]
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]

    def result(self) -> dict[str, Any]:
        """The completion as a non-streamed call would have returned it."""
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(self.content) if self.content else None,
            "refusal": "".join(self.refusal) if self.refusal else None,
        }
        if self.tool_calls:
            message["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        out: dict[str, Any] = {
            "id": self.id or f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": self.created or int(time.time()),
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": self.finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": self.usage,
            **self.extra,
        }
        return out


# -- encoding a complete answer ----------------------------------------------------------------


def anthropic_stream(message: dict[str, Any]) -> Iterator[bytes]:
    """The event sequence the Messages API would have streamed for *message*."""
    usage = dict(message.get("usage") or {})
    start_usage = {**usage, "output_tokens": 0}
    head = {k: v for k, v in message.items() if k not in ("content", "usage")}
    head.update(content=[], stop_reason=None, stop_sequence=None, usage=start_usage)
    yield encode_event({"type": "message_start", "message": head}, "message_start")
    for index, block in enumerate(message.get("content") or ()):
        yield from _anthropic_block_events(index, block)
    delta_usage = {"output_tokens": usage.get("output_tokens", 0)}
    for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
        if usage.get(key) is not None:
            delta_usage[key] = usage[key]
    delta = {
        "stop_reason": message.get("stop_reason"),
        "stop_sequence": message.get("stop_sequence"),
    }
    yield encode_event(
        {"type": "message_delta", "delta": delta, "usage": delta_usage}, "message_delta"
    )
    yield encode_event({"type": "message_stop"}, "message_stop")


def _anthropic_block_events(index: int, block: dict[str, Any]) -> Iterator[bytes]:
    kind = block.get("type")
    delta: dict[str, Any] | None = None
    if kind == "text":
        start = {**block, "text": ""}
        delta = {"type": "text_delta", "text": block.get("text", "")}
    elif kind == "tool_use":
        start = {**block, "input": {}}
        delta = {"type": "input_json_delta", "partial_json": json.dumps(block.get("input") or {})}
    elif kind == "thinking":
        start = {**block, "thinking": "", "signature": ""}
        delta = {"type": "thinking_delta", "thinking": block.get("thinking", "")}
    else:
        start = block
    yield encode_event(
        {"type": "content_block_start", "index": index, "content_block": start},
        "content_block_start",
    )
    if delta is not None:
        yield encode_event(
            {"type": "content_block_delta", "index": index, "delta": delta}, "content_block_delta"
        )
    if kind == "thinking" and block.get("signature"):
        sig = {"type": "signature_delta", "signature": block["signature"]}
        yield encode_event(
            {"type": "content_block_delta", "index": index, "delta": sig}, "content_block_delta"
        )
    yield encode_event({"type": "content_block_stop", "index": index}, "content_block_stop")


def openai_stream(completion: dict[str, Any], *, include_usage: bool) -> Iterator[bytes]:
    """The chunk sequence Chat Completions would have streamed for *completion*.

    Ends with the usage chunk when *include_usage* and with ``data: [DONE]``.
    """
    base = {
        "id": completion.get("id"),
        "object": "chat.completion.chunk",
        "created": completion.get("created") or int(time.time()),
        "model": completion.get("model", ""),
    }
    for key in ("system_fingerprint", "service_tier"):
        if completion.get(key) is not None:
            base[key] = completion[key]

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        body: dict[str, Any] = {
            **base,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
        if include_usage:
            body["usage"] = None
        return encode_event(body)

    choice = (completion.get("choices") or [{}])[0] or {}
    message = choice.get("message") or {}
    yield chunk({"role": "assistant", "content": ""})
    if message.get("content"):
        yield chunk({"content": message["content"]})
    if message.get("refusal"):
        yield chunk({"refusal": message["refusal"]})
    for i, call in enumerate(message.get("tool_calls") or ()):
        function = call.get("function") or {}
        head = {
            "index": i,
            "id": call.get("id"),
            "type": "function",
            "function": {"name": function.get("name", ""), "arguments": ""},
        }
        yield chunk({"tool_calls": [head]})
        args = {"index": i, "function": {"arguments": function.get("arguments", "")}}
        yield chunk({"tool_calls": [args]})
    yield chunk({}, choice.get("finish_reason") or "stop")
    if include_usage:
        yield encode_event({**base, "choices": [], "usage": completion.get("usage")})
    yield DONE


# -- live translation ----------------------------------------------------------------------------


class AnthropicToOpenAIStream:
    """Translate a live Anthropic event stream into ``chat.completion.chunk`` events."""

    def __init__(self, *, include_usage: bool) -> None:
        self.include_usage = include_usage
        self._base: dict[str, Any] = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": "",
        }
        self._usage: dict[str, Any] = {}
        self._tool_index: dict[int, int] = {}
        self._finish: str | None = None

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        body: dict[str, Any] = {
            **self._base,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
        if self.include_usage:
            body["usage"] = None
        return encode_event(body)

    def feed(self, data: dict[str, Any]) -> list[bytes]:
        """Chunks to send for one Anthropic event (possibly none)."""
        kind = data.get("type")
        if kind == "message_start":
            message = data.get("message") or {}
            msg_id = str(message.get("id") or uuid.uuid4().hex)
            self._base["id"] = f"chatcmpl-{msg_id.removeprefix('msg_')}"
            self._base["model"] = message.get("model", "")
            self._usage.update({k: v for k, v in (message.get("usage") or {}).items() if v})
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "tool_use":
                position = len(self._tool_index)
                self._tool_index[int(data.get("index", 0))] = position
                head = {
                    "index": position,
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name", ""), "arguments": ""},
                }
                return [self._chunk({"tool_calls": [head]})]
            if block.get("type") == "text" and block.get("text"):
                return [self._chunk({"content": block["text"]})]
            return []
        if kind == "content_block_delta":
            delta = data.get("delta") or {}
            if delta.get("type") == "text_delta":
                return [self._chunk({"content": delta.get("text", "")})]
            if delta.get("type") == "input_json_delta":
                position = self._tool_index.get(int(data.get("index", 0)), 0)
                args = {"index": position, "function": {"arguments": delta.get("partial_json", "")}}
                return [self._chunk({"tool_calls": [args]})]
            return []
        if kind == "message_delta":
            delta = data.get("delta") or {}
            self._finish = stop_reason_to_finish_reason(delta.get("stop_reason"))
            self._usage.update(
                {k: v for k, v in (data.get("usage") or {}).items() if v is not None}
            )
            return []
        if kind == "message_stop":
            out = [self._chunk({}, self._finish or "stop")]
            if self.include_usage:
                usage = anthropic_usage_to_openai(self._usage)
                out.append(encode_event({**self._base, "choices": [], "usage": usage}))
            out.append(DONE)
            return out
        return []


class OpenAIToAnthropicStream:
    """Translate a live ``chat.completion.chunk`` stream into Anthropic events.

    The final ``message_delta`` (stop reason and usage) is sent when the upstream stream ends,
    because OpenAI reports usage in a chunk after the one carrying ``finish_reason``.
    """

    def __init__(self) -> None:
        self._started = False
        self._index = -1
        self._open: str | None = None  # "text" | "tool:<n>"
        self._finish: str | None = None
        self._usage: dict[str, Any] | None = None
        self._done = False

    def _start(self, chunk: dict[str, Any]) -> bytes:
        self._started = True
        cmpl_id = str(chunk.get("id") or uuid.uuid4().hex)
        message = {
            "id": f"msg_{cmpl_id.removeprefix('chatcmpl-')}",
            "type": "message",
            "role": "assistant",
            "model": chunk.get("model", ""),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return encode_event({"type": "message_start", "message": message}, "message_start")

    def _close(self) -> list[bytes]:
        if self._open is None:
            return []
        self._open = None
        return [
            encode_event({"type": "content_block_stop", "index": self._index}, "content_block_stop")
        ]

    def _open_block(self, key: str, block: dict[str, Any]) -> list[bytes]:
        out = self._close()
        self._index += 1
        self._open = key
        out.append(
            encode_event(
                {"type": "content_block_start", "index": self._index, "content_block": block},
                "content_block_start",
            )
        )
        return out

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return encode_event(
            {"type": "content_block_delta", "index": self._index, "delta": delta},
            "content_block_delta",
        )

    def feed(self, chunk: dict[str, Any]) -> list[bytes]:
        """Events to send for one OpenAI chunk (possibly none)."""
        out: list[bytes] = []
        if not self._started:
            out.append(self._start(chunk))
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content") or delta.get("refusal")
            if text:
                if self._open != "text":
                    out += self._open_block("text", {"type": "text", "text": ""})
                out.append(self._delta({"type": "text_delta", "text": text}))
            for call in delta.get("tool_calls") or ():
                key = f"tool:{call.get('index', 0)}"
                function = call.get("function") or {}
                if self._open != key:
                    block: dict[str, Any] = {
                        "type": "tool_use",
                        "id": call.get("id") or f"toolu_{uuid.uuid4().hex[:24]}",
                        "name": function.get("name") or "",
                        "input": {},
                    }
                    out += self._open_block(key, block)
                if function.get("arguments"):
                    out.append(
                        self._delta(
                            {"type": "input_json_delta", "partial_json": function["arguments"]}
                        )
                    )
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return out

    def finish(self) -> list[bytes]:
        """The closing events, once the upstream stream has ended."""
        if self._done:
            return []
        self._done = True
        out = [] if self._started else [self._start({})]
        out += self._close()
        usage = openai_usage_to_anthropic(self._usage)
        delta = {"stop_reason": finish_reason_to_stop_reason(self._finish), "stop_sequence": None}
        out.append(
            encode_event({"type": "message_delta", "delta": delta, "usage": usage}, "message_delta")
        )
        out.append(encode_event({"type": "message_stop"}, "message_stop"))
        return out
