"""HTTP/1.1 response framing, case by case, against a raw-socket server writing exact bytes.

Every upstream transport (the lean h11 client and httpx2, over ``http://`` and ``https://``)
either reads a valid answer, keeping the connection only when the exchange ended cleanly, or
raises a :class:`TransportError` with a kind — never another exception, never a hang — and then
answers the next request on a fresh connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from tierwise.errors import BadResponseError
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
from tierwise.providers.base import CompletionRequest
from tierwise.testing import TLSFiles
from tierwise.testing.policies import TEST_KEY_ENV, upstream_policy

OK = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 4\r\n\r\nnext"
HANG = b"<no answer>"
TIMEOUT_S = 2.0  # a hang shows up as a timeout after this, failing the test that expected more


class RawServer:
    """Answers the first *times* requests with exact bytes (then closes, if told); others OK."""

    def __init__(
        self, first: bytes, close_after: bool, times: int = 1, drop: frozenset[int] = frozenset()
    ) -> None:
        self.first = first
        self.close_after = close_after
        self.times = times
        self.drop = drop  # request numbers answered by closing the connection
        self.connections = 0
        self.requests = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.writers: list[asyncio.StreamWriter] = []
        self.stopping = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        self.writers.append(writer)
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                await reader.readexactly(int(length.group(1)) if length else 0)
                self.requests += 1
                if self.requests in self.drop:
                    break
                if self.requests > self.times:
                    writer.write(OK)
                elif self.first == HANG:
                    await self.stopping.wait()
                    break
                else:
                    writer.write(self.first)
                    if self.close_after:
                        await writer.drain()
                        break
                await writer.drain()
        except (asyncio.IncompleteReadError, OSError):
            pass  # the client closed the connection
        finally:
            writer.close()  # not awaited: a TLS client may never answer the close_notify
            self.tasks.discard(task)

    async def stop(self) -> None:
        self.stopping.set()
        for writer in self.writers:
            writer.transport.abort()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@dataclass
class Case:
    first: bytes
    close_after: bool = False
    #: the answer expected (status, body), or None when a TransportError is expected
    answer: tuple[int, bytes] | None = None
    #: the error kinds accepted, when no answer is expected
    kinds: frozenset[str] = frozenset({"protocol"})
    #: whether the follow-up request reuses the connection (per transport when they differ)
    reused: dict[str, bool] = field(default_factory=lambda: {"lean": False, "httpx2": False})
    #: transports that refuse what the other answers (a choice the RFC leaves open)
    refused_by: frozenset[str] = frozenset()


def _same(reused: bool) -> dict[str, bool]:
    return {"lean": reused, "httpx2": reused}


CASES = {
    # answers
    "content-length-body": Case(
        b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nhello world",
        answer=(200, b"hello world"),
        reused=_same(True),
    ),
    "204-without-length": Case(
        b"HTTP/1.1 204 No Content\r\nx-request-id: r1\r\n\r\n",
        answer=(204, b""),
        reused=_same(True),
    ),
    "103-early-hints-then-200": Case(
        b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        answer=(200, b"ok"),
        reused=_same(True),
    ),
    "100-continue-twice-then-200": Case(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        answer=(200, b"ok"),
        reused=_same(True),
    ),
    # RFC 9112 section 6.3: identical repeated values may be taken as one (httpx2) or refused
    # (the lean client's llhttp, as Node.js does)
    "identical-duplicate-content-length": Case(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\nok",
        answer=(200, b"ok"),
        reused={"lean": False, "httpx2": True},
        refused_by=frozenset({"lean"}),
    ),
    "chunked-with-trailer": Case(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n",
        answer=(200, b"hello world"),
        reused=_same(True),
    ),
    "read-to-eof-body": Case(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall of it, until the close",
        close_after=True,
        answer=(200, b"all of it, until the close"),
    ),
    # the server drops a kept-alive connection right after answering: the pool must notice
    "silent-close-after-a-whole-answer": Case(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", close_after=True, answer=(200, b"ok")
    ),
    "http-1.0-with-length": Case(
        b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok", answer=(200, b"ok")
    ),
    "connection-close": Case(
        b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
        answer=(200, b"ok"),
    ),
    # Transfer-Encoding wins; the lean client then drops the connection (a smuggling smell)
    "length-and-chunked": Case(
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\ntransfer-encoding: chunked\r\n\r\n"
        b"2\r\nok\r\n0\r\n\r\n",
        answer=(200, b"ok"),
        reused={"lean": False, "httpx2": True},
    ),
    # malformed or cut: a protocol error, and the connection is dropped
    "conflicting-content-length": Case(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok"
    ),
    "conflicting-content-length-list": Case(b"HTTP/1.1 200 OK\r\ncontent-length: 2, 3\r\n\r\nok"),
    "non-numeric-content-length": Case(b"HTTP/1.1 200 OK\r\ncontent-length: lots\r\n\r\nok"),
    "negative-content-length": Case(b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\nok"),
    "body-shorter-than-length-then-eof": Case(
        b"HTTP/1.1 200 OK\r\ncontent-length: 20\r\n\r\nonly eleven", close_after=True
    ),
    "chunked-cut-mid-chunk": Case(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n10\r\nonly a part",
        close_after=True,
    ),
    "chunked-cut-before-last-chunk": Case(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n", close_after=True
    ),
    "chunk-size-not-hex": Case(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n"
    ),
    "unsupported-transfer-encoding": Case(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nok", close_after=True
    ),
    "unasked-101-switching-protocols": Case(
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\nconnection: upgrade\r\n\r\n"
    ),
    "interim-response-then-eof": Case(b"HTTP/1.1 103 Early Hints\r\n\r\n", close_after=True),
    "headers-cut-then-eof": Case(b"HTTP/1.1 200 OK\r\ncontent-le", close_after=True),
    "not-http": Case(b"SSH-2.0-OpenSSH_9.6\r\n\r\n", close_after=True),
    "status-not-a-number": Case(b"HTTP/1.1 2xx OK\r\ncontent-length: 2\r\n\r\nok"),
    "header-block-too-long": Case(
        b"HTTP/1.1 200 OK\r\n" + b"x-filler: " + b"a" * 400_000 + b"\r\n\r\n", close_after=True
    ),
    # no answer at all: the connection broke, or nothing came in time
    "eof-before-any-byte": Case(b"", close_after=True, kinds=frozenset({"connect", "protocol"})),
    "no-answer": Case(HANG, kinds=frozenset({"timeout"})),
}


#: Cases after which httpx2 over TLS reuses a connection the server closed (see the xfail).
HTTPX2_TLS_STALE = frozenset({"read-to-eof-body", "silent-close-after-a-whole-answer"})


@pytest.fixture(params=["lean-http", "lean-https", "httpx2-http", "httpx2-https"])
def flavour(request: pytest.FixtureRequest) -> tuple[str, str]:
    name, scheme = request.param.split("-")
    return name, scheme


@contextlib.asynccontextmanager
async def serving(server: RawServer, tls: ssl.SSLContext | None) -> AsyncIterator[int]:
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=tls)
    try:
        yield listener.sockets[0].getsockname()[1]
    finally:
        listener.close()
        await server.stop()
        await listener.wait_closed()


@contextlib.asynccontextmanager
async def client_of(
    server: RawServer, name: str, scheme: str, tls: TLSFiles
) -> AsyncIterator[tuple[Transport, str]]:
    """A transport of kind *name* trusting *tls*, and the raw server's base URL.

    The transport is closed before the server stops, as a client closes its connections.
    """
    async with serving(server, tls.server_context() if scheme == "https" else None) as port:
        context = upstream_ssl_context(tls.ca_file)
        transport: Transport = (
            FastTransport(ssl_context=context)
            if name == "lean"
            else HttpxTransport(ssl_context=context)
        )
        try:
            yield transport, f"{scheme}://127.0.0.1:{port}"
        finally:
            await transport.aclose()


@pytest.mark.parametrize("case_id", list(CASES))
async def test_each_framing_ends_in_an_answer_or_a_transport_error(
    case_id: str,
    flavour: tuple[str, str],
    upstream_tls: TLSFiles,
    request: pytest.FixtureRequest,
) -> None:
    case = CASES[case_id]
    name, scheme = flavour
    if (name, scheme) == ("httpx2", "https") and case_id in HTTPX2_TLS_STALE:
        request.applymarker(
            pytest.mark.xfail(
                strict=True,
                reason="httpcore2 keeps pooling a TLS connection the server has closed; the "
                "next request on it fails as a protocol error (a retryable BadResponseError). "
                "The lean client notices the close.",
            )
        )
    server = RawServer(case.first, case.close_after)
    timeout = 0.3 if case.first == HANG else TIMEOUT_S
    async with client_of(server, name, scheme, upstream_tls) as (transport, base):
        url = f"{base}/v1/messages"
        if case.answer is not None and name not in case.refused_by:
            response = await transport.send(url, b'{"q": 1}', {}, timeout)
            assert (response.status, await response.read()) == case.answer
        else:
            with pytest.raises(TransportError) as info:
                response = await transport.send(url, b'{"q": 1}', {}, timeout)
                await response.read()
            assert info.value.kind in case.kinds, info.value
        # the transport goes on: the next request is answered, on the same connection only
        # when the first exchange ended cleanly
        again = await transport.send(url, b"{}", {}, TIMEOUT_S)
        assert (again.status, await again.read()) == (200, b"next")
        assert server.connections == (1 if case.reused[name] else 2)


async def test_streamed_bodies_fail_the_same_way(
    flavour: tuple[str, str], upstream_tls: TLSFiles
) -> None:
    """Read part by part, a chunked body cut mid-chunk ends in a protocol error too."""
    name, scheme = flavour
    server = RawServer(CASES["chunked-cut-mid-chunk"].first, close_after=True)
    async with client_of(server, name, scheme, upstream_tls) as (transport, base):
        response = await transport.send(f"{base}/", b"", {}, TIMEOUT_S)
        parts: list[bytes] = []
        with pytest.raises(TransportError) as info:
            async for part in response.aiter_bytes():
                parts.append(part)
        assert info.value.kind == "protocol"
        assert b"only a part".startswith(b"".join(parts))


async def test_bytes_after_the_body_are_not_read_as_the_next_answer(
    upstream_tls: TLSFiles,
) -> None:
    """Extra bytes after a Content-Length body mean the connection cannot be trusted again."""
    server = RawServer(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n", close_after=False
    )
    async with client_of(server, "lean", "http", upstream_tls) as (transport, base):
        first = await transport.send(f"{base}/", b"", {}, TIMEOUT_S)
        assert await first.read() == b"ok"
        again = await transport.send(f"{base}/", b"", {}, TIMEOUT_S)
        assert (again.status, await again.read()) == (200, b"next")
        assert server.connections == 2


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_a_pooled_connection_closed_unanswered_is_retried_once(
    scheme: str, upstream_tls: TLSFiles
) -> None:
    """The lean client resends on a new connection when a reused one dies before any byte."""
    server = RawServer(OK, close_after=False, drop=frozenset({2}))
    async with client_of(server, "lean", scheme, upstream_tls) as (transport, base):
        for _ in range(2):
            response = await transport.send(f"{base}/", b"", {}, TIMEOUT_S)
            assert (response.status, await response.read()) == (200, b"next")
    assert (server.requests, server.connections) == (3, 2)


# -- mapped, not raised: what the caller sees -----------------------------------------------------


async def test_a_malformed_reply_is_a_bad_response_error(upstream_tls: TLSFiles) -> None:
    server = RawServer(CASES["conflicting-content-length"].first, close_after=False)
    async with client_of(server, "lean", "http", upstream_tls) as (transport, base):
        provider = RawProvider("anthropic", transport=transport, base_url=base, api_key="k")
        request = CompletionRequest(
            model="m",
            messages=(),
            timeout_s=TIMEOUT_S,
            extra={"body": {"model": "m", "max_tokens": 8, "messages": []}},
        )
        with pytest.raises(BadResponseError, match="Content-Length"):
            await provider.acomplete(request)


@contextlib.contextmanager
def serving_in_a_thread(server: RawServer) -> Iterator[int]:
    """The raw server on its own event loop, for a client that blocks (the SDKs)."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    ports: list[int] = []
    stop: list[asyncio.Event] = []

    async def main() -> None:
        stop.append(asyncio.Event())
        async with serving(server, None) as port:
            ports.append(port)
            started.set()
            await stop[0].wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    try:
        assert started.wait(10), "the raw server did not start"
        yield ports[0]
    finally:
        loop.call_soon_threadsafe(stop[0].set)
        thread.join(10)
        loop.close()


@pytest.mark.parametrize("case_id", ["conflicting-content-length", "non-numeric-content-length"])
def test_the_gateway_answers_a_malformed_upstream_with_502_in_the_callers_dialect(
    case_id: str, tmp_path: Path
) -> None:
    """Before h11 framed replies, these raised ValueError in the gateway: a 500."""
    server = RawServer(CASES[case_id].first, close_after=False, times=1000)
    with serving_in_a_thread(server) as port:
        policy = upstream_policy(f"http://127.0.0.1:{port}", tiers=[("cheap", "claude-haiku-4-5")])
        config = GatewayConfig(
            policy=policy, ledger_url=str(tmp_path / "ledger.db"), env={TEST_KEY_ENV: "k"}
        )
        with GatewayServer(config) as gw:
            claude = anthropic.Anthropic(base_url=gw.base_url, api_key="unused", max_retries=0)
            gpt = openai.OpenAI(base_url=gw.openai_base_url, api_key="unused", max_retries=0)
            messages: list[Any] = [{"role": "user", "content": "hi"}]
            with claude, pytest.raises(anthropic.APIStatusError) as a_info:
                claude.messages.create(model="tierwise/auto", max_tokens=16, messages=messages)
            with gpt, pytest.raises(openai.APIStatusError) as o_info:
                gpt.chat.completions.create(model="tierwise/auto", messages=messages)
    assert a_info.value.status_code == o_info.value.status_code == 502
    assert a_info.value.body["type"] == "error"  # type: ignore[index]
    assert "Content-Length" in a_info.value.body["error"]["message"]  # type: ignore[index]
    assert o_info.value.code == "upstream_error"
    assert server.requests >= 2
