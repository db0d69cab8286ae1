"""The gateway's upstream HTTP transports: a lean pooled HTTP/1.1 client on llhttp, and httpx2.

The gateway spends its overhead budget (a millisecond) per call, and ``httpx2.AsyncClient``
alone spends about a millisecond of CPU per call (``benchmarks/upstream_transport.py``). So
upstreams are reached through :class:`FastTransport`: asyncio streams, keep-alive connections
per origin, one write per request, connect/read timeouts, one transparent retry when a pooled
connection turns out to have been closed by the server before it answered, and every byte of
the response parsed by llhttp through ``httptools`` (the parser of Node.js, and of uvicorn's
request side here), which costs 0.04-0.08x of ``h11``'s CPU per exchange
(``benchmarks/http_parsing.py``) and frames as strictly: 1xx interim responses, bodyless
204/304, Content-Length, chunked and read-to-EOF bodies, and conflicting or malformed framing
refused. ``https://`` goes through the same client,
checking certificates against :func:`upstream_ssl_context`. When an HTTP proxy is configured
(``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY``) every upstream goes through
:class:`HttpxTransport` instead, which speaks to proxies.

Both raise only :class:`TransportError` (``kind``: ``connect``, ``timeout`` or ``protocol``), so
:mod:`tierwise.gateway.upstream` maps one small tree into tierwise's provider errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import httptools

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
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_TARGET = re.compile(r"[\x21-\x7e]+")
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
_FRAMING = frozenset({"host", "content-length"})  # the client's own


@functools.lru_cache(maxsize=1024)
def _header_line(name: str, value: str) -> bytes:
    """``name: value\r\n`` as sent; the same few headers recur, so each is checked once.

    Raises:
        ValueError: the name is not a token or frames the message (the client sets those), or
            the value holds a control character (CR, LF, NUL: header injection) or non-Latin-1.
    """
    value = value.strip(" \t")
    if not _TOKEN.fullmatch(name) or name.lower() in _FRAMING:
        raise ValueError(f"illegal header name {name!r}")
    if not _FIELD_VALUE.fullmatch(value):
        raise ValueError(f"illegal characters in the value of header {name!r}")
    return f"{name}: {value}\r\n".encode("latin-1")


@dataclass(frozen=True, slots=True)
class _Target:
    """What one upstream URL resolves to, parsed once per URL."""

    key: tuple[str, str, int]  # (scheme, host, port): the pool's origin
    host: str
    port: int
    tls: bool
    request_line: bytes  # "POST path?query HTTP/1.1" and the Host header, as sent


def _request(target: _Target, body: bytes, headers: Mapping[str, str]) -> bytes:
    """The request's bytes: one write. A caller's ``transfer-encoding: chunked`` is honoured
    (the body sent as one chunk); any other transfer coding is refused.

    Raises:
        ValueError: a header that cannot be sent (see :func:`_header_line`).
    """
    lines = [_header_line(name, value) for name, value in headers.items()]
    coding = next((v for k, v in headers.items() if k.lower() == "transfer-encoding"), None)
    if coding is None:
        return b"".join(
            [target.request_line, b"content-length: %d\r\n" % len(body), *lines, b"\r\n", body]
        )
    if coding.strip().lower() != "chunked":
        raise ValueError(f"transfer-encoding {coding!r}: only chunked is sent")
    chunk = b"%x\r\n%s\r\n" % (len(body), body) if body else b""
    return b"".join([target.request_line, *lines, b"\r\n", chunk, b"0\r\n\r\n"])


class _Malformed(Exception):
    """The upstream's bytes are not a well-framed HTTP/1.1 response."""


class _Reading:
    """One response as llhttp (``httptools``) parses it: the final head, body parts, its end.

    1xx interim answers are skipped; ``101`` (never asked for) is an error. A response carrying
    both Content-Length and Transfer-Encoding is read as chunked (Transfer-Encoding wins, RFC
    9112 section 6.1) and its connection dropped; a Transfer-Encoding other than chunked is
    refused; without either, the body runs to the end of the connection. Identical duplicate
    Content-Length values are refused, as llhttp (and Node.js) do — RFC 9112 section 6.3 allows
    either refusing them or taking them as one.
    """

    __slots__ = (
        "body",
        "complete",
        "eof_framed",
        "head",
        "head_bytes",
        "interim",
        "parser",
        "past_end",
        "raw_headers",
        "reusable",
        "status",
    )

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.parser.set_dangerous_leniencies(lenient_chunked_length=True)  # see above: TE wins
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.head = self.complete = self.interim = self.past_end = self.eof_framed = False
        self.reusable = True
        self.head_bytes = 0

    # httptools callbacks
    def on_message_begin(self) -> None:
        if self.complete:  # bytes past the answer: the framing cannot be trusted
            self.past_end = True
        self.raw_headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status == 101:
            raise _Malformed("an unasked 101 Switching Protocols")
        if 100 <= status < 200:
            self.interim = True
            return
        self.status = status
        self.head = True
        names = {name.lower(): value for name, value in self.raw_headers}
        coding = names.get(b"transfer-encoding")
        if coding is not None:
            if coding.rpartition(b",")[2].strip().lower() != b"chunked":
                raise _Malformed(f"unsupported transfer-encoding {coding.decode('latin-1')!r}")
            if b"content-length" in names:
                self.reusable = False
        elif b"content-length" not in names and status not in (204, 304):
            self.eof_framed = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        if not self.complete:
            self.complete = True
            self.reusable = self.reusable and self.parser.should_keep_alive()

    def feed(self, data: bytes) -> None:
        """Parse *data* (callbacks above fire as it goes).

        Raises:
            _Malformed: not HTTP/1.1, bad framing, an unasked 101, or a head too long.
        """
        try:
            self.parser.feed_data(data)
        except _Malformed:
            raise
        except httptools.HttpParserError as exc:  # HttpParserUpgrade too
            if not self.complete:
                raise _Malformed(str(exc) or type(exc).__name__) from None
            self.past_end = True
        if not self.head:
            self.head_bytes += len(data)
            if self.head_bytes > _MAX_HEAD_BYTES:
                raise _Malformed(f"a response head longer than {_MAX_HEAD_BYTES} bytes")

    def eof(self) -> None:
        """The upstream closed the connection: the end of a read-to-EOF body, or a cut.

        Raises:
            _Malformed: the head or a framed body was cut short.
        """
        self.reusable = False
        if self.complete:
            return
        if not self.head:
            raise _Malformed("the connection closed before a whole response head")
        if not self.eof_framed:
            raise _Malformed("the response body was cut short")
        self.complete = True


class _Connection:
    __slots__ = ("idle_since", "key", "reader", "reaper", "writer")

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
    """A response whose head has arrived; the body is parsed as it is read."""

    def __init__(
        self, transport: FastTransport, conn: _Connection, reading: _Reading, timeout_s: float
    ) -> None:
        self._transport = transport
        self._conn: _Connection | None = conn
        self._reading = reading
        self.status: int = reading.status
        headers: dict[str, str] = {}
        for raw_name, raw_value in reading.raw_headers:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self.headers: Mapping[str, str] = headers
        self._timeout = timeout_s

    async def _next_part(self, conn: _Connection) -> bytes:
        """The body bytes one network read yields (``b""`` once the body has ended)."""
        reading = self._reading
        while not reading.body and not reading.complete:
            async with asyncio.timeout(self._timeout):
                data = await conn.reader.read(_READ_SIZE)
            if data:
                reading.feed(data)
            else:
                reading.eof()
        parts, reading.body = reading.body, []
        return b"".join(parts)

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        try:
            while self._conn is not None:
                try:
                    part = await self._next_part(self._conn)
                except _Malformed as exc:
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
                elif self._reading.complete:
                    break
        finally:
            await self.aclose()

    async def read(self) -> bytes:
        return b"".join([part async for part in self.aiter_bytes()])

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        reading = self._reading
        if reading.complete and reading.reusable and not reading.past_end and not reading.body:
            self._transport.release(conn)
        else:
            conn.close()


class FastTransport:
    """Pooled keep-alive HTTP/1.1 on asyncio streams, parsed by llhttp (``http`` and ``https``).

    ``httptools`` (llhttp, Node.js's parser) parses every response — see :class:`_Reading` for
    1xx answers, 204/304 without a body, Content-Length, chunked and read-to-EOF bodies and the
    framing refused — so this module only moves bytes, pools connections and maps failures.
    Connections are reused only when the exchange ended cleanly and the upstream keeps them
    alive. Certificates are checked against *ssl_context* (default:
    :func:`upstream_ssl_context`).
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
                if not _TARGET.fullmatch(path):
                    raise ValueError("spaces or control characters in the path")
                # The Host header is the URL's host[:port] as written (IPv6 keeps its brackets).
                host = parts.netloc.rpartition("@")[2]
                cached = _Target(
                    (parts.scheme, parts.hostname, port),
                    parts.hostname,
                    port,
                    tls,
                    b"POST %s HTTP/1.1\r\nhost: %s\r\n"
                    % (path.encode("ascii"), host.encode("idna")),
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
            request = _request(target, body, headers)
        except ValueError as exc:  # UnicodeEncodeError too
            raise TransportError("protocol", f"the request is not valid HTTP/1.1: {exc}") from None
        conn = self._acquire_idle(target.key)
        if conn is not None:
            try:
                return await self._exchange(conn, request, timeout_s)
            except _StaleConnection:
                pass  # the server closed the idle connection: once more, on a new one
        conn = await self._connect(target)
        try:
            return await self._exchange(conn, request, timeout_s)
        except _StaleConnection as exc:
            raise TransportError("connect", str(exc)) from None

    async def _exchange(self, conn: _Connection, request: bytes, timeout_s: float) -> _LeanResponse:
        reading = _Reading()
        received = False
        try:
            conn.writer.write(request)
            async with asyncio.timeout(timeout_s):
                while not reading.head:
                    data = await conn.reader.read(_READ_SIZE)
                    if not data:
                        if not received:
                            raise _StaleConnection(
                                "the upstream closed the connection without answering"
                            )
                        reading.eof()  # raises: no whole head has arrived
                    received = True
                    reading.feed(data)
            return _LeanResponse(self, conn, reading, timeout_s)
        except (_StaleConnection, asyncio.CancelledError):
            conn.close()
            raise
        except _Malformed as exc:
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
