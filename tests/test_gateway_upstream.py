"""The gateway's upstream path: the lean HTTP transport and the raw providers' error mapping.

Everything runs against real servers on loopback (the fake upstream, or a tiny asyncio server
where a misbehaviour is needed that the fake does not script).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator

import pytest

from tierwise.errors import (
    AuthenticationError,
    BadResponseError,
    ProviderConnectionError,
    ProviderTimeoutError,
    RateLimitedError,
    ServerError,
)
from tierwise.gateway.http import FastTransport, TransportError, proxy_configured
from tierwise.gateway.upstream import RawProvider, UpstreamPool
from tierwise.pricing import Usage
from tierwise.providers.base import CompletionRequest
from tierwise.testing import FakeUpstream, Fault, ModelScript, Reply, ToolCall, count_tokens
from tierwise.testing.policies import TEST_KEY_ENV, upstream_policy

ANTHROPIC_BODY = {
    "model": "m",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "hello upstream"}],
}
OPENAI_BODY = {"model": "m", "messages": [{"role": "user", "content": "hello upstream"}]}


@pytest.fixture
async def transport() -> AsyncIterator[FastTransport]:
    t = FastTransport()
    yield t
    await t.aclose()


def _request(model: str, body: dict[str, object], timeout_s: float = 5.0) -> CompletionRequest:
    return CompletionRequest(model=model, messages=(), timeout_s=timeout_s, extra={"body": body})


# -- transport -----------------------------------------------------------------------------------


async def test_transport_reuses_one_keep_alive_connection(
    fake_upstream: FakeUpstream, transport: FastTransport
) -> None:
    url = f"{fake_upstream.base_url}/v1/messages"
    body = json.dumps(ANTHROPIC_BODY).encode()
    for _ in range(3):
        response = await transport.send(url, body, {"x-api-key": "k"}, 5.0)
        data = json.loads(await response.read())
        assert response.status == 200 and data["content"][0]["text"] == "hello upstream"
    pools = list(transport._idle.values())
    assert len(pools) == 1 and len(pools[0]) == 1  # one connection served all three


async def test_transport_streams_a_chunked_body(
    fake_upstream: FakeUpstream, transport: FastTransport
) -> None:
    url = f"{fake_upstream.openai_base_url}/chat/completions"
    body = json.dumps({**OPENAI_BODY, "stream": True}).encode()
    response = await transport.send(url, body, {}, 5.0)
    assert response.headers["content-type"].startswith("text/event-stream")
    parts = [p async for p in response.aiter_bytes()]
    assert b"".join(parts).rstrip().endswith(b"data: [DONE]")


async def test_transport_errors_have_kinds(
    fake_upstream: FakeUpstream, transport: FastTransport
) -> None:
    url = f"{fake_upstream.base_url}/v1/messages"
    fake_upstream.set_script("cut", ModelScript(faults=("cut",)))
    fake_upstream.set_script("hang", ModelScript(faults=(Fault("hang", hang_s=5),)))
    cut = await transport.send(url, json.dumps({**ANTHROPIC_BODY, "model": "cut"}).encode(), {}, 5)
    with pytest.raises(TransportError) as info:
        await cut.read()
    assert info.value.kind == "protocol"
    with pytest.raises(TransportError) as info:
        await transport.send(url, json.dumps({**ANTHROPIC_BODY, "model": "hang"}).encode(), {}, 0.2)
    assert info.value.kind == "timeout"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    with pytest.raises(TransportError) as info:
        await transport.send(f"http://127.0.0.1:{closed_port}/x", b"{}", {}, 1.0)
    assert info.value.kind == "connect"


async def test_transport_retries_once_when_a_pooled_connection_was_closed() -> None:
    """A server that closes every connection after one answer, without saying so."""
    served = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        await reader.readuntil(b"\r\n\r\n")
        served += 1
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = FastTransport()
    try:
        for _ in range(3):
            response = await transport.send(f"http://127.0.0.1:{port}/", b"", {}, 2.0)
            assert await response.read() == b"ok"
    finally:
        await transport.aclose()
        server.close()
        await server.wait_closed()
    assert served == 3


def test_proxy_settings_are_detected() -> None:
    assert proxy_configured({"HTTPS_PROXY": "http://proxy:3128"})
    assert proxy_configured({"all_proxy": "socks5://x"})
    assert not proxy_configured({"PATH": "/bin"})


# -- raw providers -------------------------------------------------------------------------------


async def test_anthropic_usage_and_stop_reasons_are_exact(
    fake_upstream: FakeUpstream, transport: FastTransport
) -> None:
    fake_upstream.set_script(
        "m",
        ModelScript(reply=Reply("", tool_calls=(ToolCall("f", {"a": 1}),)), cache_read_tokens=7),
    )
    provider = RawProvider(
        "anthropic", transport=transport, base_url=fake_upstream.base_url, api_key="k"
    )
    plain = await provider.acomplete(_request("m", ANTHROPIC_BODY))
    streamed = await provider.acomplete(_request("m", {**ANTHROPIC_BODY, "stream": True}))
    out = count_tokens(json.dumps({"a": 1}))
    expected = Usage(
        input_tokens=count_tokens("hello upstream"), cache_read_tokens=7, output_tokens=out
    )
    assert plain.usage == expected and streamed.usage == expected
    assert plain.stop_reason == streamed.stop_reason == "tool_use"
    assert json.loads(plain.text) == [{"name": "f", "input": {"a": 1}}]  # tool calls as text
    assert plain.raw.body is not None and json.loads(plain.raw.body)["id"].startswith("msg_")


async def test_openai_streamed_usage_is_asked_for_and_exact(
    fake_upstream: FakeUpstream, transport: FastTransport
) -> None:
    fake_upstream.set_script("m", ModelScript(cache_read_tokens=3))
    provider = RawProvider(
        "openai", transport=transport, base_url=fake_upstream.openai_base_url, api_key="k"
    )
    done = await provider.acomplete(_request("m", {**OPENAI_BODY, "stream": True}))
    assert fake_upstream.requests[-1].body["stream_options"] == {"include_usage": True}
    assert done.usage == Usage(
        input_tokens=count_tokens("hello upstream"),
        cache_read_tokens=3,
        output_tokens=count_tokens("hello upstream"),
    )
    assert done.text == "hello upstream" and done.stop_reason == "end"


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("429", RateLimitedError),
        ("500", ServerError),
        ("529", ServerError),
        ("malformed", BadResponseError),
        ("cut", BadResponseError),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_faults_map_to_the_error_tree(
    fake_upstream: FakeUpstream,
    transport: FastTransport,
    fault: str,
    error: type[Exception],
    stream: bool,
) -> None:
    fake_upstream.set_script("m", ModelScript(faults=(fault,)))
    provider = RawProvider(
        "openai",
        transport=transport,
        base_url=fake_upstream.openai_base_url,
        api_key="sk-abcdefghij",
    )
    with pytest.raises(error) as info:
        await provider.acomplete(_request("m", {**OPENAI_BODY, "stream": stream}))
    assert "sk-abcdefghij" not in str(info.value)
    if fault == "429":
        assert info.value.retry_after == 1  # type: ignore[attr-defined]


async def test_timeouts_refusals_and_missing_keys(
    fake_upstream: FakeUpstream, transport: FastTransport
) -> None:
    fake_upstream.set_script("m", ModelScript(faults=(Fault("hang", hang_s=5),)))
    provider = RawProvider(
        "anthropic", transport=transport, base_url=fake_upstream.base_url, api_key="k"
    )
    with pytest.raises(ProviderTimeoutError):
        await provider.acomplete(_request("m", ANTHROPIC_BODY, timeout_s=0.2))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    nowhere = RawProvider(
        "anthropic", transport=transport, base_url=f"http://127.0.0.1:{closed}", api_key="k"
    )
    with pytest.raises(ProviderConnectionError):
        await nowhere.acomplete(_request("m", ANTHROPIC_BODY))
    keyless = RawProvider(
        "anthropic", transport=transport, base_url=fake_upstream.base_url, api_key_env="NOPE_KEY"
    )
    with pytest.raises(AuthenticationError, match="NOPE_KEY"):
        await keyless.acomplete(_request("m", ANTHROPIC_BODY))


async def test_pool_lists_tiers_models_and_owners(
    fake_upstream: FakeUpstream, transport: FastTransport
) -> None:
    policy = upstream_policy(
        fake_upstream,
        tiers=[("cheap", "a-1"), ("mid", "a-2")],
        extra='[prices."a-1"]\ninput = 1\noutput = 1\n[prices."a-2"]\ninput = 2\noutput = 2\n',
    )
    pool = UpstreamPool(policy, transport, {TEST_KEY_ENV: "k"})
    assert [m for m, _ in pool.for_tier("mid")] == ["a-2"]
    owner = pool.owner_of("a-2")
    assert owner is not None and owner[0] == "mid"
    assert pool.owner_of("zzz") is None
    assert pool.models() == [("a-1", "cheap"), ("a-2", "mid")]
