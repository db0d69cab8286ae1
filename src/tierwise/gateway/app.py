"""The ASGI app: ``create_app(config)`` builds it, uvicorn serves it, nothing is global.

Endpoints:

* ``POST /v1/messages`` — Anthropic Messages; ``POST /v1/chat/completions`` — OpenAI Chat.
* ``GET /v1/models`` — ``tierwise/auto``, ``tierwise/<kind>`` per policy kind, the pool's
  models (Anthropic's list shape when the request carries ``anthropic-version``).
* ``GET /healthz`` — liveness; ``GET /metrics`` — Prometheus text (an admin key when served off
  loopback).
* ``GET /v1/tierwise/admin/status`` — policy revision, ladder, key mode (admin key).
* ``POST /v1/tierwise/feedback`` — flag a task's output (see :mod:`tierwise.gateway.feedback`).

Status codes, in the caller's error shape: 400 malformed JSON / wrong types / missing fields /
bad ``x-tierwise-*`` headers (the message names the field); 401 missing or wrong key; 404
unknown model; 408 a body that did not arrive within ``body_timeout_s``; 413 body over
``max_body_bytes``; 429 a budget (policy or the key's daily one)
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
from typing import TYPE_CHECKING, Any

import anyio
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tierwise.gateway.call import Call
from tierwise.gateway.config import GatewayConfig
from tierwise.gateway.dialects import Dialect, RequestError, error_body
from tierwise.gateway.schema import parse_request
from tierwise.gateway.service import AUTO_MODEL, GatewayService
from tierwise.gateway.upstream import upstream_seconds

if TYPE_CHECKING:
    from tierwise.gateway.fleet import FleetGauges
    from tierwise.ledger import ApiKey

__all__ = ["ADMIN_PREFIX", "create_app", "create_app_from_env"]

#: Every route that changes or reveals the gateway's state lives under this prefix and needs
#: an admin key (on an anonymous loopback gateway, no key).
ADMIN_PREFIX = "/v1/tierwise/admin"

log = logging.getLogger("tierwise.gateway")

_JSON = "application/json"
#: Bodies larger than this are decoded and checked in a worker thread (a 10 MB body takes
#: seconds of CPU that would otherwise hold every other request on the event loop).
_PARSE_INLINE_BYTES = 256 * 1024
_SSE = "text/event-stream"


def create_app(config: GatewayConfig | None = None) -> Starlette:
    """Build the gateway app for *config* (default: :class:`GatewayConfig` defaults).

    Nothing is opened until the app starts (ASGI lifespan); ``app.state.service`` holds the
    running :class:`~tierwise.gateway.service.GatewayService` while it serves.
    """
    cfg = config or GatewayConfig()
    state: dict[str, GatewayService] = {}
    fleet: dict[str, FleetGauges] = {}  # the fleet's escalation on /metrics

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        from tierwise.gateway.auth import KeyChecker
        from tierwise.gateway.config import is_loopback
        from tierwise.gateway.fleet import FleetGauges
        from tierwise.gateway.http import (
            FastTransport,
            HttpxTransport,
            Transport,
            proxy_configured,
            upstream_ssl_context,
        )
        from tierwise.gateway.metrics import GatewayMetrics
        from tierwise.gateway.recorder import GroupCommitLedger
        from tierwise.gateway.schema import request_adapter
        from tierwise.gateway.upstream import UpstreamPool
        from tierwise.ledger import open_ledger

        policy = cfg.load_policy()
        for dialect in ("anthropic", "openai"):  # compile the request checks before serving
            request_adapter(dialect)
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
        loopback = is_loopback(cfg.host)
        anonymous = _anonymous(cfg, loopback, ledger.has_api_keys(), ledger.url)
        try:
            service = GatewayService(
                policy=policy,
                ledger=ledger,
                recorder=recorder,
                pool=pool,
                keys=KeyChecker(ledger, anonymous=anonymous, ttl_s=cfg.key_cache_s),
                metrics=GatewayMetrics(kind_label=policy.kind_label),
                wait_for_ledger=cfg.wait_for_ledger,
                loopback=loopback,
            )
            state["service"] = service
            app.state.service = service
            fleet["gauges"] = FleetGauges(
                ledger, service.metrics.registry, policy.model.fleet.escalation_red_line
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
        return svc

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
            if svc.loopback:
                svc.keys.authenticate(request.headers)
            else:  # reachable from elsewhere: spend and traffic are for admins only
                svc.keys.authorize_admin(request.headers)
        except RequestError as exc:
            return _error("openai", exc)
        await anyio.to_thread.run_sync(fleet["gauges"].refresh)  # a ledger read, cached
        return Response(svc.metrics.render(), media_type=CONTENT_TYPE)

    async def admin_status(request: Request) -> Response:
        svc = service()
        try:
            svc.keys.authorize_admin(request.headers)
        except RequestError as exc:
            return _error("openai", exc)
        return Response(json.dumps(_status(svc, cfg)).encode(), media_type=_JSON)

    async def feedback(request: Request) -> Response:
        from tierwise.gateway.feedback import handle_feedback

        return await handle_feedback(service(), request)

    return Starlette(
        routes=[
            Route("/v1/messages", messages, methods=["POST"]),
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route(f"{ADMIN_PREFIX}/status", admin_status, methods=["GET"]),
            Route("/v1/tierwise/feedback", feedback, methods=["POST"]),
        ],
        lifespan=lifespan,
    )


def create_app_from_env() -> Starlette:
    """The factory ``tierwise serve --workers N`` gives uvicorn: config from the environment."""
    import os

    from tierwise.gateway.config import CONFIG_ENV

    text = os.environ.get(CONFIG_ENV)
    return create_app(GatewayConfig.from_json(text) if text else GatewayConfig())


def _anonymous(cfg: GatewayConfig, loopback: bool, has_keys: bool, where: str) -> bool:
    """Whether this gateway serves requests without a key, decided once, at start."""
    if cfg.allow_anonymous:
        log.warning(
            "serving WITHOUT gateway keys on %s (--allow-anonymous): anyone who can reach it "
            "can spend through it; requests that present a key are still checked",
            cfg.host,
        )
        return True
    if loopback and not has_keys:
        log.warning(
            "no gateway keys in the ledger %s: serving on loopback without keys; create one "
            "with `tierwise keys create --name NAME` and restart to require them",
            where,
        )
        return True
    if not has_keys:
        log.error(
            "no gateway keys in the ledger %s and serving on %s: every request will get 401 "
            "until a key exists (`tierwise keys create --name NAME`)",
            where,
            cfg.host,
        )
    return False


def _status(svc: GatewayService, cfg: GatewayConfig) -> dict[str, Any]:
    """What an operator wants to know about a running gateway (the admin status route)."""
    from importlib.metadata import version

    return {
        "version": version("tierwise"),
        "policy_revision": svc.policy.revision,
        "policy_source": str(svc.policy.source) if svc.policy.source else None,
        "ladder": list(svc.policy.ladder),
        "host": cfg.host,
        "anonymous": svc.keys.anonymous,
        "ledger": svc.ledger.url,
    }


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


async def _read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The whole body, refused past *limit* bytes or when it has not arrived in *timeout_s*."""
    try:
        with anyio.fail_after(timeout_s):
            return await _read_limited(request, limit)
    except TimeoutError:
        raise RequestError(
            f"the request body did not arrive within {timeout_s:g} s",
            status=408,
            headers={"connection": "close"},
        ) from None


async def _read_limited(request: Request, limit: int) -> bytes:
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


def _prepare(
    svc: GatewayService,
    dialect: Dialect,
    raw: bytes,
    headers: Headers,
    key: ApiKey | None,
    started: float,
    upstream: list[float],
) -> Call:
    body = parse_request(dialect, raw)
    return svc.prepare(dialect, body, len(raw), headers, key, started, upstream)


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
            raw = await _read_body(request, cfg.max_body_bytes, cfg.body_timeout_s)
            headers = request.headers
            if len(raw) > _PARSE_INLINE_BYTES:  # decoding a big body must not stall the loop
                call = await anyio.to_thread.run_sync(
                    _prepare, svc, dialect, raw, headers, key, started, upstream
                )
            else:
                call = _prepare(svc, dialect, raw, headers, key, started, upstream)
            route = call.route
            reply = await svc.serve(call)
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
