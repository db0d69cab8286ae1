"""The gateway's upstream HTTP transports: a lean pooled HTTP/1.1 client, and httpx2.

Measured on loopback, ``httpx2.AsyncClient.post`` spends about a millisecond of CPU per call
building and parsing what this module does in tens of microseconds, and the gateway's overhead
budget is a millisecond. So ``http://`` upstreams (local OpenAI-compatible servers, loopback) go
through :class:`FastTransport`: keep-alive connections per origin, one write per request,
Content-Length and chunked bodies, connect/read timeouts, and one transparent retry when a
pooled connection turns out to have been closed by the server before it answered. ``https://``
upstreams (the public providers, where network latency dwarfs the client's cost) and every
upstream when an HTTP proxy is configured (``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY``) go
through :class:`HttpxTransport`, the maintained library; :class:`SchemeTransport` dispatches.

Both raise only :class:`TransportError` (``kind``: ``connect``, ``timeout`` or ``protocol``), so
:mod:`tierwise.gateway.upstream` maps one small tree into tierwise's provider errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

__all__ = [
    "FastTransport",
    "HttpxTransport",
    "SchemeTransport",
    "Transport",
    "TransportError",
    "UpstreamResponse",
    "proxy_configured",
]

_READ_LIMIT = 1 << 20  # longest header block / chunk-size line accepted
_MAX_HEADER_BYTES = 256 * 1024


class TransportError(Exception):
    """An upstream exchange failed below HTTP semantics.

    ``kind``: ``connect`` (could not connect or the connection failed before a response),
    ``timeout`` (no answer in time) or ``protocol`` (a reply cut short or not HTTP).
    """

    def __init__(self, kind: Literal["connect", "timeout", "protocol"], message: str) -> None:
        super().__init__(message)
        self.kind = kind


class UpstreamResponse(Protocol):
    """A response whose status and headers have arrived; the body is read on demand."""

    status: int
    headers: Mapping[str, str]

    async def read(self) -> bytes:
        """The whole body (then the connection is released)."""

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body as it arrives."""

    async def aclose(self) -> None:
        """Release the connection (closed if the body was not read)."""


class Transport(Protocol):
    """Sends one upstream request; see :class:`FastTransport`."""

    async def send(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float
    ) -> UpstreamResponse:
        """POST *body*; returns once the status line and headers have arrived."""

    async def aclose(self) -> None:
        """Close pooled connections."""


def proxy_configured(env: Mapping[str, str]) -> bool:
    """Whether the environment names an HTTP(S) proxy for outgoing requests."""
    return any(env.get(k) or env.get(k.lower()) for k in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"))


# -- the lean client ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Origin:
    scheme: str
    host: str
    port: int

    @property
    def key(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port


class _Connection:
    __slots__ = ("idle_since", "origin", "reader", "reaper", "reused", "writer")

    def __init__(
        self,
        origin: _Origin,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        reaper: set[asyncio.Task[None]],
    ) -> None:
        self.origin = origin
        self.reader = reader
        self.writer = writer
        self.reaper = reaper
        self.idle_since = time.monotonic()
        self.reused = False

    def close(self) -> None:
        """Close now; the socket is released by a task the transport awaits on ``aclose``."""
        if self.writer.is_closing():
            return
        self.writer.close()
        task = asyncio.get_running_loop().create_task(self._wait_closed())
        self.reaper.add(task)
        task.add_done_callback(self.reaper.discard)

    async def _wait_closed(self) -> None:
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
            async with asyncio.timeout(5):
                await self.writer.wait_closed()


class _FastResponse:
    """Body framing for one response on a pooled connection."""

    def __init__(
        self,
        transport: FastTransport,
        conn: _Connection,
        status: int,
        headers: dict[str, str],
        timeout_s: float,
    ) -> None:
        self._transport = transport
        self._conn: _Connection | None = conn
        self.status = status
        self.headers: Mapping[str, str] = headers
        self._timeout = timeout_s
        length = headers.get("content-length")
        self._chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        self._remaining = int(length) if length is not None and not self._chunked else None
        self._keep = headers.get("connection", "").lower() != "close" and (
            self._chunked or self._remaining is not None
        )
        self._done = False

    async def _read(self, n: int) -> bytes:
        assert self._conn is not None
        try:
            async with asyncio.timeout(self._timeout):
                return await self._conn.reader.readexactly(n)
        except asyncio.IncompleteReadError as exc:
            raise TransportError("protocol", "the response body was cut short") from exc
        except TimeoutError as exc:
            raise TransportError("timeout", f"no response data for {self._timeout} s") from exc
        except OSError as exc:
            raise TransportError("protocol", f"the connection broke mid-body: {exc}") from exc

    async def _line(self) -> bytes:
        assert self._conn is not None
        try:
            async with asyncio.timeout(self._timeout):
                return await self._conn.reader.readuntil(b"\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise TransportError("protocol", "the response body was cut short") from exc
        except TimeoutError as exc:
            raise TransportError("timeout", f"no response data for {self._timeout} s") from exc
        except OSError as exc:
            raise TransportError("protocol", f"the connection broke mid-body: {exc}") from exc

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        if self._done or self._conn is None:
            return
        try:
            if self._chunked:
                while True:
                    size_line = await self._line()
                    try:
                        size = int(size_line.split(b";", 1)[0].strip(), 16)
                    except ValueError as exc:
                        raise TransportError("protocol", "a malformed chunk header") from exc
                    if size == 0:
                        while (await self._line()) != b"\r\n":  # trailers
                            pass
                        break
                    data = await self._read(size + 2)
                    yield data[:-2]
            elif self._remaining is not None:
                while self._remaining > 0:
                    data = await self._read_some(min(self._remaining, 65536))
                    self._remaining -= len(data)
                    yield data
            else:
                while True:
                    data = await self._read_some(65536)
                    if not data:
                        break
                    yield data
            self._done = True
        finally:
            await self.aclose()

    async def _read_some(self, n: int) -> bytes:
        assert self._conn is not None
        try:
            async with asyncio.timeout(self._timeout):
                data = await self._conn.reader.read(n)
        except TimeoutError as exc:
            raise TransportError("timeout", f"no response data for {self._timeout} s") from exc
        except OSError as exc:
            raise TransportError("protocol", f"the connection broke mid-body: {exc}") from exc
        if not data and self._remaining is not None:
            raise TransportError("protocol", "the response body was cut short")
        return data

    async def read(self) -> bytes:
        if self._remaining is not None and not self._chunked:
            try:
                data = await self._read(self._remaining) if self._remaining else b""
                self._remaining = 0
                self._done = True
            finally:
                await self.aclose()
            return data
        return b"".join([part async for part in self.aiter_bytes()])

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._done and self._keep:
            self._transport._release(conn)
        else:
            conn.close()


class FastTransport:
    """Pooled keep-alive HTTP/1.1 over asyncio streams (``http`` and ``https``)."""

    def __init__(
        self,
        *,
        connect_timeout_s: float = 10.0,
        idle_timeout_s: float = 4.0,
        max_idle_per_origin: int = 512,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.connect_timeout_s = connect_timeout_s
        # Shorter than common server keep-alive timeouts (uvicorn 5 s, nginx 75 s), so a pooled
        # connection is rarely one the server is closing at that very moment.
        self.idle_timeout_s = idle_timeout_s
        self.max_idle_per_origin = max_idle_per_origin
        self._ssl = ssl_context
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._origins: dict[str, tuple[_Origin, str]] = {}
        self._closed = False

    def _parse(self, url: str) -> tuple[_Origin, str]:
        cached = self._origins.get(url)
        if cached is None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise TransportError("connect", f"unsupported upstream URL {url!r}")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            origin = _Origin(parts.scheme, parts.hostname, port)
            target = parts.path or "/"
            if parts.query:
                target += f"?{parts.query}"
            host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
            cached = self._origins[url] = (origin, f"{target}\x00{host}")
        return cached

    def _ssl_for(self, origin: _Origin) -> ssl.SSLContext | None:
        if origin.scheme != "https":
            return None
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    async def _connect(self, origin: _Origin) -> _Connection:
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                reader, writer = await asyncio.open_connection(
                    origin.host,
                    origin.port,
                    ssl=self._ssl_for(origin),
                    limit=_READ_LIMIT,
                )
        except TimeoutError as exc:
            raise TransportError(
                "timeout", f"connecting to {origin.host}:{origin.port} timed out"
            ) from exc
        except (OSError, ssl.SSLError) as exc:
            raise TransportError(
                "connect", f"cannot connect to {origin.host}:{origin.port}: {exc}"
            ) from exc
        return _Connection(origin, reader, writer, self._closing)

    def _acquire_idle(self, origin: _Origin) -> _Connection | None:
        pool = self._idle.get(origin.key)
        now = time.monotonic()
        while pool:
            conn = pool.pop()
            if now - conn.idle_since < self.idle_timeout_s and not conn.reader.at_eof():
                conn.reused = True
                return conn
            conn.close()
        return None

    def _release(self, conn: _Connection) -> None:
        if self._closed:
            conn.close()
            return
        pool = self._idle.setdefault(conn.origin.key, [])
        if len(pool) >= self.max_idle_per_origin:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        pool.append(conn)

    async def send(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float
    ) -> UpstreamResponse:
        """POST *body*; returns once the status line and headers have arrived."""
        origin, target_host = self._parse(url)
        target, host = target_host.split("\x00", 1)
        head = [f"POST {target} HTTP/1.1\r\nhost: {host}\r\ncontent-length: {len(body)}\r\n"]
        head += [f"{k}: {v}\r\n" for k, v in headers.items()]
        head.append("\r\n")
        payload = "".join(head).encode("latin-1") + body
        conn = self._acquire_idle(origin)
        if conn is not None:
            try:
                return await self._exchange(conn, payload, timeout_s)
            except _StaleConnection:
                pass  # the server closed the idle connection: once more, on a new one
        conn = await self._connect(origin)
        try:
            return await self._exchange(conn, payload, timeout_s)
        except _StaleConnection as exc:
            raise TransportError("connect", str(exc)) from None

    async def _exchange(self, conn: _Connection, payload: bytes, timeout_s: float) -> _FastResponse:
        try:
            conn.writer.write(payload)
            async with asyncio.timeout(timeout_s):
                raw = await conn.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            conn.close()
            if not exc.partial:
                raise _StaleConnection(
                    "the upstream closed the connection without answering"
                ) from exc
            raise TransportError("protocol", "the response headers were cut short") from exc
        except TimeoutError as exc:
            conn.close()
            raise TransportError("timeout", f"no response within {timeout_s} s") from exc
        except asyncio.LimitOverrunError as exc:
            conn.close()
            raise TransportError("protocol", "the response headers are too long") from exc
        except (ConnectionError, OSError) as exc:
            conn.close()
            raise _StaleConnection(f"the connection failed before a response: {exc}") from exc
        if len(raw) > _MAX_HEADER_BYTES:
            conn.close()
            raise TransportError("protocol", "the response headers are too long")
        try:
            text = raw.decode("latin-1")
            status_line, *lines = text[:-4].split("\r\n")
            version, code, *_ = status_line.split(" ", 2)
            status = int(code)
            if not version.startswith("HTTP/1."):
                raise ValueError(version)
        except (ValueError, IndexError) as exc:
            conn.close()
            raise TransportError("protocol", "the upstream did not answer in HTTP/1.1") from exc
        headers: dict[str, str] = {}
        for line in lines:
            name, sep, value = line.partition(":")
            if not sep:
                continue
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        if version == "HTTP/1.0" and "keep-alive" not in headers.get("connection", "").lower():
            headers["connection"] = "close"
        return _FastResponse(self, conn, status, headers, timeout_s)

    async def aclose(self) -> None:
        """Close every connection this transport opened."""
        self._closed = True
        pools, self._idle = self._idle, {}
        for pool in pools.values():
            for conn in pool:
                conn.close()
        while self._closing:
            await asyncio.gather(*list(self._closing))


class _StaleConnection(Exception):
    """A pooled connection failed before any response byte: safe to retry on a new one."""


# -- httpx2, for proxies ---------------------------------------------------------------------------


class _HttpxResponse:
    def __init__(self, response: Any) -> None:
        self._response = response
        self.status: int = response.status_code
        self.headers: Mapping[str, str] = response.headers

    async def read(self) -> bytes:
        import httpx2

        try:
            return bytes(await self._response.aread())
        except httpx2.HTTPError as exc:
            raise _httpx_error(exc) from None
        finally:
            await self._response.aclose()

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        import httpx2

        try:
            async for chunk in self._response.aiter_raw():
                yield chunk
        except httpx2.HTTPError as exc:
            raise _httpx_error(exc) from None
        finally:
            await self._response.aclose()

    async def aclose(self) -> None:
        await self._response.aclose()


def _httpx_error(exc: Exception) -> TransportError:
    import httpx2

    if isinstance(exc, httpx2.TimeoutException):
        return TransportError("timeout", str(exc) or type(exc).__name__)
    if isinstance(exc, httpx2.RemoteProtocolError | httpx2.DecodingError | httpx2.ReadError):
        return TransportError("protocol", str(exc) or type(exc).__name__)
    return TransportError("connect", str(exc) or type(exc).__name__)


class HttpxTransport:
    """httpx2 with the environment's proxy settings (``trust_env``)."""

    def __init__(self, *, max_connections: int = 512) -> None:
        import httpx2

        self._client = httpx2.AsyncClient(
            limits=httpx2.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            follow_redirects=False,
            trust_env=True,
        )

    async def send(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float
    ) -> UpstreamResponse:
        """POST *body* through httpx2 (proxies honoured); the body is streamed."""
        import httpx2

        request = self._client.build_request(
            "POST",
            url,
            content=body,
            headers=dict(headers),
            timeout=httpx2.Timeout(timeout_s, connect=min(10.0, timeout_s)),
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx2.HTTPError as exc:
            raise _httpx_error(exc) from None
        return _HttpxResponse(response)

    async def aclose(self) -> None:
        """Close the httpx2 client."""
        await self._client.aclose()


class SchemeTransport:
    """``http://`` upstreams (local servers, loopback) on the lean client, ``https://`` on httpx2.

    The lean client's TLS path is not exercised by this project's tests, and public provider
    endpoints are HTTPS with network latency that dwarfs the client's cost, so they go through
    the maintained library; local OpenAI-compatible servers get the millisecond back.
    """

    def __init__(self, plain: Transport, secure: Transport) -> None:
        self._plain = plain
        self._secure = secure

    async def send(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float
    ) -> UpstreamResponse:
        chosen = self._secure if url.startswith("https:") else self._plain
        return await chosen.send(url, body, headers, timeout_s)

    async def aclose(self) -> None:
        try:
            await self._plain.aclose()
        finally:
            await self._secure.aclose()
