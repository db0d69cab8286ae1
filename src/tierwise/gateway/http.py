"""The gateway's upstream HTTP transports: a lean pooled HTTP/1.1 client on h11, and httpx2.

The gateway spends its overhead budget (a millisecond) per call, and ``httpx2.AsyncClient``
alone spends about a millisecond of CPU per call (``benchmarks/upstream_transport.py``). So
upstreams are reached through :class:`FastTransport`: asyncio streams, keep-alive connections
per origin, one write per request, connect/read timeouts, one transparent retry when a pooled
connection turns out to have been closed by the server before it answered, and every byte of
the response framed by ``h11`` (the sans-I/O HTTP/1.1 library under uvicorn and httpcore), which
costs about 2x a hand-written parser and buys its correctness: 1xx interim responses, bodyless
204/304, Content-Length, chunked and read-to-EOF bodies, and conflicting or malformed framing
refused. ``https://`` goes through the same client, checking certificates against
:func:`upstream_ssl_context`. When an HTTP proxy is configured (``HTTPS_PROXY`` /
``HTTP_PROXY`` / ``ALL_PROXY``) every upstream goes through :class:`HttpxTransport` instead,
which speaks to proxies.

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

import h11

__all__ = [
    "FastTransport",
    "HttpxTransport",
    "Transport",
    "TransportError",
    "UpstreamResponse",
    "proxy_configured",
    "upstream_ssl_context",
]


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


def upstream_ssl_context(ca_file: str | None = None) -> ssl.SSLContext:
    """The certificates ``https://`` upstreams are checked against, for every transport.

    With *ca_file* (a PEM bundle), exactly the CAs in it, like ``SSL_CERT_FILE`` or curl's
    ``--cacert``: put the public roots in the bundle too if some upstreams are public. Without
    it, httpx2's default, the one the official SDKs use: ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``
    when set, else the system's store.

    Raises:
        ValueError: *ca_file* cannot be read or holds no certificate.
    """
    if ca_file is None:
        import httpx2

        return httpx2.create_ssl_context()
    try:
        return ssl.create_default_context(cafile=ca_file)
    except OSError as exc:  # FileNotFoundError, ssl.SSLError for a file that is not PEM
        raise ValueError(f"cannot load the upstream CA file {ca_file!r}: {exc}") from None


# -- the lean client ---------------------------------------------------------------------------

_READ_SIZE = 65536
_STREAM_LIMIT = 1 << 20  # bytes buffered by a connection's reader before it pauses the socket
_MAX_HEAD_BYTES = 256 * 1024  # longest response head (status line + headers) accepted


@dataclass(frozen=True, slots=True)
class _Target:
    """What one upstream URL resolves to, parsed once per URL."""

    key: tuple[str, str, int]  # (scheme, host, port): the pool's origin
    host: str
    port: int
    tls: bool
    target: str  # path and query
    host_header: str


class _Connection:
    __slots__ = ("h11", "idle_since", "key", "reader", "reaper", "writer")

    def __init__(
        self,
        key: tuple[str, str, int],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        reaper: set[asyncio.Task[None]],
    ) -> None:
        self.key = key
        self.reader = reader
        self.writer = writer
        self.reaper = reaper
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_HEAD_BYTES)
        self.idle_since = time.monotonic()

    def close(self) -> None:
        """Close now; the socket is released by a task the transport awaits on ``aclose``."""
        if self.writer.is_closing():
            return
        self.writer.close()
        task = asyncio.get_running_loop().create_task(self._wait_closed())
        self.reaper.add(task)
        task.add_done_callback(self.reaper.discard)

    async def _wait_closed(self) -> None:
        with contextlib.suppress(OSError, TimeoutError):  # ssl.SSLError is an OSError
            async with asyncio.timeout(5):
                await self.writer.wait_closed()


class _LeanResponse:
    """A response whose head h11 has parsed; the body is framed by h11 as it is read."""

    def __init__(
        self,
        transport: FastTransport,
        conn: _Connection,
        head: h11.Response,
        timeout_s: float,
    ) -> None:
        self._transport = transport
        self._conn: _Connection | None = conn
        self.status: int = head.status_code
        headers: dict[str, str] = {}
        for raw_name, raw_value in head.headers:
            name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self.headers: Mapping[str, str] = headers
        self._timeout = timeout_s
        # Both framings at once is legal (Transfer-Encoding wins) but a smuggling smell: use the
        # answer, never the connection again (RFC 9112 section 6.3).
        self._reusable = not ("content-length" in headers and "transfer-encoding" in headers)
        self._done = False

    async def _next_part(self, conn: _Connection) -> bytes:
        """The body bytes one network read yields (``b""`` once the body has ended)."""
        parts: list[bytes] = []
        machine = conn.h11
        while True:
            event = machine.next_event()
            if type(event) is h11.Data:
                parts.append(event.data)
            elif type(event) is h11.EndOfMessage:
                self._done = True
                return b"".join(parts)
            elif event is h11.NEED_DATA:
                if parts:
                    return b"".join(parts)
                async with asyncio.timeout(self._timeout):
                    data = await conn.reader.read(_READ_SIZE)
                if not data:  # a body read to EOF: h11 may call the exchange done, it is closed
                    self._reusable = False
                machine.receive_data(data)
            else:  # PAUSED or ConnectionClosed cannot come before EndOfMessage
                raise h11.RemoteProtocolError(f"unexpected {event!r} in a response body")

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        try:
            while not self._done and self._conn is not None:
                try:
                    part = await self._next_part(self._conn)
                except h11.RemoteProtocolError as exc:
                    raise TransportError("protocol", f"a malformed response body: {exc}") from exc
                except TimeoutError as exc:
                    raise TransportError(
                        "timeout", f"no response data for {self._timeout} s"
                    ) from exc
                except OSError as exc:
                    raise TransportError(
                        "protocol", f"the connection broke mid-body: {exc}"
                    ) from exc
                if part:
                    yield part
        finally:
            await self.aclose()

    async def read(self) -> bytes:
        return b"".join([part async for part in self.aiter_bytes()])

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        machine = conn.h11
        if (
            self._done
            and self._reusable
            and machine.our_state is h11.DONE
            and machine.their_state is h11.DONE
            and not machine.trailing_data[0]  # bytes past the body: the framing is not trusted
        ):
            machine.start_next_cycle()
            self._transport.release(conn)
        else:
            conn.close()


class FastTransport:
    """Pooled keep-alive HTTP/1.1 on asyncio streams, framed by h11 (``http`` and ``https``).

    h11 parses every response (1xx interim answers skipped, 204/304 without a body, Content-Length,
    chunked and read-to-EOF bodies; conflicting or malformed framing is a protocol error), so
    this module only moves bytes, pools connections and maps failures. Connections are reused
    only when h11 says the exchange ended cleanly. Certificates are checked against
    *ssl_context* (default: :func:`upstream_ssl_context`).
    """

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
        self._targets: dict[str, _Target] = {}
        self._closed = False

    def _parse(self, url: str) -> _Target:
        cached = self._targets.get(url)
        if cached is None:
            try:
                parts = urlsplit(url)
                if parts.scheme not in ("http", "https") or not parts.hostname:
                    raise ValueError("not an http(s) URL with a host")
                tls = parts.scheme == "https"
                port = parts.port or (443 if tls else 80)
                path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
                # The Host header is the URL's host[:port] as written (IPv6 keeps its brackets).
                host = parts.netloc.rpartition("@")[2]
                cached = _Target(
                    (parts.scheme, parts.hostname, port),
                    parts.hostname,
                    port,
                    tls,
                    path.encode("ascii").decode(),
                    host.encode("idna").decode(),
                )
            except ValueError as exc:  # UnicodeError too
                raise TransportError(
                    "connect", f"unsupported upstream URL {url!r}: {exc}"
                ) from None
            self._targets[url] = cached
        return cached

    def _ssl_for(self, target: _Target) -> ssl.SSLContext | None:
        if not target.tls:
            return None
        if self._ssl is None:
            self._ssl = upstream_ssl_context()
        return self._ssl

    async def _connect(self, target: _Target) -> _Connection:
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                reader, writer = await asyncio.open_connection(
                    target.host,
                    target.port,
                    ssl=self._ssl_for(target),
                    limit=_STREAM_LIMIT,
                    happy_eyeballs_delay=0.25,  # IPv6 and IPv4 raced, as httpx2 does
                )
        except TimeoutError as exc:
            raise TransportError(
                "timeout", f"connecting to {target.host}:{target.port} timed out"
            ) from exc
        except OSError as exc:  # ssl.SSLError (a certificate not trusted) is an OSError
            raise TransportError(
                "connect", f"cannot connect to {target.host}:{target.port}: {exc}"
            ) from exc
        return _Connection(target.key, reader, writer, self._closing)

    def _acquire_idle(self, key: tuple[str, str, int]) -> _Connection | None:
        pool = self._idle.get(key)
        now = time.monotonic()
        while pool:
            conn = pool.pop()
            if now - conn.idle_since < self.idle_timeout_s and not conn.reader.at_eof():
                return conn
            conn.close()
        return None

    def release(self, conn: _Connection) -> None:
        """Take back a connection whose exchange ended cleanly, for the next request."""
        if self._closed:
            conn.close()
            return
        pool = self._idle.setdefault(conn.key, [])
        if len(pool) >= self.max_idle_per_origin:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        pool.append(conn)

    async def send(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float
    ) -> UpstreamResponse:
        """POST *body*; returns once the final (non-1xx) status line and headers have arrived."""
        target = self._parse(url)
        try:
            request = h11.Request(
                method="POST",
                target=target.target,
                headers=[
                    ("host", target.host_header),
                    ("content-length", str(len(body))),
                    *headers.items(),
                ],
            )
        except (h11.LocalProtocolError, ValueError) as exc:  # a header h11 refuses to send
            raise TransportError("protocol", f"the request is not valid HTTP/1.1: {exc}") from None
        conn = self._acquire_idle(target.key)
        if conn is not None:
            try:
                return await self._exchange(conn, request, body, timeout_s)
            except _StaleConnection:
                pass  # the server closed the idle connection: once more, on a new one
        conn = await self._connect(target)
        try:
            return await self._exchange(conn, request, body, timeout_s)
        except _StaleConnection as exc:
            raise TransportError("connect", str(exc)) from None

    async def _exchange(
        self, conn: _Connection, request: h11.Request, body: bytes, timeout_s: float
    ) -> _LeanResponse:
        machine = conn.h11
        try:
            head = machine.send(request) or b""
            framed = machine.send_with_data_passthrough(h11.Data(data=body)) or []
            payload = b"".join([head, *framed, machine.send(h11.EndOfMessage()) or b""])
        except h11.LocalProtocolError as exc:  # framing headers h11 refuses to send
            conn.close()
            raise TransportError("protocol", f"the request is not valid HTTP/1.1: {exc}") from None
        received = False
        try:
            conn.writer.write(payload)
            async with asyncio.timeout(timeout_s):
                while True:
                    event = machine.next_event()
                    if event is h11.NEED_DATA:
                        data = await conn.reader.read(_READ_SIZE)
                        if not data and not received:
                            raise _StaleConnection(
                                "the upstream closed the connection without answering"
                            )
                        received = True
                        machine.receive_data(data)
                    elif type(event) is h11.Response:
                        return _LeanResponse(self, conn, event, timeout_s)
                    elif type(event) is not h11.InformationalResponse:  # 1xx: wait for more
                        raise h11.RemoteProtocolError(f"unexpected {event!r} before a response")
        except (_StaleConnection, asyncio.CancelledError):
            conn.close()
            raise
        except h11.RemoteProtocolError as exc:
            conn.close()
            raise TransportError(
                "protocol", f"the upstream did not answer in HTTP/1.1: {exc}"
            ) from exc
        except TimeoutError as exc:
            conn.close()
            raise TransportError("timeout", f"no response within {timeout_s} s") from exc
        except OSError as exc:
            conn.close()
            if not received:
                raise _StaleConnection(f"the connection failed before a response: {exc}") from exc
            raise TransportError("protocol", f"the connection broke mid-answer: {exc}") from exc

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
    """httpx2 with the environment's proxy settings (``trust_env``).

    Certificates are checked against *ssl_context* (default: :func:`upstream_ssl_context`).
    """

    def __init__(
        self, *, max_connections: int = 512, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        import httpx2

        self._client = httpx2.AsyncClient(
            limits=httpx2.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            follow_redirects=False,
            trust_env=True,
            verify=ssl_context if ssl_context is not None else upstream_ssl_context(),
        )

    async def send(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float
    ) -> UpstreamResponse:
        """POST *body* through httpx2 (proxies honoured); the body is streamed."""
        import httpx2

        try:
            request = self._client.build_request(
                "POST",
                url,
                content=body,
                headers=dict(headers),
                timeout=httpx2.Timeout(timeout_s, connect=min(10.0, timeout_s)),
            )
        except (ValueError, httpx2.HTTPError) as exc:  # a header httpx2 cannot encode
            raise TransportError("protocol", f"the request cannot be sent: {exc}") from None
        try:
            response = await self._client.send(request, stream=True)
        except httpx2.HTTPError as exc:
            raise _httpx_error(exc) from None
        return _HttpxResponse(response)

    async def aclose(self) -> None:
        """Close the httpx2 client."""
        await self._client.aclose()
