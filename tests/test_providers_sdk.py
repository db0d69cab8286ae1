"""The Anthropic and OpenAI providers against the fake upstream, through the real SDKs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tierwise.errors import (
    AuthenticationError,
    BadRequestError,
    BadResponseError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitedError,
    ServerError,
)
from tierwise.pricing import Usage
from tierwise.providers.anthropic import AnthropicProvider
from tierwise.providers.base import CompletionRequest, Provider
from tierwise.providers.openai import OpenAIProvider
from tierwise.task import Message
from tierwise.testing import REFUSAL_TEXT, FakeUpstream, Fault, ModelScript, Reply, ToolCall

KEY = "sk-test-PROVIDER-secret-0123456789"
PROMPT = "Summarise: the quarterly report shows revenue up 4% and costs flat."
SYSTEM = "Be brief."


def tokens(text: str) -> int:
    return max(1, (len(text) + 3) // 4)


def make(kind: str, up: FakeUpstream, **kw: Any) -> AnthropicProvider | OpenAIProvider:
    if kind == "anthropic":
        return AnthropicProvider(base_url=up.base_url, api_key=KEY, **kw)
    return OpenAIProvider(base_url=up.openai_base_url, api_key=KEY, **kw)


def request(model: str = "m", **kw: Any) -> CompletionRequest:
    kw.setdefault("timeout_s", 5.0)
    return CompletionRequest(
        model=model,
        messages=(Message("user", PROMPT),),
        system=SYSTEM,
        max_tokens=kw.pop("max_tokens", 100),
        **kw,
    )


@pytest.fixture(params=["anthropic", "openai"])
def provider(
    request: pytest.FixtureRequest, fake_upstream: FakeUpstream
) -> Iterator[AnthropicProvider | OpenAIProvider]:
    p = make(request.param, fake_upstream)
    yield p
    p.close()


def test_providers_satisfy_the_protocol(provider: Provider) -> None:
    assert isinstance(provider, Provider)
    assert provider.name in ("anthropic", "openai")


@pytest.mark.parametrize(
    ("behaviour", "stop", "raw"),
    [
        ("echo", "end", {"anthropic": "end_turn", "openai": "stop"}),
        ("refusal", "refusal", {"anthropic": "refusal", "openai": "content_filter"}),
        ("truncate", "max_tokens", {"anthropic": "max_tokens", "openai": "length"}),
    ],
)
def test_completion_text_stop_reason_and_usage(
    fake_upstream: FakeUpstream,
    provider: AnthropicProvider | OpenAIProvider,
    behaviour: str,
    stop: str,
    raw: dict[str, str],
) -> None:
    fake_upstream.set_script(
        "m",
        ModelScript(behaviour=behaviour, cache_read_tokens=200, cache_write_tokens=50),  # type: ignore[arg-type]
    )
    done = provider.complete(request(max_tokens=40))
    assert done.stop_reason == stop
    assert done.raw_stop_reason == raw[provider.name]
    assert done.provider == provider.name
    assert done.model == "m"
    if behaviour == "echo":
        assert done.text == PROMPT
    if behaviour == "refusal":
        assert done.text == REFUSAL_TEXT
    out = 40 if behaviour == "truncate" else tokens(done.text)
    uncached = tokens(SYSTEM) + tokens(PROMPT)
    if provider.name == "anthropic":
        expected = Usage(uncached, 50, 0, 200, out)
    else:  # OpenAI reports no cache writes
        expected = Usage(uncached, 0, 0, 200, out)
    assert done.usage == expected
    prefix = "req_fake" if provider.name == "anthropic" else "req-fake-"
    assert done.request_id is not None and done.request_id.startswith(prefix)
    assert done.latency_s > 0
    assert isinstance(done.raw, dict) and done.raw["model"] == "m"


def test_system_and_turns_reach_the_upstream_in_each_dialect(
    fake_upstream: FakeUpstream, provider: AnthropicProvider | OpenAIProvider
) -> None:
    convo = (Message("user", "first"), Message("assistant", "reply"), Message("user", "second"))
    provider.complete(
        CompletionRequest(model="m", messages=convo, system="sys", max_tokens=33, temperature=0.2)
    )
    body = fake_upstream.requests[-1].body
    turns = [(m["role"], m["content"]) for m in body["messages"]]
    if provider.name == "anthropic":
        assert body["system"] == "sys"
        assert turns == [("user", "first"), ("assistant", "reply"), ("user", "second")]
        assert body["max_tokens"] == 33
    else:
        assert turns[0] == ("system", "sys")
        assert turns[1:] == [("user", "first"), ("assistant", "reply"), ("user", "second")]
        assert body["max_tokens"] == 33  # a custom base_url gets the widely supported name
    assert body["temperature"] == 0.2


def test_only_api_fields_of_extra_are_sent(
    fake_upstream: FakeUpstream, provider: AnthropicProvider | OpenAIProvider
) -> None:
    tool = {"name": "lookup", "description": "d", "input_schema": {"type": "object"}}
    provider.complete(
        request(
            extra={
                "prompt_id": "task-1",
                "kind": "extract",
                "raw_body_bytes": 10,
                "tools": [tool],
                "body": {"metadata": {"user_id": "u-7"}},
                "headers": {"x-trace": "abc"},
            }
        )
    )
    recorded = fake_upstream.requests[-1]
    assert recorded.body["tools"] == [tool]
    assert recorded.body["metadata"] == {"user_id": "u-7"}
    assert not {"prompt_id", "kind", "raw_body_bytes", "body", "headers"} & set(recorded.body)
    assert recorded.headers["x-trace"] == "abc"


def test_tool_use_is_reported(
    fake_upstream: FakeUpstream, provider: AnthropicProvider | OpenAIProvider
) -> None:
    fake_upstream.set_script(
        "m", ModelScript(reply=Reply("checking", tool_calls=(ToolCall("lookup", {"q": 1}),)))
    )
    done = provider.complete(request())
    assert done.stop_reason == "tool_use"
    assert done.text == "checking"


def test_openai_official_endpoint_gets_max_completion_tokens() -> None:
    assert OpenAIProvider(api_key="k").max_tokens_param == "max_completion_tokens"
    assert OpenAIProvider(api_key="k", base_url="http://localhost:11434/v1").max_tokens_param == (
        "max_tokens"
    )


def test_rate_limit_maps_with_retry_after(
    fake_upstream: FakeUpstream, provider: AnthropicProvider | OpenAIProvider
) -> None:
    fake_upstream.add_faults("m", Fault("429", retry_after=7))
    with pytest.raises(RateLimitedError) as caught:
        provider.complete(request())
    err = caught.value
    assert err.retry_after == 7
    assert err.status == 429 and err.provider == provider.name and err.model == "m"
    assert err.request_id and err.request_id.startswith("req")


@pytest.mark.parametrize("fault", ["500", "529"])
def test_server_errors_map(
    fake_upstream: FakeUpstream, provider: AnthropicProvider | OpenAIProvider, fault: str
) -> None:
    fake_upstream.add_faults("m", fault)
    with pytest.raises(ServerError) as caught:
        provider.complete(request())
    assert caught.value.status == int(fault)
    assert caught.value.retryable


def test_hang_is_a_timeout(
    fake_upstream: FakeUpstream, provider: AnthropicProvider | OpenAIProvider
) -> None:
    fake_upstream.add_faults("m", "hang")
    with pytest.raises(ProviderTimeoutError):
        provider.complete(request(timeout_s=0.3))


@pytest.mark.parametrize("fault", ["malformed", "cut"])
def test_broken_bodies_are_bad_responses(
    fake_upstream: FakeUpstream, provider: AnthropicProvider | OpenAIProvider, fault: str
) -> None:
    fake_upstream.add_faults("m", fault)
    with pytest.raises(BadResponseError):
        provider.complete(request())
    assert provider.complete(request()).text == PROMPT, "the client recovers"


def test_wrong_key_is_an_authentication_error_without_the_key(
    fake_upstream: FakeUpstream, provider: AnthropicProvider | OpenAIProvider
) -> None:
    fake_upstream.require_key = "another-key"
    try:
        with pytest.raises(AuthenticationError) as caught:
            provider.complete(request())
    finally:
        fake_upstream.require_key = None
    assert KEY not in str(caught.value)
    assert KEY not in repr(provider)
    assert not caught.value.retryable


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
def test_missing_key_fails_at_call_time_naming_the_variable(
    fake_upstream: FakeUpstream, kind: str
) -> None:
    cls = AnthropicProvider if kind == "anthropic" else OpenAIProvider
    provider = cls(base_url=fake_upstream.base_url, api_key=None, api_key_env="MY_TEAM_KEY")
    with pytest.raises(AuthenticationError, match="MY_TEAM_KEY"):
        provider.complete(request())
    assert fake_upstream.requests == [], "nothing was sent without a key"
    provider.close()


@pytest.fixture(params=["anthropic", "openai"])
async def aprovider(
    request: pytest.FixtureRequest, fake_upstream: FakeUpstream
) -> AsyncIterator[AnthropicProvider | OpenAIProvider]:
    p = make(request.param, fake_upstream)
    yield p
    await p.aclose()


async def test_async_completion(
    fake_upstream: FakeUpstream, aprovider: AnthropicProvider | OpenAIProvider
) -> None:
    fake_upstream.set_script("m", ModelScript(behaviour="json", cache_read_tokens=10))
    done = await aprovider.acomplete(request())
    assert done.text.startswith('{"answer"')
    assert done.usage.cache_read_tokens == 10
    assert fake_upstream.requests[-1].headers["x-stainless-async"].startswith("async")


async def test_async_faults_map(
    fake_upstream: FakeUpstream, aprovider: AnthropicProvider | OpenAIProvider
) -> None:
    fake_upstream.add_faults("m", "529", "hang", "malformed")
    expected: list[type[ProviderError]] = [ServerError, ProviderTimeoutError, BadResponseError]
    for cls in expected:
        with pytest.raises(cls):
            await aprovider.acomplete(request(timeout_s=0.3))
    assert (await aprovider.acomplete(request())).text == PROMPT


async def test_one_provider_serves_sync_and_async_callers(fake_upstream: FakeUpstream) -> None:
    provider = make("anthropic", fake_upstream)
    try:
        assert (await provider.acomplete(request())).text == PROMPT
        assert provider.complete(request()).text == PROMPT
    finally:
        await provider.aclose()
    # Closing releases connections; a later call opens new ones.
    assert provider.complete(request()).text == PROMPT
    provider.close()


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("400", BadRequestError),
        ("401", AuthenticationError),
        ("403", AuthenticationError),
        ("404", BadRequestError),
        ("503", ServerError),
    ],
)
def test_http_errors_from_the_upstream_map_by_status(
    fake_upstream: FakeUpstream,
    provider: AnthropicProvider | OpenAIProvider,
    fault: str,
    expected: type[ProviderError],
) -> None:
    fake_upstream.add_faults("m", fault)
    with pytest.raises(ProviderError) as caught:
        provider.complete(request())
    assert type(caught.value) is expected
    assert caught.value.status == int(fault)
    assert KEY not in str(caught.value)


async def test_sync_close_inside_the_loop_closes_its_async_client(
    fake_upstream: FakeUpstream,
) -> None:
    import asyncio
    import gc

    provider = make("openai", fake_upstream)
    assert (await provider.acomplete(request())).text == PROMPT
    client = provider._async_client()
    provider.close()  # e.g. Cascade.close() called from async code
    for _ in range(20):
        await asyncio.sleep(0)
        if client.is_closed():
            break
    assert client.is_closed()
    gc.collect()
