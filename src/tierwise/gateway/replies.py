"""Is an upstream's 200 reply a valid answer in its dialect?

An upstream that answers 200 with something that is not a message — a string where the
content list should be, a tool call without a name, no choices — is treated like any other bad
reply: the attempt fails (``BadResponseError``, retried, then the next model or tier) instead
of reaching the caller, whose SDK would choke on it, or the ledger as an answer. The checks
cover what a caller's SDK and the gateway itself read; fields they do not read, and content
blocks of types newer than this code, pass.
"""

from __future__ import annotations

from typing import Any

from tierwise.gateway.dialects import Dialect

__all__ = ["MAX_BLOCKS", "reply_problem"]

#: More content blocks (or tool calls, or choices) than any real answer has.
MAX_BLOCKS = 4096


def reply_problem(dialect: Dialect, data: Any) -> str | None:
    """What is wrong with *data* as a complete answer, or ``None`` when it is a valid one."""
    if not isinstance(data, dict):
        return "the reply is not a JSON object"
    return _anthropic(data) if dialect == "anthropic" else _openai(data)


def _anthropic(data: dict[str, Any]) -> str | None:
    if data.get("type", "message") != "message":
        return f"type is {data.get('type')!r}, not 'message'"
    if data.get("role", "assistant") != "assistant":
        return f"role is {data.get('role')!r}, not 'assistant'"
    content = data.get("content")
    if not isinstance(content, list) or len(content) > MAX_BLOCKS:
        return "content is not a list of blocks"
    for i, block in enumerate(content):
        problem = _anthropic_block(block)
        if problem:
            return f"content[{i}]: {problem}"
    return _strings(data, "model", "stop_reason", "stop_sequence", "id") or _usage(data)


def _anthropic_block(block: Any) -> str | None:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        return "not a block with a type"
    kind = block["type"]
    if kind == "text" and not isinstance(block.get("text"), str):
        return "a text block without text"
    if kind in ("tool_use", "server_tool_use"):
        if not isinstance(block.get("name"), str) or not isinstance(block.get("id"), str):
            return "a tool call without an id and a name"
        if not isinstance(block.get("input"), dict):
            return "a tool call whose input is not an object"
    if kind == "thinking" and not isinstance(block.get("thinking"), str):
        return "a thinking block without text"
    return None


def _openai(data: dict[str, Any]) -> str | None:
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or len(choices) > MAX_BLOCKS:
        return "choices is not a non-empty list"
    for i, choice in enumerate(choices):
        problem = _openai_choice(choice)
        if problem:
            return f"choices[{i}]: {problem}"
    return _strings(data, "model", "id") or _usage(data)


def _openai_choice(choice: Any) -> str | None:
    if not isinstance(choice, dict):
        return "not an object"
    message = choice.get("message")
    if not isinstance(message, dict):
        return "message is not an object"
    content = message.get("content")
    if content is not None and not isinstance(content, str | list):
        return "message.content is neither text nor parts"
    if isinstance(content, list) and not all(
        isinstance(p, dict) and isinstance(p.get("type"), str) for p in content
    ):
        return "message.content holds a part without a type"
    if message.get("refusal") is not None and not isinstance(message["refusal"], str):
        return "message.refusal is not text"
    calls = message.get("tool_calls")
    if calls is not None:
        if not isinstance(calls, list) or len(calls) > MAX_BLOCKS:
            return "message.tool_calls is not a list"
        for j, call in enumerate(calls):
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                return f"message.tool_calls[{j}] has no function name"
            if not isinstance(function.get("arguments", ""), str):
                return f"message.tool_calls[{j}].function.arguments is not a string"
    return _strings(choice, "finish_reason")


def _strings(data: dict[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            return f"{key} is not a string"
    return None


def _usage(data: dict[str, Any]) -> str | None:
    usage = data.get("usage")
    if usage is not None and not isinstance(usage, dict):
        return "usage is not an object"
    return None
