"""The upstream path over every transport the gateway ships, on plain HTTP and on HTTPS.

Each test runs four times: the lean h11 client (``FastTransport``, the default) and httpx2
(``HttpxTransport``, used behind a proxy), each against the fake upstream over ``http://`` and
over ``https://`` with a ``trustme`` certificate whose CA the transport is told to trust.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from tierwise.errors import (
    BadResponseError,
    ProviderConnectionError,
    ProviderTimeoutError,
    RateLimitedError,
    ServerError,
)
from tierwise.gateway import GatewayConfig
from tierwise.gateway.http import (
    FastTransport,
    HttpxTransport,
    Transport,
    TransportError,
    upstream_ssl_context,
)
from tierwise.gateway.server import GatewayServer
from tierwise.gateway.upstream import RawProvider
from tierwise.policy import Policy
from tierwise.pricing import Usage
from tierwise.providers.base import CompletionRequest
from tierwise.testing import FakeUpstream, Fault, ModelScript, TLSFiles, count_tokens, make_tls
from tierwise.testing.policies import TEST_KEY_ENV, upstream_policy

ANTHROPIC_BODY = {
    "model": "m",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "hello upstream"}],
}
OPENAI_BODY = {"model": "m", "messages": [{"role": "user", "content": "hello upstream"}]}
TRANSPORTS = {"lean": FastTransport, "httpx2": HttpxTransport}


@dataclass
class Upstream:
    """A fake upstream and a transport that trusts its certificate (when it has one)."""

    server: FakeUpstream
    transport: Transport
    name: str

    def url(self, path: str) -> str:
        return f"{self.server.base_url}{path}"


@pytest.fixture(params=["lean-http", "lean-https", "httpx2-http", "httpx2-https"])
async def up(
    request: pytest.FixtureRequest,
    fake_upstream: FakeUpstream,
    fake_upstream_tls: FakeUpstream,
    upstream_tls: TLSFiles,
) -> AsyncIterator[Upstream]:
    name, scheme = request.param.split("-")
    server = fake_upstream_tls if scheme == "https" else fake_upstream
    assert server.base_url.startswith(f"{scheme}://")
    transport = TRANSPORTS[name](ssl_context=upstream_ssl_context(upstream_tls.ca_file))
    yield Upstream(server, transport, name)
    await transport.aclose()


def _request(model: str, body: dict[str, object], timeout_s: float = 5.0) -> CompletionRequest:
    return CompletionRequest(model=model, messages=(), timeout_s=timeout_s, extra={"body": body})


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- transports ----------------------------------------------------------------------------------


async def test_answers_arrive_whole_on_one_kept_alive_connection(up: Upstream) -> None:
    body = json.dumps(ANTHROPIC_BODY).encode()
    for _ in range(3):
        response = await up.transport.send(up.url("/v1/messages"), body, {"x-api-key": "k"}, 5.0)
        data = json.loads(await response.read())
        assert response.status == 200 and data["content"][0]["text"] == "hello upstream"
        assert response.headers["content-type"] == "application/json"
    peers = {r.peer for r in up.server.requests}
    assert len(up.server.requests) == 3 and len(peers) == 1  # one connection served all three


async def test_a_chunked_stream_is_relayed_as_it_arrives(up: Upstream) -> None:
    up.server.set_script("m", ModelScript(chunks=6, chunk_delay_s=0.01))
    body = json.dumps({**OPENAI_BODY, "stream": True}).encode()
    response = await up.transport.send(up.url("/v1/chat/completions"), body, {}, 5.0)
    assert response.headers["content-type"].startswith("text/event-stream")
    parts = [p async for p in response.aiter_bytes()]
    assert len(parts) > 1  # relayed in pieces, not collected
    assert b"".join(parts).rstrip().endswith(b"data: [DONE]")


async def test_error_statuses_come_back_with_their_bodies(up: Upstream) -> None:
    up.server.set_script("m", ModelScript(faults=("529",)))
    body = json.dumps(ANTHROPIC_BODY).encode()
    response = await up.transport.send(up.url("/v1/messages"), body, {}, 5.0)
    assert response.status == 529
    assert json.loads(await response.read())["error"]["type"] == "overloaded_error"


async def test_cut_hung_and_refused_exchanges_have_kinds(up: Upstream) -> None:
    up.server.set_script("cut", ModelScript(faults=("cut",)))
    up.server.set_script("hang", ModelScript(faults=(Fault("hang", hang_s=5),)))
    url = up.url("/v1/messages")
    cut = await up.transport.send(
        url, json.dumps({**ANTHROPIC_BODY, "model": "cut"}).encode(), {}, 5
    )
    with pytest.raises(TransportError) as info:
        await cut.read()
    assert info.value.kind == "protocol"
    with pytest.raises(TransportError) as info:
        hang = json.dumps({**ANTHROPIC_BODY, "model": "hang"}).encode()
        await up.transport.send(url, hang, {}, 0.2)
    assert info.value.kind == "timeout"
    scheme = up.server.scheme
    with pytest.raises(TransportError) as info:
        await up.transport.send(f"{scheme}://127.0.0.1:{_closed_port()}/x", b"{}", {}, 1.0)
    assert info.value.kind == "connect"


@pytest.mark.parametrize("name", sorted(TRANSPORTS))
async def test_an_untrusted_certificate_is_refused(
    name: str, fake_upstream_tls: FakeUpstream, tmp_path: Path
) -> None:
    """A transport checks certificates: trusting another CA, the fake's certificate fails."""
    stranger = make_tls(tmp_path)
    transport = TRANSPORTS[name](ssl_context=upstream_ssl_context(stranger.ca_file))
    try:
        with pytest.raises(TransportError, match=r"(?i)certificate") as info:
            await transport.send(
                f"{fake_upstream_tls.base_url}/v1/messages",
                json.dumps(ANTHROPIC_BODY).encode(),
                {},
                5,
            )
        assert info.value.kind == "connect"
    finally:
        await transport.aclose()
    assert fake_upstream_tls.requests == []


async def test_ssl_cert_file_is_honoured_by_default(
    fake_upstream_tls: FakeUpstream, upstream_tls: TLSFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a CA file, upstreams are checked against ``SSL_CERT_FILE``, as the SDKs do."""
    monkeypatch.setenv("SSL_CERT_FILE", upstream_tls.ca_file)
    transport = FastTransport()  # its default context is made on first use
    try:
        response = await transport.send(
            f"{fake_upstream_tls.base_url}/v1/messages", json.dumps(ANTHROPIC_BODY).encode(), {}, 5
        )
        assert response.status == 200 and b"hello upstream" in await response.read()
    finally:
        await transport.aclose()


def test_an_unreadable_ca_file_is_a_clear_error(tmp_path: Path) -> None:
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate")
    with pytest.raises(ValueError, match="cannot load the upstream CA file"):
        upstream_ssl_context(str(not_pem))
    with pytest.raises(ValueError, match=r"upstream_ca_file .* is not a file"):
        GatewayConfig(upstream_ca_file=str(tmp_path / "missing.pem"))
    config = GatewayConfig(policy_path="p.toml", upstream_ca_file=str(not_pem))
    assert GatewayConfig.from_json(config.to_json()).upstream_ca_file == str(not_pem)


# -- raw providers over each transport -----------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_usage_is_exact_in_both_dialects(up: Upstream, stream: bool) -> None:
    up.server.set_script("m", ModelScript(cache_read_tokens=7))
    expected = Usage(
        input_tokens=count_tokens("hello upstream"),
        cache_read_tokens=7,
        output_tokens=count_tokens("hello upstream"),
    )
    claude = RawProvider(
        "anthropic", transport=up.transport, base_url=up.server.base_url, api_key="k"
    )
    gpt = RawProvider(
        "openai", transport=up.transport, base_url=up.server.openai_base_url, api_key="k"
    )
    a = await claude.acomplete(_request("m", {**ANTHROPIC_BODY, "stream": stream}))
    o = await gpt.acomplete(_request("m", {**OPENAI_BODY, "stream": stream}))
    assert a.usage == expected and o.usage == expected
    assert a.text == o.text == "hello upstream"


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("429", RateLimitedError),
        ("500", ServerError),
        ("malformed", BadResponseError),
        ("cut", BadResponseError),
        (Fault("hang", hang_s=5), ProviderTimeoutError),
    ],
    ids=["429", "500", "malformed", "cut", "hang"],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_faults_map_to_the_error_tree(
    up: Upstream, fault: Fault | str, error: type[Exception], stream: bool
) -> None:
    up.server.set_script("m", ModelScript(faults=(fault,)))
    provider = RawProvider(
        "openai", transport=up.transport, base_url=up.server.openai_base_url, api_key="sk-secret1"
    )
    with pytest.raises(error) as info:
        await provider.acomplete(_request("m", {**OPENAI_BODY, "stream": stream}, timeout_s=0.3))
    assert "sk-secret1" not in str(info.value)
    # the transport is still usable: the next call answers
    done = await provider.acomplete(_request("m", {**OPENAI_BODY, "stream": stream}))
    assert done.text == "hello upstream"


async def test_a_refused_connection_is_a_connection_error(up: Upstream) -> None:
    provider = RawProvider(
        "anthropic",
        transport=up.transport,
        base_url=f"{up.server.scheme}://127.0.0.1:{_closed_port()}",
        api_key="k",
    )
    with pytest.raises(ProviderConnectionError):
        await provider.acomplete(_request("m", ANTHROPIC_BODY))


# -- the gateway, configured --------------------------------------------------------------------


@pytest.fixture
def tls_gateway_policy(fake_upstream_tls: FakeUpstream) -> Policy:
    return upstream_policy(fake_upstream_tls, provider="openai", tiers=[("cheap", "gpt-4o-mini")])


def _gateway(policy: Policy, tmp_path: Path, ca_file: str | None = None) -> GatewayServer:
    config = GatewayConfig(
        policy=policy,
        ledger_url=str(tmp_path / "ledger.db"),
        env={TEST_KEY_ENV: "test"},
        upstream_ca_file=ca_file,
    )
    return GatewayServer(config)


def test_the_gateway_reaches_an_https_upstream_with_the_configured_ca(
    tls_gateway_policy: Policy, upstream_tls: TLSFiles, tmp_path: Path
) -> None:
    with _gateway(tls_gateway_policy, tmp_path, upstream_tls.ca_file) as gw:
        client = openai.OpenAI(base_url=gw.openai_base_url, api_key="unused", max_retries=0)
        with client:
            raw = client.chat.completions.with_raw_response.create(
                model="tierwise/auto", messages=[{"role": "user", "content": "over tls"}]
            )
    assert raw.http_response.status_code == 200
    assert raw.parse().choices[0].message.content == "over tls"
    assert raw.headers["x-tierwise-model"] == "gpt-4o-mini"


def test_without_the_ca_the_gateway_answers_502_not_500(
    tls_gateway_policy: Policy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with _gateway(tls_gateway_policy, tmp_path) as gw:
        client = openai.OpenAI(base_url=gw.openai_base_url, api_key="unused", max_retries=0)
        with client, pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(
                model="tierwise/auto", messages=[{"role": "user", "content": "over tls"}]
            )
    assert info.value.status_code == 502
    assert "certificate" in str(info.value.body)


@pytest.mark.parametrize(
    ("env", "expected"),
    [({}, FastTransport), ({"HTTPS_PROXY": "http://127.0.0.1:3128"}, HttpxTransport)],
    ids=["direct", "proxy"],
)
def test_the_gateway_uses_the_lean_client_unless_a_proxy_is_configured(
    tls_gateway_policy: Policy,
    tmp_path: Path,
    env: dict[str, str],
    expected: type[Transport],
) -> None:
    config = GatewayConfig(
        policy=tls_gateway_policy,
        ledger_url=str(tmp_path / "ledger.db"),
        env={TEST_KEY_ENV: "test", **env},
    )
    with GatewayServer(config) as gw:
        transport = gw.app.state.service.pool.transport
        assert type(transport) is expected


@pytest.mark.parametrize(
    "headers",
    [
        {"x-note": "a\r\nx-injected: 1"},
        {"x-note": "a\nx-injected: 1"},
        {"x-note": "a\x00b"},
        {"x-note": "caf\u00e9 \u2615"},
        {"bad name": "v"},
        {"transfer-encoding": "gzip"},
    ],
    ids=[
        "crlf-in-value",
        "lf-in-value",
        "nul-in-value",
        "non-latin-1-value",
        "space-in-name",
        "non-chunked-transfer-encoding",
    ],
)
async def test_a_header_that_cannot_be_sent_is_a_transport_error(
    up: Upstream, headers: dict[str, str]
) -> None:
    """Nothing reaches the upstream, and the caller gets a TransportError, not a ValueError."""
    with pytest.raises(TransportError):
        await up.transport.send(
            up.url("/v1/messages"), json.dumps(ANTHROPIC_BODY).encode(), headers, 5
        )
    assert up.server.requests == []


async def test_a_chunked_request_body_is_framed_as_chunks(up: Upstream) -> None:
    """A caller's ``transfer-encoding: chunked`` is honoured, not sent as a raw body."""
    body = json.dumps(ANTHROPIC_BODY).encode()
    headers = {"transfer-encoding": "chunked"}
    response = await up.transport.send(up.url("/v1/messages"), body, headers, 5.0)
    assert response.status == 200 and b"hello upstream" in await response.read()
    assert up.server.requests[-1].body == ANTHROPIC_BODY
