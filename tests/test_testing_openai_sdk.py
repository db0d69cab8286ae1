"""The fake upstream as the official ``openai`` SDK sees it: typed parsing, streams, faults."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tierwise.testing import REFUSAL_TEXT, FakeUpstream, Fault, ModelScript, Reply, ToolCall

PROMPT = "Classify this ticket: 'My invoice shows the wrong VAT rate for March.'"
SYSTEM = "Answer with one label."


def tokens(text: str) -> int:
    """The fake's documented tokenizer, written independently: ceil(len / 4), at least 1."""
    return max(1, (len(text) + 3) // 4)


@pytest.fixture
def client(fake_upstream: FakeUpstream) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=fake_upstream.openai_base_url, api_key="test", max_retries=0, timeout=5
    ) as c:
        yield c


MESSAGES: list[Any] = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": PROMPT},
]


def create(client: openai.OpenAI, model: str, max_tokens: int = 200) -> Any:
    return client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=max_tokens)


def stream(client: openai.OpenAI, model: str, max_tokens: int = 200) -> list[Any]:
    with client.chat.completions.create(
        model=model,
        messages=MESSAGES,
        max_completion_tokens=max_tokens,
        stream=True,
        stream_options={"include_usage": True},
    ) as chunks:
        return list(chunks)


EXPECTED_TEXT = {
    "echo": PROMPT,
    "json": json.dumps({"answer": PROMPT, "confidence": 0.92}),
    "low_confidence": json.dumps({"answer": PROMPT, "confidence": 0.3}),
    "refusal": REFUSAL_TEXT,
}
EXPECTED_FINISH = {"refusal": "content_filter", "truncate": "length"}


@pytest.mark.parametrize(
    "behaviour", ["echo", "json", "invalid_json", "low_confidence", "refusal", "truncate"]
)
def test_every_canned_behaviour_parses_with_exact_usage(
    fake_upstream: FakeUpstream, client: openai.OpenAI, behaviour: str
) -> None:
    fake_upstream.set_script("m", ModelScript(behaviour=behaviour, cache_read_tokens=900))  # type: ignore[arg-type]
    completion = create(client, "m", max_tokens=50)
    choice = completion.choices[0]
    text = choice.message.content or ""
    assert choice.finish_reason == EXPECTED_FINISH.get(behaviour, "stop")
    if behaviour in EXPECTED_TEXT:
        assert text == EXPECTED_TEXT[behaviour]
    if behaviour == "truncate":
        assert len(text) == 50 * 4
    usage = completion.usage
    assert usage is not None
    uncached = tokens(SYSTEM) + tokens(PROMPT)
    assert usage.prompt_tokens == uncached + 900, "prompt_tokens includes cached tokens"
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 900
    assert usage.completion_tokens == (50 if behaviour == "truncate" else tokens(text))
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert completion._request_id and completion._request_id.startswith("req-")


@pytest.mark.parametrize(
    "behaviour", ["echo", "json", "invalid_json", "low_confidence", "refusal", "truncate"]
)
def test_every_canned_behaviour_streams_with_usage_in_a_final_chunk(
    fake_upstream: FakeUpstream, client: openai.OpenAI, behaviour: str
) -> None:
    fake_upstream.set_script("m", ModelScript(behaviour=behaviour, cache_read_tokens=128))  # type: ignore[arg-type]
    chunks = stream(client, "m", max_tokens=50)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == EXPECTED_FINISH.get(behaviour, "stop")
    assert all(f is None for f in finishes[:-1])
    if behaviour in EXPECTED_TEXT:
        assert text == EXPECTED_TEXT[behaviour]
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 1
    *body, last = chunks
    assert all(c.usage is None for c in body)
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.prompt_tokens == tokens(SYSTEM) + tokens(PROMPT) + 128
    assert last.usage.prompt_tokens_details.cached_tokens == 128
    assert last.usage.completion_tokens == (50 if behaviour == "truncate" else tokens(text))


def test_stream_without_include_usage_has_no_usage_chunk(
    fake_upstream: FakeUpstream, client: openai.OpenAI
) -> None:
    with client.chat.completions.create(model="m", messages=MESSAGES, stream=True) as chunks:
        got = list(chunks)
    assert all(c.choices for c in got)
    assert all(c.usage is None for c in got)


@pytest.mark.parametrize("streamed", [False, True], ids=["json", "sse"])
def test_scripted_tool_calls(
    fake_upstream: FakeUpstream, client: openai.OpenAI, streamed: bool
) -> None:
    call = ToolCall("get_weather", {"city": "Paris"})
    fake_upstream.set_script("m", ModelScript(reply=Reply(tool_calls=(call,))))
    if streamed:
        chunks = stream(client, "m")
        calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
        name = next(tc.function.name for tc in calls if tc.function and tc.function.name)
        arguments = "".join(tc.function.arguments or "" for tc in calls if tc.function)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
    else:
        choice = create(client, "m").choices[0]
        [tool_call] = choice.message.tool_calls or []
        name, arguments, finish = (
            tool_call.function.name,
            tool_call.function.arguments,
            choice.finish_reason,
        )
        assert choice.message.content is None
    assert finish == "tool_calls"
    assert name == "get_weather"
    assert json.loads(arguments) == {"city": "Paris"}


def test_429_is_the_sdks_rate_limit_error_with_openai_error_body(
    fake_upstream: FakeUpstream, client: openai.OpenAI
) -> None:
    fake_upstream.add_faults("m", Fault("429", retry_after="Wed, 21 Oct 2037 07:28:00 GMT"))
    with pytest.raises(openai.RateLimitError) as caught:
        create(client, "m")
    err = caught.value
    assert err.response.headers["retry-after"] == "Wed, 21 Oct 2037 07:28:00 GMT"
    assert err.code == "rate_limit_exceeded"
    assert err.request_id and err.request_id.startswith("req-")


@pytest.mark.parametrize("fault", ["500", "529"])
@pytest.mark.parametrize("streamed", [False, True], ids=["json", "sse"])
def test_server_faults_are_internal_server_errors(
    fake_upstream: FakeUpstream, client: openai.OpenAI, fault: str, streamed: bool
) -> None:
    fake_upstream.add_faults("m", fault)
    with pytest.raises(openai.InternalServerError) as caught:
        stream(client, "m") if streamed else create(client, "m")
    assert caught.value.status_code == int(fault)
    assert caught.value.type == "server_error"


def test_hang_times_the_client_out(fake_upstream: FakeUpstream) -> None:
    fake_upstream.add_faults("m", "hang")
    with (
        openai.OpenAI(
            base_url=fake_upstream.openai_base_url, api_key="test", max_retries=0, timeout=0.3
        ) as c,
        pytest.raises(openai.APITimeoutError),
    ):
        create(c, "m")


@pytest.mark.parametrize("streamed", [False, True], ids=["json", "sse"])
def test_malformed_body_fails_to_parse(
    fake_upstream: FakeUpstream, client: openai.OpenAI, streamed: bool
) -> None:
    fake_upstream.add_faults("m", "malformed")
    with pytest.raises(json.JSONDecodeError):
        stream(client, "m") if streamed else create(client, "m")


@pytest.mark.parametrize("streamed", [False, True], ids=["json", "sse"])
def test_cut_response_is_a_connection_error(
    fake_upstream: FakeUpstream, client: openai.OpenAI, streamed: bool
) -> None:
    fake_upstream.add_faults("m", "cut")
    with pytest.raises(openai.APIConnectionError):
        stream(client, "m") if streamed else create(client, "m")


def test_unknown_model_is_404_in_openai_shape(fake_upstream: FakeUpstream) -> None:
    fake_upstream.reset(default=None)
    with (
        openai.OpenAI(base_url=fake_upstream.openai_base_url, api_key="x", max_retries=0) as c,
        pytest.raises(openai.NotFoundError) as caught,
    ):
        create(c, "gpt-unknown")
    assert caught.value.code == "model_not_found"
    assert "gpt-unknown" in caught.value.message


def test_models_endpoint_in_openai_shape(
    fake_upstream: FakeUpstream, client: openai.OpenAI
) -> None:
    fake_upstream.set_script("gpt-4o-mini", "json")
    assert [m.id for m in client.models.list()] == ["gpt-4o-mini"]
