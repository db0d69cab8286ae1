"""The two provider APIs' wire shapes: response bodies, SSE streams and error bodies.

Shapes follow the real APIs (Anthropic Messages, OpenAI Chat Completions) closely enough that
each official SDK parses them with its own typed models.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from typing import Any

from tierwise.testing.script import ModelScript, Reply

_ANTHROPIC_STOP = {
    "end": "end_turn",
    "max_tokens": "max_tokens",
    "tool_use": "tool_use",
    "refusal": "refusal",
}
_OPENAI_FINISH = {
    "end": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

#: (status, Anthropic error type, OpenAI error type, OpenAI code, message)
ERRORS: dict[str, tuple[int, str, str, str | None, str]] = {
    "400": (400, "invalid_request_error", "invalid_request_error", None, "invalid request"),
    "401": (
        401,
        "authentication_error",
        "invalid_request_error",
        "invalid_api_key",
        "invalid x-api-key",
    ),
    "403": (
        403,
        "permission_error",
        "invalid_request_error",
        "permission_denied",
        "Your API key does not have permission to use this model (simulated).",
    ),
    "404": (404, "not_found_error", "invalid_request_error", "model_not_found", "model not found"),
    "429": (
        429,
        "rate_limit_error",
        "requests",
        "rate_limit_exceeded",
        "Number of requests has exceeded your rate limit (simulated).",
    ),
    "500": (500, "api_error", "server_error", None, "Internal server error (simulated)."),
    "503": (503, "api_error", "server_error", None, "Service unavailable (simulated)."),
    "529": (529, "overloaded_error", "server_error", "overloaded", "Overloaded (simulated)."),
}


def split_text(text: str, chunks: int) -> list[str]:
    """Split text into at most ``chunks`` non-empty consecutive pieces."""
    if not text:
        return []
    n = max(1, min(chunks, len(text)))
    size = -(-len(text) // n)
    return [text[i : i + size] for i in range(0, len(text), size)]


def _tool_id(reply_index: int, call_id: str | None, prefix: str) -> str:
    return call_id or f"{prefix}{reply_index:024x}"


# -- Anthropic ----------------------------------------------------------------------------------


def anthropic_usage(input_tokens: int, output_tokens: int, script: ModelScript) -> dict[str, Any]:
    """A Messages ``usage`` object: ``input_tokens`` excludes cache reads and writes."""
    writes = script.cache_write_tokens + script.cache_write_1h_tokens
    usage: dict[str, Any] = {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": writes,
        "cache_read_input_tokens": script.cache_read_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": script.cache_write_tokens,
            "ephemeral_1h_input_tokens": script.cache_write_1h_tokens,
        },
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }
    usage.update(script.usage)
    return usage


def _anthropic_blocks(reply: Reply) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if reply.text or not reply.tool_calls:
        blocks.append({"type": "text", "text": reply.text})
    for i, call in enumerate(reply.tool_calls):
        blocks.append(
            {
                "type": "tool_use",
                "id": _tool_id(i + 1, call.id, "toolu_"),
                "name": call.name,
                "input": dict(call.input),
            }
        )
    return blocks


def anthropic_message(
    msg_id: str, model: str, reply: Reply, usage: Mapping[str, Any]
) -> dict[str, Any]:
    """A complete Messages response body."""
    return {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": _anthropic_blocks(reply),
        "stop_reason": _ANTHROPIC_STOP[reply.stop_reason],
        "stop_sequence": None,
        "usage": dict(usage),
    }


def anthropic_events(
    msg_id: str, model: str, reply: Reply, usage: Mapping[str, Any], chunks: int
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The Messages SSE events, as (event name, data) pairs, for one reply.

    ``message_start`` carries the input side of usage with ``output_tokens`` 1; ``message_delta``
    carries the stop reason and the final (cumulative) ``output_tokens``.
    """
    start_usage = dict(usage)
    start_usage["output_tokens"] = 1
    yield (
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": msg_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": start_usage,
            },
        },
    )
    for index, block in enumerate(_anthropic_blocks(reply)):
        if block["type"] == "text":
            yield (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "text", "text": ""},
                },
            )
            if index == 0:
                yield "ping", {"type": "ping"}
            for piece in split_text(block["text"], chunks):
                yield (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "text_delta", "text": piece},
                    },
                )
        else:
            yield (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {
                        "type": "tool_use",
                        "id": block["id"],
                        "name": block["name"],
                        "input": {},
                    },
                },
            )
            for piece in split_text(json.dumps(block["input"]), chunks):
                yield (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": piece},
                    },
                )
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
    yield (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": _ANTHROPIC_STOP[reply.stop_reason], "stop_sequence": None},
            "usage": {"output_tokens": usage["output_tokens"]},
        },
    )
    yield "message_stop", {"type": "message_stop"}


def anthropic_error(kind: str, request_id: str, message: str | None = None) -> dict[str, Any]:
    """An Anthropic error body (``{"type": "error", "error": {...}}``)."""
    _, etype, _, _, default = ERRORS[kind]
    return {
        "type": "error",
        "error": {"type": etype, "message": message or default},
        "request_id": request_id,
    }


# -- OpenAI -------------------------------------------------------------------------------------


def openai_usage(input_tokens: int, output_tokens: int, script: ModelScript) -> dict[str, Any]:
    """A Chat Completions ``usage`` object: ``prompt_tokens`` includes the cached tokens.

    OpenAI bills no cache writes, so ``cache_write_*`` of the script are not reported here.
    """
    prompt = input_tokens + script.cache_read_tokens
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": output_tokens,
        "total_tokens": prompt + output_tokens,
        "prompt_tokens_details": {"cached_tokens": script.cache_read_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    usage.update(script.usage)
    return usage


def _openai_tool_calls(reply: Reply) -> list[dict[str, Any]]:
    return [
        {
            "id": _tool_id(i + 1, call.id, "call_"),
            "type": "function",
            "function": {"name": call.name, "arguments": json.dumps(dict(call.input))},
        }
        for i, call in enumerate(reply.tool_calls)
    ]


def openai_completion(
    cmpl_id: str, model: str, reply: Reply, usage: Mapping[str, Any]
) -> dict[str, Any]:
    """A complete Chat Completions response body."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": reply.text if (reply.text or not reply.tool_calls) else None,
        "refusal": None,
        "annotations": [],
    }
    if reply.tool_calls:
        message["tool_calls"] = _openai_tool_calls(reply)
    return {
        "id": cmpl_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _OPENAI_FINISH[reply.stop_reason],
            }
        ],
        "usage": dict(usage),
        "service_tier": "default",
        "system_fingerprint": "fp_tierwise_fake",
    }


def openai_chunks(
    cmpl_id: str,
    model: str,
    reply: Reply,
    usage: Mapping[str, Any],
    chunks: int,
    include_usage: bool,
) -> Iterator[dict[str, Any]]:
    """The Chat Completions stream chunks for one reply (``data: [DONE]`` not included).

    With ``include_usage`` every chunk has ``"usage": null`` and a last chunk with empty
    ``choices`` carries the usage, as ``stream_options.include_usage`` does upstream.
    """
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": cmpl_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_tierwise_fake",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            body["usage"] = None
        return body

    yield chunk({"role": "assistant", "content": "", "refusal": None}, None)
    for piece in split_text(reply.text, chunks):
        yield chunk({"content": piece}, None)
    for i, call in enumerate(_openai_tool_calls(reply)):
        pieces = split_text(call["function"]["arguments"], chunks)
        yield chunk(
            {
                "tool_calls": [
                    {
                        "index": i,
                        "id": call["id"],
                        "type": "function",
                        "function": {"name": call["function"]["name"], "arguments": ""},
                    }
                ]
            },
            None,
        )
        for piece in pieces:
            yield chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}, None)
    yield chunk({}, _OPENAI_FINISH[reply.stop_reason])
    if include_usage:
        yield {
            "id": cmpl_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_tierwise_fake",
            "choices": [],
            "usage": dict(usage),
        }


def openai_error(kind: str, message: str | None = None) -> dict[str, Any]:
    """An OpenAI error body (``{"error": {"message", "type", "param", "code"}}``)."""
    _, _, etype, code, default = ERRORS[kind]
    return {"error": {"message": message or default, "type": etype, "param": None, "code": code}}


def sse(event: str | None, data: Mapping[str, Any] | str) -> bytes:
    """One server-sent event, encoded."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()
