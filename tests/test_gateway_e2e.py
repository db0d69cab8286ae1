"""The gateway end to end: official SDK clients → a real uvicorn server → the fake upstream.

The ladder mixes dialects — cheap and strong are Anthropic models, mid is OpenAI-compatible —
so the same requests exercise verbatim forwarding and translation both ways.
"""

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
from tierwise.ledger import Ledger, open_ledger
from tierwise.policy import loads_policy
from tierwise.testing import FakeUpstream, ModelScript, Reply, ToolCall, count_tokens

CHEAP, MID, STRONG, ALT = "claude-haiku-4-5", "gpt-4o-mini", "claude-opus-4-6", "haiku-alt"

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

[[tiers]]
name = "strong"
provider = "anthropic"
model = "{strong}"
base_url = "{anthropic_url}"
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

[validators.short]
type = "regex"
pattern = "^.{{0,400}}$"
mode = "fullmatch"

[frontier]
domains = ["security"]

[[frontier.rules]]
name = "cross-service"
when = {{ scope = "cross-service" }}

[defaults]
doubt = "cheap"
validators = []

[kinds.chat]
doubt = "cheap"

[kinds.extract]
doubt = "cheap"
validators = ["json"]

[kinds.extract_live]
doubt = "cheap"
validators = ["json"]
stream = "passthrough"

[kinds.mid_chat]
floor = "mid"

[kinds.hard]
floor = "strong"
"""


@pytest.fixture(scope="module")
def gateway(
    fake_upstream_server: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayServer]:
    policy = loads_policy(
        POLICY.format(
            cheap=CHEAP,
            mid=MID,
            strong=STRONG,
            alt=ALT,
            anthropic_url=fake_upstream_server.base_url,
            openai_url=fake_upstream_server.openai_base_url,
        )
    )
    ledger = tmp_path_factory.mktemp("gw") / "ledger.db"
    config = GatewayConfig(
        policy=policy,
        ledger_url=str(ledger),
        env={"TW_TEST_KEY": "sk-upstream-secret-1234567890"},
        max_body_bytes=64 * 1024,
    )
    with GatewayServer(config) as server:
        yield server


@pytest.fixture
def up(fake_upstream: FakeUpstream, gateway: GatewayServer) -> FakeUpstream:
    """The fake upstream, reset, with every ladder model echoing."""
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
    url = gateway.config.ledger_url
    assert url is not None
    with open_ledger(url, create=False) as book:
        yield book


def _tw(headers: Any) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.startswith("x-tierwise-")}


def _weather(request: dict[str, Any]) -> Reply:
    """A tool-using model: asks for the weather, then answers with the tool's result."""
    results: list[str] = []
    for m in request.get("messages", []):
        if m.get("role") == "tool":
            results.append(str(m.get("content")))
        if isinstance(m.get("content"), list):
            for block in m["content"]:
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    results.append(str(block.get("content")))
    if results:
        return Reply(f"It is {results[-1]} in Paris.")
    return Reply("Let me check.", tool_calls=(ToolCall("get_weather", {"city": "Paris"}),))


ANTHROPIC_TOOLS = [
    {
        "name": "get_weather",
        "description": "Current weather in a city",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]
OPENAI_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": ANTHROPIC_TOOLS[0]["input_schema"],
        },
    }
]


# -- plain calls -------------------------------------------------------------------------------


def test_anthropic_client_is_routed_and_metered(
    up: FakeUpstream, claude: anthropic.Anthropic, ledger: Ledger
) -> None:
    raw = claude.messages.with_raw_response.create(
        model="tierwise/chat",
        max_tokens=200,
        system="Be brief.",
        messages=[{"role": "user", "content": "hello gateway"}],
    )
    message = raw.parse()
    headers = _tw(raw.headers)
    assert message.content[0].type == "text" and message.content[0].text == "hello gateway"
    assert headers["x-tierwise-tier"] == "cheap"
    assert headers["x-tierwise-model"] == CHEAP
    assert headers["x-tierwise-attempts"] == "1"
    assert float(headers["x-tierwise-overhead-ms"]) >= 0
    task = ledger.task(headers["x-tierwise-task-id"])
    assert task is not None and task["outcome"] == "accepted"
    assert Decimal(headers["x-tierwise-cost-usd"]) == ledger.attempts_of(task["id"])[0]["cost_usd"]
    assert Decimal(headers["x-tierwise-cost-usd"]) > 0
    # the caller's body went upstream untouched but for the model
    sent = up.requests_for(CHEAP)[-1].body
    assert sent["system"] == "Be brief." and sent["max_tokens"] == 200
    assert message.usage.input_tokens == count_tokens("Be brief.") + count_tokens("hello gateway")


def test_openai_client_served_by_an_anthropic_tier(
    up: FakeUpstream, gpt: openai.OpenAI, ledger: Ledger
) -> None:
    raw = gpt.chat.completions.with_raw_response.create(
        model="tierwise/chat",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hello from openai"},
        ],
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "hello from openai"
    assert completion.choices[0].finish_reason == "stop"
    assert raw.headers["x-tierwise-model"] == CHEAP
    sent = up.requests_for(CHEAP)[-1]
    assert sent.api == "anthropic"
    assert sent.body["system"] == "Be brief."
    assert sent.body["max_tokens"] > 0  # the Messages API requires it; the caller gave none
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == count_tokens("Be brief.") + count_tokens(
        "hello from openai"
    )


def test_unknown_fields_pass_through_untouched(
    up: FakeUpstream, claude: anthropic.Anthropic
) -> None:
    claude.messages.create(
        model="tierwise/chat",
        max_tokens=50,
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}],
            }
        ],
        metadata={"user_id": "u-1"},
        extra_body={"a_field_from_the_future": {"x": [1, 2]}},
        extra_headers={"anthropic-beta": "some-beta-2099"},
    )
    sent = up.requests_for(CHEAP)[-1]
    assert sent.body["a_field_from_the_future"] == {"x": [1, 2]}
    assert sent.body["metadata"] == {"user_id": "u-1"}
    assert sent.body["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral"}
    assert sent.headers["anthropic-beta"] == "some-beta-2099"


def test_upstream_key_never_reaches_the_client(up: FakeUpstream, gateway: GatewayServer) -> None:
    up.set_script(STRONG, ModelScript(faults=("500:always",)))
    response = httpx2.post(
        f"{gateway.base_url}/v1/messages",
        json={
            "model": "tierwise/hard",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "x"}],
        },
    )
    assert response.status_code == 502
    assert "sk-upstream-secret" not in response.text
    assert "sk-upstream-secret" not in str(response.headers)


# -- escalation ------------------------------------------------------------------------------


def test_escalation_is_visible_in_the_headers(
    up: FakeUpstream, claude: anthropic.Anthropic, ledger: Ledger
) -> None:
    up.set_script(CHEAP, "invalid_json")
    up.set_script(MID, "json")
    raw = claude.messages.with_raw_response.create(
        model="tierwise/extract",
        max_tokens=200,
        messages=[{"role": "user", "content": "total of invoice 7"}],
    )
    message = raw.parse()
    assert json.loads(message.content[0].text)["confidence"] == 0.92  # type: ignore[union-attr]
    assert raw.headers["x-tierwise-tier"] == "mid"
    assert raw.headers["x-tierwise-model"] == MID
    assert raw.headers["x-tierwise-attempts"] == "2"
    assert raw.headers["x-tierwise-escalations"] == "1"
    rows = ledger.attempts_of(raw.headers["x-tierwise-task-id"])
    assert [(r["tier"], r["outcome"]) for r in rows] == [("cheap", "rejected"), ("mid", "accepted")]
    assert Decimal(raw.headers["x-tierwise-cost-usd"]) == sum(r["cost_usd"] for r in rows)
    # the mid tier saw the rejected answer and why, in its own dialect
    retry = up.requests_for(MID)[-1].body["messages"]
    assert retry[-2]["role"] == "assistant" and retry[-1]["role"] == "user"
    assert "rejected by an automatic check" in retry[-1]["content"]


def test_request_validators_header_adds_named_validators(
    up: FakeUpstream, gpt: openai.OpenAI
) -> None:
    up.set_script(CHEAP, ModelScript(reply="x" * 500))
    up.set_script(MID, ModelScript(reply="short"))
    raw = gpt.chat.completions.with_raw_response.create(
        model="tierwise/chat",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-tierwise-validators": "short"},
    )
    assert raw.parse().choices[0].message.content == "short"
    assert raw.headers["x-tierwise-tier"] == "mid"


def test_request_cannot_name_validators_the_policy_lacks(gpt: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="x-tierwise-validators") as info:
        gpt.chat.completions.create(
            model="tierwise/chat",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-tierwise-validators": "json, rm -rf /"},
        )
    assert "'rm -rf /'" in str(info.value)


def test_unknown_kind_falls_back_and_says_so(claude: anthropic.Anthropic) -> None:
    raw = claude.messages.with_raw_response.create(
        model="tierwise/no_such_kind",
        max_tokens=20,
        messages=[{"role": "user", "content": "hi"}],
    )
    assert "no_such_kind" in raw.headers["x-tierwise-kind-fallback"]
    assert raw.headers["x-tierwise-kind"] == "no_such_kind"
    known = claude.messages.with_raw_response.create(
        model="tierwise/auto",
        max_tokens=20,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-tierwise-kind": "chat"},
    )
    assert "x-tierwise-kind-fallback" not in known.headers
    assert known.headers["x-tierwise-kind"] == "chat"


def test_annotation_line_in_the_system_prompt_routes(
    up: FakeUpstream, claude: anthropic.Anthropic, ledger: Ledger
) -> None:
    raw = claude.messages.with_raw_response.create(
        model="tierwise/auto",
        max_tokens=20,
        system="[scope: cross-service] [domain: feature]\nYou are an agent.",
        messages=[{"role": "user", "content": "hi"}],
    )
    # the policy's frontier keeps cross-service work on the top tier
    assert raw.headers["x-tierwise-tier"] == "strong"
    task = ledger.task(raw.headers["x-tierwise-task-id"])
    assert task is not None and task["decision_step"] == "frontier"


# -- tools -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["chat", "mid_chat"])
def test_anthropic_tool_round_trip(
    up: FakeUpstream, claude: anthropic.Anthropic, kind: str
) -> None:
    """Against an Anthropic tier (verbatim) and an OpenAI tier (translated both ways)."""
    up.set_script(CHEAP, ModelScript(reply=_weather))
    up.set_script(MID, ModelScript(reply=_weather))
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    first = claude.messages.create(
        model=f"tierwise/{kind}", max_tokens=300, tools=ANTHROPIC_TOOLS, messages=messages
    )
    assert first.stop_reason == "tool_use"
    call = next(b for b in first.content if b.type == "tool_use")
    assert call.name == "get_weather" and call.input == {"city": "Paris"}
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18C"}],
        },
    ]
    second = claude.messages.create(
        model=f"tierwise/{kind}", max_tokens=300, tools=ANTHROPIC_TOOLS, messages=messages
    )
    assert second.content[0].text == "It is 18C in Paris."  # type: ignore[union-attr]
    if kind == "mid_chat":
        sent = up.requests_for(MID)[-1].body
        assert sent["tools"][0]["function"]["parameters"]["required"] == ["city"]
        assert sent["messages"][-1] == {"role": "tool", "tool_call_id": call.id, "content": "18C"}
        assert sent["messages"][-2]["tool_calls"][0]["id"] == call.id


@pytest.mark.parametrize("kind", ["chat", "mid_chat"])
def test_openai_tool_round_trip(up: FakeUpstream, gpt: openai.OpenAI, kind: str) -> None:
    """Against an Anthropic tier (translated both ways) and an OpenAI tier (verbatim)."""
    up.set_script(CHEAP, ModelScript(reply=_weather))
    up.set_script(MID, ModelScript(reply=_weather))
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    first = gpt.chat.completions.create(
        model=f"tierwise/{kind}", tools=OPENAI_TOOLS, messages=messages
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "21C"},
    ]
    second = gpt.chat.completions.create(
        model=f"tierwise/{kind}", tools=OPENAI_TOOLS, messages=messages
    )
    assert second.choices[0].message.content == "It is 21C in Paris."
    if kind == "chat":
        sent = up.requests_for(CHEAP)[-1].body
        assert sent["tools"][0]["input_schema"]["required"] == ["city"]
        assert sent["messages"][-1]["content"][0] == {
            "type": "tool_result",
            "tool_use_id": call.id,
            "content": "21C",
        }


@pytest.mark.parametrize("kind", ["chat", "mid_chat", "extract_live"])
def test_streamed_anthropic_tool_call(
    up: FakeUpstream, claude: anthropic.Anthropic, kind: str
) -> None:
    up.set_script(CHEAP, ModelScript(reply=_weather))
    up.set_script(MID, ModelScript(reply=_weather))
    with claude.messages.stream(
        model=f"tierwise/{kind}",
        max_tokens=300,
        tools=ANTHROPIC_TOOLS,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    block = next(b for b in final.content if b.type == "tool_use")
    assert block.input == {"city": "Paris"}
    assert final.usage.output_tokens > 0


@pytest.mark.parametrize("kind", ["chat", "mid_chat"])
def test_streamed_openai_tool_call(up: FakeUpstream, gpt: openai.OpenAI, kind: str) -> None:
    up.set_script(CHEAP, ModelScript(reply=_weather))
    up.set_script(MID, ModelScript(reply=_weather))
    with gpt.chat.completions.stream(
        model=f"tierwise/{kind}",
        tools=OPENAI_TOOLS,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        stream_options={"include_usage": True},
    ) as stream:
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert calls is not None
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.usage is not None and final.usage.completion_tokens > 0


# -- concrete models, model list ---------------------------------------------------------------


def test_concrete_model_is_passed_through_and_metered(
    up: FakeUpstream, claude: anthropic.Anthropic, ledger: Ledger
) -> None:
    up.set_script(CHEAP, "invalid_json")
    raw = claude.messages.with_raw_response.create(
        model=MID, max_tokens=50, messages=[{"role": "user", "content": "direct"}]
    )
    assert raw.parse().content[0].text == "direct"  # type: ignore[union-attr]
    assert raw.headers["x-tierwise-tier"] == "passthrough"  # never recorded as a ladder tier
    assert raw.headers["x-tierwise-attempts"] == "1"
    rows = ledger.attempts_of(raw.headers["x-tierwise-task-id"])
    assert [(r["model"], r["tier"], r["tier_index"]) for r in rows] == [(MID, "passthrough", -1)]
    assert rows[0]["cost_usd"] == Decimal(raw.headers["x-tierwise-cost-usd"]) > 0


def test_unknown_concrete_model_is_404(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError, match="not served by this gateway"):
        claude.messages.create(
            model="some-model-nobody-serves",
            max_tokens=5,
            messages=[{"role": "user", "content": "x"}],
        )


def test_models_list_in_both_shapes(claude: anthropic.Anthropic, gpt: openai.OpenAI) -> None:
    openai_ids = [m.id for m in gpt.models.list()]
    anthropic_ids = [m.id for m in claude.models.list()]
    assert openai_ids == anthropic_ids
    assert openai_ids[0] == "tierwise/auto"
    assert {"tierwise/chat", "tierwise/extract", CHEAP, MID, STRONG, ALT} <= set(openai_ids)


# -- bad input and upstream failure ------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/messages", b'{"model": "tierwise/auto", "max_tokens": 5, "messages": [', "body"),
        ("/v1/messages", b'{"model": "tierwise/auto", "messages": []}', "max_tokens"),
        (
            "/v1/messages",
            b'{"model": "tierwise/auto", "max_tokens": "5", "messages": []}',
            "max_tokens",
        ),
        ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "x"}]}', "model"),
        (
            "/v1/chat/completions",
            b'{"model": "tierwise/auto", "messages": [{"role": "user", "content": 3}]}',
            "messages[0].content",
        ),
    ],
)
def test_bad_requests_get_400_in_the_callers_shape(
    gateway: GatewayServer, path: str, body: bytes, field: str
) -> None:
    response = httpx2.post(f"{gateway.base_url}{path}", content=body)
    assert response.status_code == 400
    data = response.json()
    if path == "/v1/messages":
        assert data["type"] == "error"
        assert data["error"]["type"] == "invalid_request_error"
        message = data["error"]["message"]
    else:
        assert set(data["error"]) == {"message", "type", "param", "code"}
        message = data["error"]["message"]
    assert field in message


def test_sdk_sees_400_naming_the_field(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match=r"messages\[0\]\.role"):
        claude.messages.create(
            model="tierwise/chat",
            max_tokens=5,
            messages=[{"role": "robot", "content": "x"}],  # type: ignore[typeddict-item]
        )


def test_body_over_the_limit_is_413(claude: anthropic.Anthropic, gpt: openai.OpenAI) -> None:
    big = "x" * (70 * 1024)
    with pytest.raises(anthropic.APIStatusError) as info:
        claude.messages.create(
            model="tierwise/chat", max_tokens=5, messages=[{"role": "user", "content": big}]
        )
    assert info.value.status_code == 413
    with pytest.raises(openai.APIStatusError) as other:
        gpt.chat.completions.create(
            model="tierwise/chat", messages=[{"role": "user", "content": big}]
        )
    assert other.value.status_code == 413


def test_upstream_down_is_502_with_the_trail_id(
    up: FakeUpstream, claude: anthropic.Anthropic, ledger: Ledger
) -> None:
    up.set_script(STRONG, ModelScript(faults=("500:always",)))
    with pytest.raises(anthropic.InternalServerError) as info:
        claude.messages.create(
            model="tierwise/hard", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.status_code == 502
    task_id = info.value.response.headers["x-tierwise-task-id"]
    assert task_id in str(info.value)
    task = ledger.task(task_id)
    assert task is not None and task["outcome"] == "exhausted"
    assert [r["outcome"] for r in ledger.attempts_of(task_id)] == ["error"]
    assert len(up.requests_for(STRONG)) == 2  # retried per the policy, then gave up


# -- metrics -----------------------------------------------------------------------------------


def test_metrics_count_requests_attempts_escalations_cost(
    up: FakeUpstream, claude: anthropic.Anthropic, gateway: GatewayServer
) -> None:
    up.set_script(CHEAP, "invalid_json")
    up.set_script(MID, "json")
    claude.messages.create(
        model="tierwise/extract", max_tokens=100, messages=[{"role": "user", "content": "x"}]
    )
    text = httpx2.get(f"{gateway.base_url}/metrics").text
    assert 'tierwise_gateway_requests_total{dialect="anthropic",route="kind",status="200"}' in text
    assert 'tierwise_gateway_attempts_total{kind="extract",outcome="rejected",tier="cheap"}' in text
    assert 'tierwise_gateway_escalations_total{reason="json"}' in text
    assert 'tierwise_gateway_cost_usd_total{kind="extract",tier="mid"}' in text
    assert 'tierwise_gateway_tokens_total{bucket="output"}' in text
    assert "tierwise_gateway_overhead_seconds_bucket" in text


def test_healthz(gateway: GatewayServer) -> None:
    assert httpx2.get(f"{gateway.base_url}/healthz").json() == {"status": "ok"}


def test_no_body_bytes_is_a_named_400(gateway: GatewayServer) -> None:
    response = httpx2.post(f"{gateway.base_url}/v1/chat/completions", content=b"")
    assert response.status_code == 400
    assert "JSON" in response.json()["error"]["message"]


def test_an_upstream_400_on_a_passed_through_model_reaches_the_caller_as_400(
    up: FakeUpstream, claude: anthropic.Anthropic, ledger: Ledger
) -> None:
    up.set_script(STRONG, ModelScript(reply="never", faults=("400:always",)))
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(
            model=STRONG, max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.status_code == 400
    assert len(up.requests_for(STRONG)) == 1  # a bad request is not retried
    task_id = info.value.response.headers["x-tierwise-task-id"]
    rows = ledger.attempts_of(task_id)
    assert [r["outcome"] for r in rows] == ["error"]
    assert rows[0]["error_class"] == "BadRequestError"
