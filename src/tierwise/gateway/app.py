"""The ASGI app: ``create_app(config)`` builds it, uvicorn serves it, nothing is global.

Endpoints:

* ``POST /v1/messages`` — Anthropic Messages; ``POST /v1/chat/completions`` — OpenAI Chat.
* ``GET /v1/models`` — ``tierwise/auto``, ``tierwise/<kind>`` per policy kind, the pool's
  models (Anthropic's list shape when the request carries ``anthropic-version``).
* ``GET /healthz`` — liveness; ``GET /metrics`` — Prometheus text.

Status codes, in the caller's error shape: 400 malformed JSON / wrong types / missing fields /
bad ``x-tierwise-*`` headers (the message names the field); 401 missing or wrong key; 404
unknown model; 413 body over ``max_body_bytes``; 429 a budget (policy or the key's daily one)
is exhausted — with ``x-should-retry: false`` so SDKs do not retry; 502 no tier answered
(upstream down after retries, or every answer failed validation) with the attempt trail's task
id; 500 anything unexpected (logged, never a crash of the worker).

The lifespan opens the ledger, the upstream connection pool and the group-commit writer, and
closes them in reverse on shutdown (uvicorn finishes in-flight requests first), so every
accepted request leaves its ledger rows.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tierwise.gateway.config import GatewayConfig
from tierwise.gateway.dialects import Dialect, RequestError, error_body, parse_request
from tierwise.gateway.service import AUTO_MODEL, GatewayService, Reply
from tierwise.gateway.upstream import upstream_seconds

__all__ = ["create_app", "create_app_from_env"]

log = logging.getLogger("tierwise.gateway")

_JSON = "application/json"
_SSE = "text/event-stream"


def create_app(config: GatewayConfig | None = None) -> Starlette:
    """Build the gateway app for *config* (default: :class:`GatewayConfig` defaults).

    Nothing is opened until the app starts (ASGI lifespan); ``app.state.service`` holds the
    running :class:`~tierwise.gateway.service.GatewayService` while it serves.
    """
    cfg = config or GatewayConfig()
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        from tierwise.gateway.auth import KeyChecker
        from tierwise.gateway.http import (
            FastTransport,
            HttpxTransport,
            Transport,
            proxy_configured,
            upstream_ssl_context,
        )
        from tierwise.gateway.metrics import GatewayMetrics
        from tierwise.gateway.recorder import GroupCommitLedger
        from tierwise.gateway.upstream import UpstreamPool
        from tierwise.ledger import open_ledger

        policy = cfg.load_policy()
        env = cfg.environ()
        ledger = open_ledger(cfg.resolved_ledger_url())
        recorder = GroupCommitLedger(ledger)
        tls = upstream_ssl_context(cfg.upstream_ca_file)
        transport: Transport = (
            HttpxTransport(max_connections=cfg.max_connections, ssl_context=tls)
            if proxy_configured(env)
            else FastTransport(max_idle_per_origin=cfg.max_connections, ssl_context=tls)
        )
        pool = UpstreamPool(policy, transport, env)
        try:
            service = GatewayService(
                policy=policy,
                ledger=ledger,
                recorder=recorder,
                pool=pool,
                keys=KeyChecker(ledger, ttl_s=cfg.key_cache_s),
                metrics=GatewayMetrics(),
                wait_for_ledger=cfg.wait_for_ledger,
            )
            state["service"] = service
            app.state.service = service
            if not service.keys.has_keys():
                log.warning(
                    "no gateway keys in the ledger %s: the gateway is open; serve it on "
                    "loopback only (create one with `tierwise keys create --name NAME`)",
                    ledger.url,
                )
            yield
        finally:
            state.pop("service", None)
            recorder.close()
            await pool.aclose()
            ledger.close()

    def service() -> GatewayService:
        svc = state.get("service")
        if svc is None:
            raise RuntimeError("the gateway is not running (lifespan not started)")
        return svc  # type: ignore[no-any-return]

    async def messages(request: Request) -> Response:
        return await _handle(service(), "anthropic", request, cfg)

    async def chat(request: Request) -> Response:
        return await _handle(service(), "openai", request, cfg)

    async def models(request: Request) -> Response:
        svc = service()
        dialect: Dialect = "anthropic" if "anthropic-version" in request.headers else "openai"
        try:
            svc.keys.authenticate(request.headers)
        except RequestError as exc:
            return _error(dialect, exc)
        return Response(json.dumps(_models(svc, dialect)).encode(), media_type=_JSON)

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type=_JSON)

    async def metrics(request: Request) -> Response:
        from tierwise.gateway.metrics import CONTENT_TYPE

        svc = service()
        try:
            svc.keys.authenticate(request.headers)
        except RequestError as exc:
            return _error("openai", exc)
        return Response(svc.metrics.render(), media_type=CONTENT_TYPE)

    return Starlette(
        routes=[
            Route("/v1/messages", messages, methods=["POST"]),
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def create_app_from_env() -> Starlette:
    """The factory ``tierwise serve --workers N`` gives uvicorn: config from the environment."""
    import os

    from tierwise.gateway.config import CONFIG_ENV

    text = os.environ.get(CONFIG_ENV)
    return create_app(GatewayConfig.from_json(text) if text else GatewayConfig())


def _models(svc: GatewayService, dialect: Dialect) -> dict[str, Any]:
    ids = [AUTO_MODEL, *(f"tierwise/{k}" for k in svc.policy.kinds)]
    ids += [m for m, _ in svc.pool.models() if m not in ids]
    if dialect == "anthropic":
        data = [
            {
                "type": "model",
                "id": i,
                "display_name": i,
                "created_at": "2025-01-01T00:00:00Z",
            }
            for i in ids
        ]
        return {"data": data, "has_more": False, "first_id": ids[0], "last_id": ids[-1]}
    return {
        "object": "list",
        "data": [{"id": i, "object": "model", "created": 0, "owned_by": "tierwise"} for i in ids],
    }


def _error(dialect: Dialect, exc: RequestError) -> Response:
    body = error_body(dialect, exc.status, exc.message, param=exc.param, code=exc.code)
    headers = dict(exc.headers)
    if exc.status == 401:
        headers.setdefault("www-authenticate", "Bearer")
    if exc.status in (400, 401, 404, 413):
        headers.setdefault("x-should-retry", "false")
    return Response(
        json.dumps(body).encode(), status_code=exc.status, headers=headers, media_type=_JSON
    )


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(
            f"the request body is {declared} bytes; this gateway accepts at most {limit}",
            status=413,
            headers={"connection": "close"},
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(
                f"the request body exceeds this gateway's limit of {limit} bytes",
                status=413,
                headers={"connection": "close"},
            )
        chunks.append(chunk)
    return b"".join(chunks)


async def _handle(
    svc: GatewayService, dialect: Dialect, request: Request, cfg: GatewayConfig
) -> Response:
    started = time.perf_counter()
    upstream = upstream_seconds()
    route = "other"
    status = 500
    svc.metrics.in_flight.inc()
    try:
        try:
            key = svc.keys.authenticate(request.headers)
            raw = await _read_body(request, cfg.max_body_bytes)
            body, view = parse_request(dialect, raw)
            call = svc.prepare(
                dialect, body, view, len(raw), request.headers, key, started, upstream
            )
            route = call.route
            reply = await _serve(svc, call)
        except RequestError as exc:
            status = exc.status
            return _error(dialect, exc)
        except Exception:
            log.exception("unexpected error serving %s", request.url.path)
            return _error(dialect, RequestError("internal gateway error", status=500))
        status = reply.status
        if reply.stream is not None:
            return StreamingResponse(
                reply.stream,
                status_code=reply.status,
                headers={**reply.headers, "cache-control": "no-cache"},
                media_type=_SSE,
            )
        return Response(
            reply.body, status_code=reply.status, headers=reply.headers, media_type=_JSON
        )
    finally:
        svc.metrics.in_flight.dec()
        svc.metrics.requests.labels(dialect, route, str(status)).inc()


async def _serve(svc: GatewayService, call: Any) -> Reply:
    from tierwise.gateway.streaming import serve_direct

    if call.route == "model" or svc.wants_live_stream(call):
        return await serve_direct(svc, call)
    return await svc.run_cascade(call)
