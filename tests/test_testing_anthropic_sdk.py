"""The fake upstream as the official ``anthropic`` SDK sees it: typed parsing, streams, faults."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import pytest

from tierwise.testing import REFUSAL_TEXT, FakeUpstream, Fault, ModelScript, Reply, ToolCall

PROMPT = "Extract the total from invoice 42: ACME Corp, 3 items, total 120.50 EUR."
SYSTEM = "You extract fields as JSON."


def tokens(text: str) -> int:
    """The fake's documented tokenizer, written independently: ceil(len / 4), at least 1."""
    return max(1, (len(text) + 3) // 4)


@pytest.fixture
def client(fake_upstream: FakeUpstream) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        base_url=fake_upstream.base_url, api_key="test", max_retries=0, timeout=5
    ) as c:
        yield c


def create(
    client: anthropic.Anthropic, model: str, max_tokens: int = 200
) -> anthropic.types.Message:
    return client.messages.create(
        model=model,
        max_tokens=max_tokens,
        system=SYSTEM,
        messages=[{"role": "user", "content": PROMPT}],
    )


def stream(client: anthropic.Anthropic, model: str, max_tokens: int = 200) -> Any:
    with client.messages.stream(
        model=model,
        max_tokens=max_tokens,
        system=SYSTEM,
        messages=[{"role": "user", "content": PROMPT}],
    ) as s:
        deltas = [e for e in s if e.type == "content_block_delta"]
        return s.get_final_message(), deltas


EXPECTED_TEXT = {
    "echo": PROMPT,
    "json": json.dumps({"answer": PROMPT, "confidence": 0.92}),
    "low_confidence": json.dumps({"answer": PROMPT, "confidence": 0.3}),
    "refusal": REFUSAL_TEXT,
}
EXPECTED_STOP = {"refusal": "refusal", "truncate": "max_tokens"}


@pytest.mark.parametrize("streamed", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize(
    "behaviour", ["echo", "json", "invalid_json", "low_confidence", "refusal", "truncate"]
)
def test_every_canned_behaviour_parses_with_exact_usage_and_cache_fields(
    fake_upstream: FakeUpstream, client: anthropic.Anthropic, behaviour: str, streamed: bool
) -> None:
    fake_upstream.set_script(
        "m",
        ModelScript(
            behaviour=behaviour,  # type: ignore[arg-type]
            cache_read_tokens=1500,
            cache_write_tokens=300,
            cache_write_1h_tokens=40,
        ),
    )
    if streamed:
        msg, deltas = stream(client, "m", max_tokens=60)
        assert len(deltas) > 1, "a stream sends several text deltas"
    else:
        msg = create(client, "m", max_tokens=60)
    text = "".join(b.text for b in msg.content if b.type == "text")
    assert msg.stop_reason == EXPECTED_STOP.get(behaviour, "end_turn")
    if behaviour in EXPECTED_TEXT:
        assert text == EXPECTED_TEXT[behaviour]
    if behaviour == "invalid_json":
        with pytest.raises(ValueError):
            json.loads(text)
    if behaviour == "truncate":
        assert len(text) == 60 * 4
    usage = msg.usage
    assert usage.input_tokens == tokens(SYSTEM) + tokens(PROMPT)
    assert usage.output_tokens == (60 if behaviour == "truncate" else tokens(text))
    assert usage.cache_read_input_tokens == 1500
    assert usage.cache_creation_input_tokens == 340
    assert usage.cache_creation is not None
    assert usage.cache_creation.ephemeral_5m_input_tokens == 300
    assert usage.cache_creation.ephemeral_1h_input_tokens == 40


def test_stream_events_come_in_the_messages_api_order(
    fake_upstream: FakeUpstream, client: anthropic.Anthropic
) -> None:
    fake_upstream.set_script("m", ModelScript(behaviour="echo", chunks=5))
    with client.messages.create(
        model="m",
        max_tokens=100,
        messages=[{"role": "user", "content": PROMPT}],
        stream=True,
    ) as events:
        kinds = [e.type for e in events]
    assert kinds[0] == "message_start"
    assert kinds[1] == "content_block_start"
    assert kinds.count("content_block_delta") == 5
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]


def test_message_start_carries_input_usage_and_delta_the_final_output(
    fake_upstream: FakeUpstream, client: anthropic.Anthropic
) -> None:
    fake_upstream.set_script("m", ModelScript(cache_read_tokens=64))
    with client.messages.create(
        model="m", max_tokens=100, messages=[{"role": "user", "content": PROMPT}], stream=True
    ) as events:
        got = {e.type: e for e in events}
    start = got["message_start"].message.usage  # type: ignore[union-attr]
    delta = got["message_delta"].usage  # type: ignore[union-attr]
    assert start.input_tokens == tokens(PROMPT)
    assert start.cache_read_input_tokens == 64
    assert start.output_tokens == 1
    assert delta.output_tokens == tokens(PROMPT)


@pytest.mark.parametrize("streamed", [False, True], ids=["json", "sse"])
def test_scripted_tool_use_blocks(
    fake_upstream: FakeUpstream, client: anthropic.Anthropic, streamed: bool
) -> None:
    call = ToolCall("lookup_invoice", {"number": 42, "fields": ["total", "currency"]})
    fake_upstream.set_script("m", ModelScript(reply=Reply("Looking it up.", tool_calls=(call,))))
    msg = stream(client, "m")[0] if streamed else create(client, "m")
    assert msg.stop_reason == "tool_use"
    blocks = [b for b in msg.content if b.type == "tool_use"]
    assert len(blocks) == 1
    assert blocks[0].name == "lookup_invoice"
    assert blocks[0].input == {"number": 42, "fields": ["total", "currency"]}
    assert msg.content[0].type == "text"
    expected_out = tokens("Looking it up.") + tokens(json.dumps(dict(call.input)))
    assert msg.usage.output_tokens == expected_out


def test_reply_function_sees_the_request_json(
    fake_upstream: FakeUpstream, client: anthropic.Anthropic
) -> None:
    seen: list[dict[str, Any]] = []

    def reply(request: dict[str, Any]) -> str:
        seen.append(request)
        return "refund" if "refund" in request["messages"][-1]["content"] else "other"

    fake_upstream.set_script("m", ModelScript(reply=reply))
    msg = client.messages.create(
        model="m", max_tokens=20, messages=[{"role": "user", "content": "I want a refund"}]
    )
    assert msg.content[0].type == "text" and msg.content[0].text == "refund"
    assert seen[0]["model"] == "m" and seen[0]["max_tokens"] == 20


def test_429_is_the_sdks_rate_limit_error_with_retry_after(
    fake_upstream: FakeUpstream, client: anthropic.Anthropic
) -> None:
    fake_upstream.add_faults("m", Fault("429", retry_after=7))
    with pytest.raises(anthropic.RateLimitError) as caught:
        create(client, "m")
    err = caught.value
    assert err.response.headers["retry-after"] == "7"
    assert err.type == "rate_limit_error"
    assert err.request_id and err.request_id.startswith("req_")
    assert create(client, "m").stop_reason == "end_turn", "the fault is used once"


@pytest.mark.parametrize(
    ("fault", "sdk_error", "error_type"),
    [
        ("500", anthropic.InternalServerError, "api_error"),
        ("529", anthropic.OverloadedError, "overloaded_error"),
    ],
)
@pytest.mark.parametrize("streamed", [False, True], ids=["json", "sse"])
def test_server_faults_are_the_sdks_errors(
    fake_upstream: FakeUpstream,
    client: anthropic.Anthropic,
    fault: str,
    sdk_error: type[anthropic.APIStatusError],
    error_type: str,
    streamed: bool,
) -> None:
    fake_upstream.add_faults("m", fault)
    with pytest.raises(sdk_error) as caught:
        stream(client, "m") if streamed else create(client, "m")
    assert caught.value.type == error_type
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "error"


def test_hang_times_the_client_out(fake_upstream: FakeUpstream) -> None:
    fake_upstream.add_faults("m", "hang")
    with (
        anthropic.Anthropic(
            base_url=fake_upstream.base_url, api_key="test", max_retries=0, timeout=0.3
        ) as c,
        pytest.raises(anthropic.APITimeoutError),
    ):
        create(c, "m")


@pytest.mark.parametrize("streamed", [False, True], ids=["json", "sse"])
def test_malformed_body_fails_to_parse(
    fake_upstream: FakeUpstream, client: anthropic.Anthropic, streamed: bool
) -> None:
    fake_upstream.add_faults("m", "malformed")
    with pytest.raises(json.JSONDecodeError):
        stream(client, "m") if streamed else create(client, "m")


def test_cut_response_is_a_connection_error(
    fake_upstream: FakeUpstream, client: anthropic.Anthropic
) -> None:
    fake_upstream.add_faults("m", "cut")
    with pytest.raises(anthropic.APIConnectionError) as caught:
        create(client, "m")
    assert isinstance(caught.value.__cause__, httpx2.RemoteProtocolError)


def test_cut_stream_stops_mid_way(fake_upstream: FakeUpstream, client: anthropic.Anthropic) -> None:
    fake_upstream.set_script("m", ModelScript(chunks=8))
    fake_upstream.add_faults("m", "cut")
    received: list[str] = []
    with (
        pytest.raises(httpx2.RemoteProtocolError),
        client.messages.stream(
            model="m", max_tokens=100, messages=[{"role": "user", "content": PROMPT}]
        ) as s,
    ):
        received.extend(e.type for e in s)
    assert "message_start" in received
    assert "message_stop" not in received


def test_always_fault_repeats(fake_upstream: FakeUpstream, client: anthropic.Anthropic) -> None:
    fake_upstream.set_script("m", ModelScript(faults=(Fault("500", always=True),)))
    for _ in range(3):
        with pytest.raises(anthropic.InternalServerError):
            create(client, "m")
    assert [r.fault for r in fake_upstream.requests_for("m")] == ["500"] * 3


def test_models_endpoint_lists_scripted_models(
    fake_upstream: FakeUpstream, client: anthropic.Anthropic
) -> None:
    fake_upstream.set_script("claude-haiku-4-5", "json")
    fake_upstream.set_script("claude-opus-4-6", "echo")
    ids = [m.id for m in client.models.list()]
    assert ids == ["claude-haiku-4-5", "claude-opus-4-6"]


def test_paced_stream_still_parses(
    fake_upstream: FakeUpstream, client: anthropic.Anthropic
) -> None:
    fake_upstream.set_script("m", ModelScript(chunks=3, chunk_delay_s=0.01))
    msg, deltas = stream(client, "m")
    assert len(deltas) == 3
    assert "".join(b.text for b in msg.content if b.type == "text") == PROMPT
