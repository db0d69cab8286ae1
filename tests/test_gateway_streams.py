"""Streaming through the gateway: live relay, buffered validation, usage, trailers and breaks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from tierwise.gateway import GatewayConfig
from tierwise.gateway.server import GatewayServer
from tierwise.gateway.sse import SSEDecoder
from tierwise.ledger import Ledger, open_ledger
from tierwise.policy import loads_policy
from tierwise.testing import FakeUpstream, ModelScript, count_tokens

CHEAP, MID, ALT = "claude-haiku-4-5", "gpt-4o-mini", "haiku-alt"

POLICY = """
version = 1

[[tiers]]
name = "cheap"
provider = "anthropic"
model = "{cheap}"
base_url = "{anthropic_url}"
api_key_env = "TW_TEST_KEY"
alternates = ["{alt}"]

[[tiers]]
name = "mid"
provider = "openai"
model = "{mid}"
base_url = "{openai_url}"
api_key_env = "TW_TEST_KEY"

[prices."{alt}"]
input = 1
output = 5

[retry]
attempts = 2
backoff_s = 0.0
max_backoff_s = 0.0

[validators.json]
type = "json"

[defaults]
doubt = "cheap"
validators = []

[kinds.chat]

[kinds.mid_chat]
floor = "mid"

[kinds.extract]
validators = ["json"]
stream = "buffer"
"""


@pytest.fixture(scope="module")
def gateway(
    fake_upstream_server: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayServer]:
    policy = loads_policy(
        POLICY.format(
            cheap=CHEAP,
            mid=MID,
            alt=ALT,
            anthropic_url=fake_upstream_server.base_url,
            openai_url=fake_upstream_server.openai_base_url,
        )
    )
    ledger = tmp_path_factory.mktemp("gws") / "ledger.db"
    config = GatewayConfig(policy=policy, ledger_url=str(ledger), env={"TW_TEST_KEY": "k"})
    with GatewayServer(config) as server:
        yield server


@pytest.fixture
def up(fake_upstream: FakeUpstream, gateway: GatewayServer) -> FakeUpstream:
    return fake_upstream


@pytest.fixture
def claude(gateway: GatewayServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gateway.base_url, api_key="unused", max_retries=0) as c:
        yield c


@pytest.fixture
def gpt(gateway: GatewayServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.openai_base_url, api_key="unused", max_retries=0) as c:
        yield c


@pytest.fixture
def ledger(gateway: GatewayServer) -> Iterator[Ledger]:
    assert gateway.config.ledger_url is not None
    with open_ledger(gateway.config.ledger_url, create=False) as book:
        yield book


def _raw_stream(gateway: GatewayServer, path: str, body: dict[str, Any]) -> tuple[Any, bytes]:
    """POST a streamed request and return (response headers, whole body bytes)."""
    with httpx2.Client(base_url=gateway.base_url) as client:
        response = client.post(path, json=body)
        return response.headers, response.content


def _trailer(wire: bytes) -> dict[str, Any]:
    lines = [line for line in wire.split(b"\n") if line.startswith(b": tierwise ")]
    assert len(lines) == 1, wire[-500:]
    return json.loads(lines[0][len(b": tierwise ") :])  # type: ignore[no-any-return]


def _events(wire: bytes) -> list[Any]:
    return SSEDecoder().feed(wire)


# -- live relay --------------------------------------------------------------------------------


def test_anthropic_stream_is_relayed_verbatim_and_priced(
    up: FakeUpstream, gateway: GatewayServer, claude: anthropic.Anthropic, ledger: Ledger
) -> None:
    up.set_script(CHEAP, ModelScript(chunks=5))
    with claude.messages.stream(
        model="tierwise/chat",
        max_tokens=100,
        messages=[{"role": "user", "content": "stream this sentence please"}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
        headers = stream.response.headers
    assert text == "stream this sentence please"
    assert headers["x-tierwise-tier"] == "cheap" and headers["x-tierwise-model"] == CHEAP
    assert final.usage.output_tokens == count_tokens(text)
    rows = ledger.attempts_of(headers["x-tierwise-task-id"])
    assert [r["outcome"] for r in rows] == ["accepted"]
    assert rows[0]["usage"]["output_tokens"] == count_tokens(text)
    assert rows[0]["cost_usd"] > 0


def test_stream_trailer_carries_cost_attempts_and_overhead(
    up: FakeUpstream, gateway: GatewayServer, ledger: Ledger
) -> None:
    headers, wire = _raw_stream(
        gateway,
        "/v1/messages",
        {
            "model": "tierwise/chat",
            "max_tokens": 50,
            "stream": True,
            "messages": [{"role": "user", "content": "trailer"}],
        },
    )
    trailer = _trailer(wire)
    assert trailer["task_id"] == headers["x-tierwise-task-id"]
    assert trailer["attempts"] == 1 and trailer["tier"] == "cheap"
    task = ledger.task(trailer["task_id"])
    assert task is not None and task["cost_usd"] == Decimal(trailer["cost_usd"])
    assert trailer["overhead_ms"] >= 0
    names = [e.event for e in _events(wire)]
    assert names[0] == "message_start" and names[-1] == "message_stop"


def test_openai_usage_chunk_only_when_the_client_asked(
    up: FakeUpstream, gateway: GatewayServer
) -> None:
    base = {
        "model": "tierwise/mid_chat",
        "stream": True,
        "messages": [{"role": "user", "content": "u"}],
    }
    _, without = _raw_stream(gateway, "/v1/chat/completions", base)
    sent = up.requests_for(MID)[-1].body
    assert sent["stream_options"] == {"include_usage": True}  # asked upstream regardless
    chunks = [json.loads(e.data) for e in _events(without) if e.data != "[DONE]"]
    assert not any(c.get("usage") for c in chunks)
    assert _trailer(without)["cost_usd"] != "0"
    assert without.rstrip().endswith(b"data: [DONE]")
    _, with_usage = _raw_stream(
        gateway, "/v1/chat/completions", {**base, "stream_options": {"include_usage": True}}
    )
    chunks = [json.loads(e.data) for e in _events(with_usage) if e.data != "[DONE]"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


@pytest.mark.parametrize("kind", ["chat", "mid_chat"])
def test_openai_stream_with_usage_in_either_upstream_dialect(
    up: FakeUpstream, gpt: openai.OpenAI, ledger: Ledger, kind: str
) -> None:
    stream = gpt.chat.completions.create(
        model=f"tierwise/{kind}",
        messages=[{"role": "user", "content": "count me"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    with stream:
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "count me"
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == count_tokens("count me")
    assert usage.prompt_tokens == count_tokens("count me")


def test_anthropic_client_streams_from_an_openai_tier(
    up: FakeUpstream, claude: anthropic.Anthropic
) -> None:
    with claude.messages.stream(
        model="tierwise/mid_chat",
        max_tokens=100,
        messages=[{"role": "user", "content": "translated live"}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "translated live"
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == count_tokens("translated live")
    assert final.usage.output_tokens == count_tokens("translated live")


# -- buffered validation -------------------------------------------------------------------------


def test_buffered_stream_escalates_before_streaming_the_accepted_answer(
    up: FakeUpstream, claude: anthropic.Anthropic, ledger: Ledger
) -> None:
    up.set_script(CHEAP, "invalid_json")
    up.set_script(MID, "json")
    with claude.messages.stream(
        model="tierwise/extract",
        max_tokens=200,
        messages=[{"role": "user", "content": "fields please"}],
    ) as stream:
        text = "".join(stream.text_stream)
        headers = stream.response.headers
    assert json.loads(text)["confidence"] == 0.92
    assert headers["x-tierwise-tier"] == "mid" and headers["x-tierwise-attempts"] == "2"
    assert headers["x-tierwise-escalations"] == "1"
    assert "x-tierwise-cost-usd" in headers  # known before the first byte when buffered
    rows = ledger.attempts_of(headers["x-tierwise-task-id"])
    assert [r["outcome"] for r in rows] == ["rejected", "accepted"]
    # the upstream calls were streamed too (collected, validated, then re-sent)
    assert up.requests_for(CHEAP)[-1].stream and up.requests_for(MID)[-1].stream


def test_buffered_openai_stream(up: FakeUpstream, gpt: openai.OpenAI) -> None:
    up.set_script(CHEAP, "json")
    stream = gpt.chat.completions.create(
        model="tierwise/extract",
        messages=[{"role": "user", "content": "b"}],
        stream=True,
    )
    with stream:
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert json.loads(text)["answer"] == "b"
    assert all(c.usage is None for c in chunks)


# -- failures --------------------------------------------------------------------------------


def test_stream_falls_back_to_the_alternate_before_any_byte(
    up: FakeUpstream, claude: anthropic.Anthropic, ledger: Ledger
) -> None:
    up.set_script(CHEAP, ModelScript(faults=("529:always",)))
    with claude.messages.stream(
        model="tierwise/chat", max_tokens=50, messages=[{"role": "user", "content": "fallback"}]
    ) as stream:
        text = "".join(stream.text_stream)
        headers = stream.response.headers
    assert text == "fallback"
    assert headers["x-tierwise-model"] == ALT
    rows = ledger.attempts_of(headers["x-tierwise-task-id"])
    assert [(r["model"], r["outcome"]) for r in rows] == [(CHEAP, "error"), (ALT, "accepted")]
    assert len(up.requests_for(CHEAP)) == 2  # retried, then moved on


def test_stream_break_after_bytes_is_an_error_event_and_a_partial_attempt(
    up: FakeUpstream, gateway: GatewayServer, claude: anthropic.Anthropic, ledger: Ledger
) -> None:
    up.set_script(CHEAP, ModelScript(faults=("cut",), chunks=8))
    with (
        pytest.raises(anthropic.APIStatusError, match="stream broke") as info,
        claude.messages.stream(
            model="tierwise/chat",
            max_tokens=100,
            messages=[{"role": "user", "content": "this stream will be cut half way"}],
        ) as stream,
    ):
        for _ in stream.text_stream:
            pass
    task_id = info.value.response.headers["x-tierwise-task-id"]
    rows = ledger.attempts_of(task_id)
    assert [r["outcome"] for r in rows] == ["partial"]
    assert rows[0]["usage"]["input_tokens"] > 0  # what message_start reported is still billed
    task = ledger.task(task_id)
    assert task is not None and task["outcome"] == "error"


def test_openai_stream_break_is_an_error_chunk(up: FakeUpstream, gpt: openai.OpenAI) -> None:
    up.set_script(MID, ModelScript(faults=("cut",), chunks=8))
    stream = gpt.chat.completions.create(
        model="tierwise/mid_chat",
        messages=[{"role": "user", "content": "this stream will be cut half way too"}],
        stream=True,
    )
    with pytest.raises(openai.APIError, match="stream broke"), stream:
        for _ in stream:
            pass
