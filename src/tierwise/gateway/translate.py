"""Translate requests and responses between the Anthropic Messages and OpenAI Chat dialects.

Used only when the tier that serves a request speaks the other dialect; otherwise the caller's
body goes upstream untouched (model replaced). What has a counterpart is translated — system,
messages, images, tools, tool calls and results, tool choice, stop sequences, sampling
settings, stop reasons and usage; fields with no counterpart in the other API are dropped
rather than sent to an upstream that would refuse them.

Every function takes and returns plain JSON-shaped ``dict``\\s and expects bodies that passed
the dialect's view (:func:`tierwise.gateway.dialects.parse_request`); what still cannot be
expressed in the other dialect raises :class:`~tierwise.gateway.dialects.RequestError`.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from tierwise.gateway.dialects import (
    RequestError,
    anthropic_usage_to_openai,
    finish_reason_to_stop_reason,
    openai_usage_to_anthropic,
    stop_reason_to_finish_reason,
)

__all__ = [
    "anthropic_message_to_openai",
    "anthropic_request_to_openai",
    "openai_completion_to_anthropic",
    "openai_request_to_anthropic",
    "text_of_anthropic_content",
    "text_of_openai_content",
]

_SAMPLING = ("temperature", "top_p")


# -- text helpers ------------------------------------------------------------------------------


def text_of_anthropic_content(content: Any) -> str:
    """The plain text of an Anthropic ``content`` (a string or a list of blocks)."""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content or ():
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        elif block.get("type") == "tool_result":
            parts.append(text_of_anthropic_content(block.get("content") or ""))
    return "\n".join(p for p in parts if p)


def text_of_openai_content(content: Any) -> str:
    """The plain text of an OpenAI ``content`` (a string, a list of parts, or ``None``)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(
        str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text"
    )


# -- Anthropic request → OpenAI request --------------------------------------------------------


def _image_block_to_part(block: dict[str, Any]) -> dict[str, Any]:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    elif source.get("type") == "url":
        url = str(source.get("url", ""))
    else:
        raise RequestError(
            f"an image with source type {source.get('type')!r} cannot be sent to an "
            "OpenAI-compatible tier"
        )
    return {"type": "image_url", "image_url": {"url": url}}


def _document_block_to_part(block: dict[str, Any]) -> dict[str, Any]:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        data = f"data:{source.get('media_type', 'application/pdf')};base64,{source.get('data')}"
        return {"type": "file", "file": {"file_data": data, "filename": "document.pdf"}}
    if source.get("type") == "text":
        return {"type": "text", "text": str(source.get("data", ""))}
    raise RequestError(
        f"a document with source type {source.get('type')!r} cannot be sent to an "
        "OpenAI-compatible tier"
    )


def _tool_result_content(block: dict[str, Any]) -> str:
    text = text_of_anthropic_content(block.get("content") or "")
    if block.get("is_error"):
        return f"[tool error] {text}"
    return text


def _anthropic_message_to_openai(message: dict[str, Any], index: int) -> list[dict[str, Any]]:
    role = message["role"]
    content = message["content"]
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if role == "assistant":
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        for block in content:
            kind = block.get("type")
            if kind == "text":
                texts.append(block["text"])
            elif kind == "tool_use":
                calls.append(
                    {
                        "id": block["id"],
                        "type": "function",
                        "function": {
                            "name": block["name"],
                            "arguments": json.dumps(block["input"]),
                        },
                    }
                )
            # thinking / redacted_thinking blocks have no counterpart and are dropped
        out: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
        if calls:
            out["tool_calls"] = calls
        return [out]
    tool_messages: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        kind = block.get("type")
        if kind == "tool_result":
            tool_messages.append(
                {
                    "role": "tool",
                    "tool_call_id": block["tool_use_id"],
                    "content": _tool_result_content(block),
                }
            )
        elif kind == "text":
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            parts.append(_image_block_to_part(block))
        elif kind == "document":
            parts.append(_document_block_to_part(block))
        else:
            raise RequestError(
                f"messages[{index}].content[{j}]: a {kind} block cannot be sent to an "
                "OpenAI-compatible tier",
                param=f"messages[{index}].content[{j}]",
            )
    # Tool results must directly follow the assistant turn that made the calls.
    out_messages = list(tool_messages)
    if parts:
        only_text = all(p["type"] == "text" for p in parts)
        user_content: Any = "\n".join(p["text"] for p in parts) if only_text else parts
        out_messages.append({"role": "user", "content": user_content})
    return out_messages


def _anthropic_tool_to_openai(tool: dict[str, Any], index: int) -> dict[str, Any]:
    if tool.get("type") not in (None, "custom") or "input_schema" not in tool:
        raise RequestError(
            f"tools[{index}]: the server tool {tool.get('type')!r} cannot be served by an "
            "OpenAI-compatible tier",
            param=f"tools[{index}]",
        )
    function: dict[str, Any] = {"name": tool["name"], "parameters": tool["input_schema"]}
    if tool.get("description"):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _anthropic_tool_choice_to_openai(choice: dict[str, Any]) -> Any:
    kind = choice.get("type")
    if kind == "any":
        return "required"
    if kind == "tool":
        return {"type": "function", "function": {"name": choice.get("name")}}
    if kind == "none":
        return "none"
    return "auto"


def anthropic_request_to_openai(body: dict[str, Any]) -> dict[str, Any]:
    """A Messages API request body as a Chat Completions request body.

    The system prompt becomes the first message, ``tool_result`` blocks become ``tool``
    messages, ``tool_use`` blocks become ``tool_calls``, images become ``image_url`` parts.
    A streamed request asks for the final usage chunk so the answer can be priced.
    """
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        messages.append({"role": "system", "content": text_of_anthropic_content(system)})
    for i, message in enumerate(body["messages"]):
        messages.extend(_anthropic_message_to_openai(message, i))
    out: dict[str, Any] = {
        "model": body["model"],
        "messages": messages,
        "max_completion_tokens": body["max_tokens"],
    }
    for key in _SAMPLING:
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("stop_sequences"):
        out["stop"] = body["stop_sequences"]
    if body.get("tools"):
        out["tools"] = [_anthropic_tool_to_openai(t, i) for i, t in enumerate(body["tools"])]
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        out["tool_choice"] = _anthropic_tool_choice_to_openai(choice)
        if choice.get("disable_parallel_tool_use") and out.get("tools"):
            out["parallel_tool_calls"] = False
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        out["user"] = metadata["user_id"]
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


# -- OpenAI request → Anthropic request --------------------------------------------------------


def _data_url(url: str) -> tuple[str, str] | None:
    """``data:image/png;base64,AAAA`` → ``("image/png", "AAAA")``."""
    if not url.startswith("data:") or ";base64," not in url:
        return None
    head, data = url[5:].split(";base64,", 1)
    return head, data


def _openai_part_to_block(part: dict[str, Any], where: str) -> dict[str, Any]:
    kind = part.get("type")
    if kind == "text":
        return {"type": "text", "text": part["text"]}
    if kind == "image_url":
        url = str(part["image_url"].get("url", ""))
        parsed = _data_url(url)
        if parsed is not None:
            media, data = parsed
            return {
                "type": "image",
                "source": {"type": "base64", "media_type": media, "data": data},
            }
        return {"type": "image", "source": {"type": "url", "url": url}}
    if kind == "file":
        file = part.get("file") or {}
        parsed = _data_url(str(file.get("file_data", "")))
        if parsed is not None:
            media, data = parsed
            return {
                "type": "document",
                "source": {"type": "base64", "media_type": media, "data": data},
            }
    raise RequestError(f"{where}: a {kind} part cannot be sent to an Anthropic tier", param=where)


def _openai_content_to_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return [_openai_part_to_block(p, f"{where}[{j}]") for j, p in enumerate(content)]


def _openai_tool_to_anthropic(tool: dict[str, Any], index: int) -> dict[str, Any]:
    function = tool.get("function")
    if tool.get("type") != "function" or not isinstance(function, dict):
        raise RequestError(
            f"tools[{index}]: a {tool.get('type')!r} tool cannot be served by an Anthropic tier",
            param=f"tools[{index}]",
        )
    out: dict[str, Any] = {
        "name": function["name"],
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if function.get("description"):
        out["description"] = function["description"]
    return out


def _openai_tool_choice_to_anthropic(choice: Any) -> dict[str, Any] | None:
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if choice == "auto":
        return {"type": "auto"}
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return {"type": "tool", "name": choice["function"].get("name")}
    return None


def _append_turn(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Add blocks as a turn, merging into the previous turn of the same role."""
    if not blocks:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
    else:
        turns.append({"role": role, "content": blocks})


def openai_request_to_anthropic(body: dict[str, Any], *, max_tokens: int) -> dict[str, Any]:
    """A Chat Completions request body as a Messages API request body.

    System and developer messages become the system prompt; ``tool`` messages become
    ``tool_result`` blocks in a user turn; assistant ``tool_calls`` become ``tool_use`` blocks.
    *max_tokens* is used when the caller gave neither ``max_tokens`` nor
    ``max_completion_tokens`` (the Messages API requires it).
    """
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(body["messages"]):
        role = message["role"]
        where = f"messages[{i}].content"
        if role in ("system", "developer"):
            system.append(text_of_openai_content(message.get("content")))
        elif role == "user":
            _append_turn(turns, "user", _openai_content_to_blocks(message.get("content"), where))
        elif role == "assistant":
            blocks = _openai_content_to_blocks(message.get("content"), where)
            if message.get("refusal") and not blocks:
                blocks = [{"type": "text", "text": str(message["refusal"])}]
            for j, call in enumerate(message.get("tool_calls") or ()):
                arguments = call["function"]["arguments"]
                try:
                    tool_input = json.loads(arguments) if arguments.strip() else {}
                except json.JSONDecodeError:
                    param = f"messages[{i}].tool_calls[{j}].function.arguments"
                    raise RequestError(f"{param}: not valid JSON", param=param) from None
                if not isinstance(tool_input, dict):
                    tool_input = {"value": tool_input}
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call["id"],
                        "name": call["function"]["name"],
                        "input": tool_input,
                    }
                )
            _append_turn(turns, "assistant", blocks)
        elif role == "tool":
            result = {
                "type": "tool_result",
                "tool_use_id": message["tool_call_id"],
                "content": text_of_openai_content(message.get("content")),
            }
            _append_turn(turns, "user", [result])
        else:
            raise RequestError(
                f"messages[{i}].role: the legacy role {role!r} cannot be sent to an Anthropic "
                "tier; use 'tool' messages",
                param=f"messages[{i}].role",
            )
    limit = body.get("max_completion_tokens") or body.get("max_tokens") or max_tokens
    out: dict[str, Any] = {"model": body["model"], "max_tokens": limit, "messages": turns}
    if any(system):
        out["system"] = "\n\n".join(s for s in system if s)
    temperature = body.get("temperature")
    if temperature is not None:
        out["temperature"] = min(float(temperature), 1.0)  # OpenAI's range is 0–2
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("tools"):
        out["tools"] = [_openai_tool_to_anthropic(t, i) for i, t in enumerate(body["tools"])]
        choice = _openai_tool_choice_to_anthropic(body.get("tool_choice"))
        if body.get("parallel_tool_calls") is False:
            choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
        if choice is not None:
            out["tool_choice"] = choice
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    if body.get("stream"):
        out["stream"] = True
    return out


# -- responses ---------------------------------------------------------------------------------


def anthropic_message_to_openai(message: dict[str, Any]) -> dict[str, Any]:
    """A Messages API response as a ``chat.completion`` object."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.get("content") or ():
        if block.get("type") == "text":
            texts.append(str(block.get("text", "")))
        elif block.get("type") == "tool_use":
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": json.dumps(block.get("input") or {}),
                    },
                }
            )
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if message.get("stop_reason") == "refusal":
        reply["refusal"] = reply["content"] or "refused"
    else:
        reply["refusal"] = None
    if calls:
        reply["tool_calls"] = calls
    msg_id = str(message.get("id") or uuid.uuid4().hex)
    return {
        "id": f"chatcmpl-{msg_id.removeprefix('msg_')}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": message.get("model", ""),
        "choices": [
            {
                "index": 0,
                "message": reply,
                "finish_reason": stop_reason_to_finish_reason(message.get("stop_reason")),
                "logprobs": None,
            }
        ],
        "usage": anthropic_usage_to_openai(message.get("usage")),
    }


def openai_completion_to_anthropic(completion: dict[str, Any]) -> dict[str, Any]:
    """A ``chat.completion`` object as a Messages API response."""
    choices = completion.get("choices") or [{}]
    choice = choices[0] or {}
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    text = text_of_openai_content(message.get("content"))
    if not text and message.get("refusal"):
        text = str(message["refusal"])
    if text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        arguments = function.get("arguments") or ""
        try:
            tool_input = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            tool_input = {"_raw_arguments": arguments}
        if not isinstance(tool_input, dict):
            tool_input = {"value": tool_input}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or f"toolu_{uuid.uuid4().hex[:24]}",
                "name": function.get("name", ""),
                "input": tool_input,
            }
        )
    stop = finish_reason_to_stop_reason(choice.get("finish_reason"))
    if message.get("refusal") and not message.get("content"):
        stop = "refusal"
    cmpl_id = str(completion.get("id") or uuid.uuid4().hex)
    return {
        "id": f"msg_{cmpl_id.removeprefix('chatcmpl-')}",
        "type": "message",
        "role": "assistant",
        "model": completion.get("model", ""),
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": openai_usage_to_anthropic(completion.get("usage")),
    }
