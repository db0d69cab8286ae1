"""Gateway dialects: request views, field-naming errors, error shapes, translation, SSE."""

from __future__ import annotations

import json
from typing import Any

import pytest
from anthropic.types import Message as AnthropicMessageType
from hypothesis import given
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion

from tierwise.gateway.dialects import (
    RequestError,
    anthropic_usage_to_openai,
    error_body,
    neutral_stop_reason,
    openai_usage_to_anthropic,
)
from tierwise.gateway.schema import MAX_DEPTH, parse_request
from tierwise.gateway.sse import (
    AnthropicCollector,
    AnthropicToOpenAIStream,
    OpenAICollector,
    OpenAIToAnthropicStream,
    SSEDecoder,
    anthropic_stream,
    openai_stream,
)
from tierwise.gateway.translate import (
    anthropic_message_to_openai,
    anthropic_request_to_openai,
    openai_completion_to_anthropic,
    openai_request_to_anthropic,
)


def _body(data: Any) -> bytes:
    return json.dumps(data).encode()


ANTHROPIC_OK = {
    "model": "tierwise/auto",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "hi"}],
}
OPENAI_OK = {"model": "tierwise/auto", "messages": [{"role": "user", "content": "hi"}]}


# -- views -------------------------------------------------------------------------------------


def test_unknown_fields_are_kept_in_the_forwarded_body() -> None:
    body = {**ANTHROPIC_OK, "cache_control": {"type": "ephemeral"}, "brand_new_field": [1, 2]}
    data = parse_request("anthropic", _body(body))
    assert data == body


@pytest.mark.parametrize(
    ("dialect", "body", "field", "words"),
    [
        ("anthropic", {**ANTHROPIC_OK, "max_tokens": "100"}, "max_tokens", "integer"),
        ("anthropic", {"model": "m", "messages": []}, "max_tokens", "missing"),
        (
            "anthropic",
            {**ANTHROPIC_OK, "messages": [{"role": "bot", "content": "x"}]},
            "messages[0].role",
            "'user', 'assistant'",
        ),
        (
            "anthropic",
            {**ANTHROPIC_OK, "messages": [{"role": "user", "content": 5}]},
            "messages[0].content",
            "string",
        ),
        (
            "anthropic",
            {
                **ANTHROPIC_OK,
                "messages": [
                    {"role": "user", "content": [{"type": "tool_use", "id": "a", "input": {}}]}
                ],
            },
            "messages[0].content[0].name",
            "missing",
        ),
        ("openai", {"messages": [{"role": "user", "content": "x"}]}, "model", "missing"),
        ("openai", {**OPENAI_OK, "messages": []}, "messages", "at least 1"),
        (
            "openai",
            {**OPENAI_OK, "messages": [{"role": "tool", "content": "x"}]},
            "messages[0].tool_call_id",
            "missing",
        ),
        (
            "openai",
            {**OPENAI_OK, "stream_options": {"include_usage": "yes"}},
            "stream_options.include_usage",
            "boolean",
        ),
        (
            "openai",
            {**OPENAI_OK, "tools": [{"type": "function", "function": {"parameters": {}}}]},
            "tools[0].function.name",
            "missing",
        ),
    ],
)
def test_bad_fields_are_named_in_the_400_message(
    dialect: Any, body: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(RequestError) as info:
        parse_request(dialect, _body(body))
    assert info.value.status == 400
    assert info.value.message.startswith(f"{field}: ")
    assert words in info.value.message
    assert info.value.param == field


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\xff\xfe", b""])
def test_malformed_bodies_are_refused(raw: bytes) -> None:
    with pytest.raises(RequestError, match="JSON"):
        parse_request("openai", raw)


def test_error_bodies_have_each_dialects_exact_shape() -> None:
    a = error_body("anthropic", 401, "no key")
    assert a == {"type": "error", "error": {"type": "authentication_error", "message": "no key"}}
    o = error_body("openai", 400, "bad", param="messages[0]")
    assert o == {
        "error": {
            "message": "bad",
            "type": "invalid_request_error",
            "param": "messages[0]",
            "code": None,
        }
    }
    assert error_body("anthropic", 413, "x")["error"]["type"] == "request_too_large"
    assert error_body("openai", 502, "x")["error"]["type"] == "server_error"


def test_stop_reasons_map_to_the_neutral_vocabulary() -> None:
    assert neutral_stop_reason("anthropic", "tool_use") == "tool_use"
    assert neutral_stop_reason("openai", "length") == "max_tokens"
    assert neutral_stop_reason("openai", None) == "other"


@given(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6))
def test_usage_translation_preserves_totals(inp: int, write: int, read: int, out: int) -> None:
    anthropic = {
        "input_tokens": inp,
        "cache_creation_input_tokens": write,
        "cache_read_input_tokens": read,
        "output_tokens": out,
    }
    openai = anthropic_usage_to_openai(anthropic)
    assert openai["prompt_tokens"] == inp + write + read
    assert openai["total_tokens"] == inp + write + read + out
    back = openai_usage_to_anthropic(openai)
    assert back["input_tokens"] == inp + write  # cache writes are not distinguished by OpenAI
    assert back["cache_read_input_tokens"] == read
    assert back["output_tokens"] == out


# -- request translation ---------------------------------------------------------------------

ANTHROPIC_TOOLS_BODY: dict[str, Any] = {
    "model": "claude-x",
    "max_tokens": 300,
    "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
    "temperature": 0.2,
    "stop_sequences": ["END"],
    "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
    "tools": [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather in Paris?"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
                },
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C sunny"},
                {"type": "text", "text": "Thanks, and?"},
            ],
        },
    ],
    "stream": True,
}


def test_anthropic_request_translates_to_openai() -> None:
    out = anthropic_request_to_openai(ANTHROPIC_TOOLS_BODY)
    msgs = out["messages"]
    assert msgs[0] == {"role": "system", "content": "Be brief."}
    assert msgs[1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,AAAA"},
    }
    assert msgs[2]["tool_calls"][0]["id"] == "toolu_1"
    assert json.loads(msgs[2]["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
    assert msgs[3] == {"role": "tool", "tool_call_id": "toolu_1", "content": "18C sunny"}
    assert msgs[4] == {"role": "user", "content": "Thanks, and?"}
    assert out["tools"][0]["function"]["parameters"]["properties"]["city"] == {"type": "string"}
    assert out["tool_choice"] == "required"
    assert out["parallel_tool_calls"] is False
    assert out["stop"] == ["END"]
    assert out["max_completion_tokens"] == 300
    assert out["stream_options"] == {"include_usage": True}


def test_request_round_trip_keeps_the_conversation() -> None:
    there = anthropic_request_to_openai(ANTHROPIC_TOOLS_BODY)
    back = openai_request_to_anthropic(there, max_tokens=1)
    assert back["system"] == "Be brief."
    assert back["max_tokens"] == 300
    assert back["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert back["tools"][0]["input_schema"] == ANTHROPIC_TOOLS_BODY["tools"][0]["input_schema"]
    roles = [m["role"] for m in back["messages"]]
    assert roles == ["user", "assistant", "user"]
    assert back["messages"][0]["content"][1]["source"] == {
        "type": "base64",
        "media_type": "image/png",
        "data": "AAAA",
    }
    assert back["messages"][1]["content"][1] == ANTHROPIC_TOOLS_BODY["messages"][1]["content"][1]
    assert back["messages"][2]["content"][0] == {
        "type": "tool_result",
        "tool_use_id": "toolu_1",
        "content": "18C sunny",
    }


def test_openai_request_without_max_tokens_gets_the_tier_default() -> None:
    body = {
        "model": "gpt",
        "messages": [
            {"role": "developer", "content": "Rules."},
            {"role": "user", "content": "hi"},
        ],
        "temperature": 1.7,
        "stop": "X",
    }
    out = openai_request_to_anthropic(body, max_tokens=512)
    assert out["max_tokens"] == 512
    assert out["system"] == "Rules."
    assert out["temperature"] == 1.0
    assert out["stop_sequences"] == ["X"]


def test_untranslatable_parts_are_a_400_naming_them() -> None:
    body = {**ANTHROPIC_OK, "tools": [{"type": "web_search_20250305", "name": "web_search"}]}
    with pytest.raises(RequestError, match=r"tools\[0\]"):
        anthropic_request_to_openai(body)
    bad_args = {
        "model": "m",
        "messages": [
            {
                "role": "assistant",
                "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{oops"}}],
            }
        ],
    }
    with pytest.raises(RequestError, match=r"tool_calls\[0\]\.function\.arguments"):
        openai_request_to_anthropic(bad_args, max_tokens=10)


# -- response translation --------------------------------------------------------------------

ANTHROPIC_REPLY: dict[str, Any] = {
    "id": "msg_abc",
    "type": "message",
    "role": "assistant",
    "model": "claude-x",
    "content": [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "toolu_9", "name": "lookup", "input": {"q": "x", "n": 2}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 11,
        "output_tokens": 7,
        "cache_read_input_tokens": 5,
        "cache_creation_input_tokens": 0,
    },
}

OPENAI_REPLY: dict[str, Any] = {
    "id": "chatcmpl-xyz",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-x",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": '{"q": "y"}'},
                    }
                ],
            },
            "finish_reason": "tool_calls",
            "logprobs": None,
        }
    ],
    "usage": {
        "prompt_tokens": 20,
        "completion_tokens": 4,
        "total_tokens": 24,
        "prompt_tokens_details": {"cached_tokens": 8},
    },
}


def test_anthropic_reply_becomes_a_valid_chat_completion() -> None:
    out = anthropic_message_to_openai(ANTHROPIC_REPLY)
    parsed = ChatCompletion.model_validate(out)
    choice = parsed.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me look."
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.id == "toolu_9"
    assert json.loads(call.function.arguments) == {"q": "x", "n": 2}  # type: ignore[union-attr]
    assert parsed.usage is not None and parsed.usage.prompt_tokens == 16


def test_openai_reply_becomes_a_valid_anthropic_message() -> None:
    out = openai_completion_to_anthropic(OPENAI_REPLY)
    parsed = AnthropicMessageType.model_validate(out)
    assert parsed.stop_reason == "tool_use"
    block = parsed.content[0]
    assert block.type == "tool_use"
    assert block.input == {"q": "y"}
    assert block.id == "call_1"
    assert parsed.usage.input_tokens == 12
    assert parsed.usage.cache_read_input_tokens == 8


# -- SSE -------------------------------------------------------------------------------------


def _decode_all(chunks: list[bytes]) -> list[Any]:
    decoder = SSEDecoder()
    events = []
    for c in chunks:
        events += decoder.feed(c)
    events += decoder.flush()
    return events


def test_anthropic_stream_of_a_message_collects_back_to_it() -> None:
    events = _decode_all(list(anthropic_stream(ANTHROPIC_REPLY)))
    names = [e.event for e in events]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    collector = AnthropicCollector()
    for e in events:
        collector.feed(e.json())
    assert collector.finished
    assert collector.result() == ANTHROPIC_REPLY


def test_openai_stream_of_a_completion_collects_back_to_it() -> None:
    raw = list(openai_stream(OPENAI_REPLY, include_usage=True))
    assert raw[-1] == b"data: [DONE]\n\n"
    collector = OpenAICollector()
    for e in _decode_all(raw):
        if e.data != "[DONE]":
            collector.feed(e.json())
    assert collector.result() == OPENAI_REPLY


def test_openai_stream_without_usage_has_no_usage_chunk() -> None:
    events = _decode_all(list(openai_stream(OPENAI_REPLY, include_usage=False)))
    assert all("usage" not in e.json() for e in events if e.data != "[DONE]")


def test_live_anthropic_to_openai_translation_matches_the_buffered_one() -> None:
    translator = AnthropicToOpenAIStream(include_usage=True)
    out: list[bytes] = []
    for e in _decode_all(list(anthropic_stream(ANTHROPIC_REPLY))):
        out += translator.feed(e.json())
    collector = OpenAICollector()
    for e in _decode_all(out):
        if e.data != "[DONE]":
            collector.feed(e.json())
    got, want = collector.result(), anthropic_message_to_openai(ANTHROPIC_REPLY)
    assert got["choices"][0]["message"]["tool_calls"] == want["choices"][0]["message"]["tool_calls"]
    assert got["choices"][0]["message"]["content"] == want["choices"][0]["message"]["content"]
    assert got["choices"][0]["finish_reason"] == "tool_calls"
    assert got["usage"] == want["usage"]
    assert out[-1] == b"data: [DONE]\n\n"


def test_live_openai_to_anthropic_translation_matches_the_buffered_one() -> None:
    reply = json.loads(json.dumps(OPENAI_REPLY))
    reply["choices"][0]["message"]["content"] = "Sure."
    translator = OpenAIToAnthropicStream()
    out: list[bytes] = []
    for e in _decode_all(list(openai_stream(reply, include_usage=True))):
        if e.data != "[DONE]":
            out += translator.feed(e.json())
    out += translator.finish()
    collector = AnthropicCollector()
    for e in _decode_all(out):
        collector.feed(e.json())
    want = openai_completion_to_anthropic(reply)
    got = collector.result()
    assert got["content"] == want["content"]
    assert got["stop_reason"] == "tool_use"
    assert got["usage"]["input_tokens"] == want["usage"]["input_tokens"]
    assert got["usage"]["output_tokens"] == want["usage"]["output_tokens"]


@given(st.lists(st.integers(1, 40), min_size=1, max_size=30), st.booleans())
def test_sse_decoder_is_independent_of_chunking(cuts: list[int], crlf: bool) -> None:
    wire = b"".join(anthropic_stream(ANTHROPIC_REPLY)) + b": tierwise {}\n\n"
    if crlf:
        wire = wire.replace(b"\n", b"\r\n")
    chunks, pos = [], 0
    for n in cuts:
        chunks.append(wire[pos : pos + n])
        pos += n
    chunks.append(wire[pos:])
    whole = [(e.event, e.data) for e in _decode_all([wire])]
    split = [(e.event, e.data) for e in _decode_all(chunks)]
    assert split == whole
    assert len(whole) == 9  # the comment is not an event


@pytest.mark.parametrize("levels", [MAX_DEPTH - 1, MAX_DEPTH])
def test_nesting_is_refused_exactly_past_the_limit(levels: int) -> None:
    """Objects *levels* deep in an unknown field, inside the body's own object."""
    inner: Any = {}
    for _ in range(levels - 1):
        inner = {"a": inner}
    raw = json.dumps({**ANTHROPIC_OK, "brand_new_field": inner}).encode()
    if levels + 1 <= MAX_DEPTH:
        assert parse_request("anthropic", raw)["brand_new_field"] == inner
    else:
        with pytest.raises(RequestError, match="nests deeper"):
            parse_request("anthropic", raw)
