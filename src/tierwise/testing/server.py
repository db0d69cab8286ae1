"""The fake upstream: a real HTTP server on loopback speaking both provider APIs.

A Starlette app served by uvicorn in a background thread, over plain HTTP or, given a
certificate, HTTPS. Every request is recorded (headers without credentials); each model answers
according to its :class:`ModelScript`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tierwise.testing import wire
from tierwise.testing.script import (
    Api,
    Behaviour,
    Fault,
    ModelScript,
    Script,
    as_scripts,
    fit,
    input_tokens,
    max_tokens_of,
)

#: Request headers never recorded (credentials).
SECRET_HEADERS = frozenset(
    {"authorization", "x-api-key", "api-key", "cookie", "proxy-authorization", "x-goog-api-key"}
)


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """A throwaway CA and a server certificate it signed, as PEM files (see :func:`make_tls`).

    ``certfile`` (certificate chain and private key) is what :class:`FakeUpstream` serves with;
    ``ca_file`` is what clients must trust: ``GatewayConfig(upstream_ca_file=...)``,
    ``SSL_CERT_FILE``, or :meth:`client_context`.
    """

    certfile: str
    ca_file: str

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts only this CA."""
        return ssl.create_default_context(cafile=self.ca_file)

    def server_context(self) -> ssl.SSLContext:
        """A server context presenting the certificate (for a hand-made test server)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.certfile)
        return context


def make_tls(directory: str | os.PathLike[str], *hosts: str) -> TLSFiles:
    """A new CA and a certificate for *hosts* (default ``127.0.0.1``, ``localhost``, ``::1``).

    Needs ``trustme`` (in tierwise's ``test`` extra); files are written into *directory*.
    """
    try:
        import trustme
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("make_tls needs trustme: pip install 'tierwise[test]'") from exc
    ca = trustme.CA()
    cert = ca.issue_cert(*(hosts or ("127.0.0.1", "localhost", "::1")))
    certfile = os.path.join(directory, "upstream-cert.pem")
    ca_file = os.path.join(directory, "upstream-ca.pem")
    cert.private_key_and_cert_chain_pem.write_to_path(certfile)
    ca.cert_pem.write_to_path(ca_file)
    return TLSFiles(certfile, ca_file)


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request the fake upstream received."""

    api: Api | None  # None for GET /v1/models
    method: str
    path: str
    headers: Mapping[str, str]  # lower-cased names, credentials removed
    body: Any  # the parsed JSON body, or None
    model: str | None
    stream: bool
    fault: str | None  # the fault served, if any
    at: float  # time.monotonic() when received
    peer: tuple[str, int] | None = None  # the client's address: one per connection


class _RawResponse(Response):
    """A response written part by part; ``complete=False`` drops the connection mid-body."""

    def __init__(
        self,
        parts: Sequence[bytes],
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str = "application/json",
        complete: bool = True,
        content_length: int | None = None,
        delay_s: float = 0.0,
    ) -> None:
        self.parts = list(parts)
        self.delay_s = delay_s
        self.complete = complete
        self.status_code = status
        self.media_type = media_type
        self.background = None
        self.body = b""
        raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        raw.append((b"content-type", media_type.encode()))
        if content_length is not None:
            raw.append((b"content-length", str(content_length).encode()))
        self.raw_headers = raw

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        for i, part in enumerate(self.parts):
            if i and self.delay_s:
                await asyncio.sleep(self.delay_s)
            await send({"type": "http.response.body", "body": part, "more_body": True})
        if self.complete:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        # Returning without the last message makes the server close the connection: a cut.


class FakeUpstream:
    """A scriptable fake of the Anthropic and OpenAI APIs on ``127.0.0.1``, for tests and demos.

    Use as a context manager; it listens on a random free port unless ``port`` is given::

        with FakeUpstream({"claude-haiku-4-5": ModelScript(behaviour="json")}) as up:
            client = anthropic.Anthropic(base_url=up.base_url, api_key="test")
            openai.OpenAI(base_url=up.openai_base_url, api_key="test")

    To serve HTTPS, give a certificate for ``127.0.0.1`` (:func:`make_tls` makes one)::

        tls = make_tls(tmp_dir)
        with FakeUpstream(ssl_certfile=tls.certfile) as up:    # up.base_url is https://...
            httpx2.post(up.base_url + "/v1/messages", ..., verify=tls.client_context())

    Args:
        models: a script per model id (a :class:`ModelScript` or a behaviour name), or a
            whole :class:`Script` (e.g. from :func:`load_script`).
        default: the script for models not listed; ``None`` answers them with 404.
        require_key: when set, requests must carry this API key (else 401).
        ssl_certfile: a PEM file with the server's certificate chain (and its private key,
            unless ``ssl_keyfile`` is given): the server speaks HTTPS.
        ssl_keyfile: the certificate's private key, when not in ``ssl_certfile``.
    """

    def __init__(
        self,
        models: Mapping[str, ModelScript | Behaviour] | Script | None = None,
        *,
        default: ModelScript | None = ModelScript(),  # noqa: B008 - frozen value
        require_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_certfile: str | os.PathLike[str] | None = None,
        ssl_keyfile: str | os.PathLike[str] | None = None,
    ) -> None:
        if ssl_keyfile is not None and ssl_certfile is None:
            raise ValueError("ssl_keyfile needs ssl_certfile (the certificate it belongs to)")
        if isinstance(models, Script):
            scripts = dict(models.models)
            default = models.default
            require_key = models.require_key if require_key is None else require_key
        else:
            scripts = as_scripts(models or {})
        self._lock = threading.Lock()
        self._scripts: dict[str, ModelScript] = {}
        self._faults: dict[str, deque[Fault]] = {}
        self._default = default
        self.require_key = require_key
        self._requests: list[RecordedRequest] = []
        self._ids = itertools.count(1)
        self._host = host
        self._port = port
        self._certfile = None if ssl_certfile is None else os.fspath(ssl_certfile)
        self._keyfile = None if ssl_keyfile is None else os.fspath(ssl_keyfile)
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._stopping = threading.Event()
        for name, script in scripts.items():
            self.set_script(name, script)

    # -- scripting ------------------------------------------------------------------------------

    def set_script(self, model: str, script: ModelScript | Behaviour) -> None:
        """(Re)script one model; its pending faults are replaced by the script's."""
        s = script if isinstance(script, ModelScript) else ModelScript(behaviour=script)
        with self._lock:
            self._scripts[model] = s
            self._faults[model] = deque(s.fault_list())

    def reset(
        self,
        models: Mapping[str, ModelScript | Behaviour] | None = None,
        *,
        default: ModelScript | None = ModelScript(),  # noqa: B008 - frozen value
        require_key: str | None = None,
    ) -> None:
        """Forget every script, pending fault and recorded request; script ``models`` afresh."""
        with self._lock:
            self._scripts.clear()
            self._faults.clear()
            self._requests.clear()
            self._default = default
            self.require_key = require_key
        for name, script in as_scripts(models or {}).items():
            self.set_script(name, script)

    def add_faults(self, model: str, *faults: Fault | str) -> None:
        """Queue more faults for a model (served before its next answers)."""
        with self._lock:
            queue = self._faults.setdefault(model, deque())
            queue.extend(Fault.parse(f) for f in faults)

    def script_for(self, model: str) -> ModelScript | None:
        """The script a model answers with (its own or the default), ``None`` if unknown."""
        with self._lock:
            return self._scripts.get(model, self._default)

    @property
    def models(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._scripts)

    # -- what was received ----------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    def requests_for(self, model: str) -> list[RecordedRequest]:
        """The requests received for one model."""
        return [r for r in self.requests if r.model == model]

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    # -- addresses ------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the fake upstream is not running; use it as a context manager")
        return self._port

    @property
    def scheme(self) -> str:
        """``https`` when serving with a certificate, else ``http``."""
        return "http" if self._certfile is None else "https"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (``https://`` with a certificate): the Anthropic SDK's
        ``base_url``."""
        return f"{self.scheme}://{self._host}:{self.port}"

    @property
    def anthropic_base_url(self) -> str:
        return self.base_url

    @property
    def openai_base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1`` (or ``https://``): the OpenAI SDK's ``base_url``."""
        return f"{self.base_url}/v1"

    def url_for(self, provider: str) -> str:
        """The ``base_url`` a policy tier of ``provider`` (anthropic/openai) should use."""
        return self.openai_base_url if provider == "openai" else self.base_url

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FakeUpstream:
        """Start serving in a background thread; returns once the port accepts connections."""
        import uvicorn

        if self._server is not None:
            return self
        # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only when the proto
        # says TCP; with proto 0 every response waits ~40 ms on Nagle + delayed ACK.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, self._port))
        except OSError:
            sock.close()
            raise
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app(),
            log_config=None,
            log_level=None,
            access_log=False,
            lifespan="off",
            http="h11",
            ws="none",
            timeout_graceful_shutdown=2,
            ssl_certfile=self._certfile,
            ssl_keyfile=self._keyfile,
        )
        if self._certfile is not None:
            try:  # here rather than in the server thread, so a bad certificate says why
                config.load()
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                sock.close()
                raise RuntimeError(f"cannot serve HTTPS with {self._certfile}: {exc}") from exc
        server = uvicorn.Server(config)
        self._stopping.clear()
        thread = threading.Thread(
            target=server.run,
            kwargs={"sockets": [sock]},
            name="tierwise-fake-upstream",
            daemon=True,
        )
        self._server, self._thread, self._sock = server, thread, sock
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the fake upstream did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Stop the server and wait for its thread."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.should_exit = True
        if thread is not None:
            thread.join(timeout=15)
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = self._sock = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the app --------------------------------------------------------------------------------

    def app(self) -> Starlette:
        """The ASGI app (usable in-process too, e.g. by a test client)."""

        async def messages(request: Request) -> Response:
            return await self._answer(request, "anthropic")

        async def chat(request: Request) -> Response:
            return await self._answer(request, "openai")

        async def models(request: Request) -> Response:
            return self._models(request)

        return Starlette(
            routes=[
                Route("/v1/messages", messages, methods=["POST"]),
                Route("/v1/chat/completions", chat, methods=["POST"]),
                Route("/chat/completions", chat, methods=["POST"]),
                Route("/v1/models", models, methods=["GET"]),
                Route("/models", models, methods=["GET"]),
            ]
        )

    def _record(self, request: Request, api: Api | None, body: Any, fault: str | None) -> None:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in SECRET_HEADERS}
        model = body.get("model") if isinstance(body, dict) else None
        stream = bool(body.get("stream")) if isinstance(body, dict) else False
        entry = RecordedRequest(
            api=api,
            method=request.method,
            path=request.url.path,
            headers=headers,
            body=body,
            model=model if isinstance(model, str) else None,
            stream=stream,
            fault=fault,
            at=time.monotonic(),
            peer=(request.client.host, request.client.port) if request.client else None,
        )
        with self._lock:
            self._requests.append(entry)

    def _authorised(self, request: Request) -> bool:
        if self.require_key is None:
            return True
        given = request.headers.get("x-api-key") or request.headers.get("api-key")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = given or auth[7:]
        return given == self.require_key

    def _next_fault(self, model: str) -> Fault | None:
        with self._lock:
            queue = self._faults.get(model)
            if not queue:
                return None
            fault = queue[0]
            if not fault.always:
                queue.popleft()
            return fault

    def _error(
        self,
        api: Api,
        kind: str,
        message: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        status = wire.ERRORS[kind][0]
        _, rid = self._new_id(api)
        hdrs = {self._id_header(api): rid, **(headers or {})}
        body = (
            wire.anthropic_error(kind, rid, message)
            if api == "anthropic"
            else wire.openai_error(kind, message)
        )
        return JSONResponse(body, status_code=status, headers=hdrs)

    def _new_id(self, api: Api) -> tuple[str, str]:
        """A fresh id suffix and the request id built from it."""
        n = f"{next(self._ids):016d}"
        return n, (f"req_fake{n}" if api == "anthropic" else f"req-fake-{n}")

    @staticmethod
    def _id_header(api: Api) -> str:
        return "request-id" if api == "anthropic" else "x-request-id"

    async def _answer(self, request: Request, api: Api) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            self._record(request, api, None, None)
            return self._error(api, "400", "the request body is not valid JSON")
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            self._record(request, api, body, None)
            return self._error(api, "400", "the request body needs a 'model' string")
        if not isinstance(body.get("messages"), list):
            self._record(request, api, body, None)
            return self._error(api, "400", "the request body needs a 'messages' list")
        if not self._authorised(request):
            self._record(request, api, body, None)
            return self._error(api, "401")
        model: str = body["model"]
        script = self.script_for(model)
        if script is None:
            self._record(request, api, body, None)
            return self._error(api, "404", f"model: {model} (not scripted in the fake upstream)")
        fault = self._next_fault(model)
        self._record(request, api, body, fault.kind if fault else None)
        if script.latency_s > 0:
            await asyncio.sleep(script.latency_s)
        stream = bool(body.get("stream"))
        if fault is not None:
            if fault.kind in wire.ERRORS:
                headers: dict[str, str] = {}
                if fault.kind == "429" and fault.retry_after is not None:
                    headers["retry-after"] = _retry_after_header(fault.retry_after)
                if fault.kind == "529" and api == "openai":
                    headers["x-should-retry"] = "true"
                return self._error(api, fault.kind, headers=headers)
            if fault.kind == "hang":
                await self._hang(request, fault.hang_s)
            elif fault.kind == "malformed":
                return self._malformed(api, stream)
        try:
            reply = script.answer(body)
        except Exception as exc:  # a reply function's bug becomes a visible 500
            return self._error(api, "500", f"the reply function raised {type(exc).__name__}: {exc}")
        reply, out_tokens = fit(reply, max_tokens_of(body))
        in_tokens = input_tokens(body)
        cut = fault is not None and fault.kind == "cut"
        n, rid = self._new_id(api)
        headers = {self._id_header(api): rid}
        if api == "anthropic":
            usage = wire.anthropic_usage(in_tokens, out_tokens, script)
            msg_id = f"msg_fake{n}"
            if stream:
                events = [
                    wire.sse(e, d)
                    for e, d in wire.anthropic_events(msg_id, model, reply, usage, script.chunks)
                ]
                return _stream(events, headers, cut, script.chunk_delay_s)
            payload = wire.anthropic_message(msg_id, model, reply, usage)
        else:
            usage = wire.openai_usage(in_tokens, out_tokens, script)
            cmpl_id = f"chatcmpl-fake{n}"
            if stream:
                options = body.get("stream_options") or {}
                include = bool(options.get("include_usage")) if isinstance(options, dict) else False
                events = [
                    wire.sse(None, c)
                    for c in wire.openai_chunks(
                        cmpl_id, model, reply, usage, script.chunks, include
                    )
                ]
                events.append(wire.sse(None, "[DONE]"))
                return _stream(events, headers, cut, script.chunk_delay_s)
            payload = wire.openai_completion(cmpl_id, model, reply, usage)
        data = json.dumps(payload).encode()
        if cut:
            return _RawResponse(
                [data[: len(data) // 2]], headers=headers, complete=False, content_length=len(data)
            )
        return Response(data, headers=headers, media_type="application/json")

    async def _hang(self, request: Request, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self._stopping.is_set():
            if await request.is_disconnected():
                return
            await asyncio.sleep(0.02)

    def _malformed(self, api: Api, stream: bool) -> Response:
        headers = {self._id_header(api): self._new_id(api)[1]}
        if stream:
            return _RawResponse(
                [b'event: message_start\ndata: {"type": "message_start", "message": {\n\n'],
                headers=headers,
                media_type="text/event-stream",
            )
        return Response(
            b'{"id": "broken", "content": [{"type": "text", "te',
            headers=headers,
            media_type="application/json",
        )

    def _models(self, request: Request) -> Response:
        self._record(request, None, None, None)
        names = self.models
        if "anthropic-version" in request.headers:
            data = [
                {
                    "type": "model",
                    "id": m,
                    "display_name": f"{m} (simulated)",
                    "created_at": "2025-01-01T00:00:00Z",
                }
                for m in names
            ]
            return JSONResponse(
                {
                    "data": data,
                    "has_more": False,
                    "first_id": names[0] if names else None,
                    "last_id": names[-1] if names else None,
                }
            )
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": 1735689600, "owned_by": "tierwise-fake"}
                    for m in names
                ],
            }
        )


def _stream(
    events: Iterable[bytes], headers: Mapping[str, str], cut: bool, delay_s: float = 0.0
) -> Response:
    parts = list(events)
    if cut:
        parts = parts[: max(1, len(parts) // 2)]
    return _RawResponse(
        parts,
        headers={**headers, "cache-control": "no-cache"},
        media_type="text/event-stream",
        complete=not cut,
        delay_s=delay_s,
    )


def _retry_after_header(value: float | str) -> str:
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else str(value)
