"""The ASGI app: ``create_app(config)`` builds it, uvicorn serves it, nothing is global.

Endpoints:

* ``POST /v1/messages`` — Anthropic Messages; ``POST /v1/chat/completions`` — OpenAI Chat.
* ``GET /v1/models`` — ``tierwise/auto``, ``tierwise/<kind>`` per policy kind, the pool's
  models (Anthropic's list shape when the request carries ``anthropic-version``).
* ``GET /healthz`` — liveness; ``GET /metrics`` — Prometheus text (an admin key when served off
  loopback).
* ``GET /v1/tierwise/admin/status`` — policy revision, ladder, key mode (admin key).
* ``POST /v1/tierwise/admin/reload`` — read the policy file again (admin key); a broken file
  keeps the old policy (400 with the reason). ``SIGHUP`` does the same.
* ``POST /v1/tierwise/admin/learn/apply`` and ``…/learn/revert`` — apply a learner proposal, or
  undo a change or lift an override (admin key; see :mod:`tierwise.gateway.learning`). Every
  worker follows the policy changes in force in the ledger within ``changes_poll_s``.
* ``POST /v1/tierwise/feedback`` — flag a task's output (see :mod:`tierwise.gateway.feedback`).
* ``/dashboard`` — the weekly report as a page, admin sign-in and applying learning proposals
  (see :mod:`tierwise.gateway.dashboard`).

Status codes, in the caller's error shape: 400 malformed JSON / wrong types / missing fields /
bad ``x-tierwise-*`` headers (the message names the field); 401 missing or wrong key; 404
unknown model; 408 a body that did not arrive within ``body_timeout_s``; 413 body over
``max_body_bytes``; 429 a budget (policy or the key's daily one)
is exhausted — with ``x-should-retry: false`` so SDKs do not retry; 502 no tier answered
(upstream down after retries, or every answer failed validation) with the attempt trail's task
id; 503 the ledger's database cannot be reached (refused before any upstream call; a paid
call whose rows cannot be committed is answered, its rows spooled to a local file); 500
anything unexpected (logged, never a crash of the worker).

The lifespan opens the ledger, the upstream connection pool and the group-commit writer, and
closes them in reverse on shutdown (uvicorn finishes in-flight requests first), so every
accepted request leaves its ledger rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import anyio
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tierwise.errors import LedgerError
from tierwise.gateway.bodies import read_limited
from tierwise.gateway.call import Call
from tierwise.gateway.config import GatewayConfig
from tierwise.gateway.dashboard import DashboardContext, dashboard_routes
from tierwise.gateway.dialects import Dialect, RequestError
from tierwise.gateway.errors import error_response
from tierwise.gateway.logs import RequestLog
from tierwise.gateway.schema import parse_request
from tierwise.gateway.service import AUTO_MODEL, GatewayService
from tierwise.gateway.upstream import upstream_seconds

if TYPE_CHECKING:
    from tierwise.gateway.fleet import FleetGauges
    from tierwise.ledger import ApiKey

__all__ = ["ADMIN_PREFIX", "MissingCredentialsError", "create_app", "create_app_from_env"]

#: Every route that changes or reveals the gateway's state lives under this prefix and needs
#: an admin key (on an anonymous loopback gateway, no key).
ADMIN_PREFIX = "/v1/tierwise/admin"

log = logging.getLogger("tierwise.gateway")

_JSON = "application/json"
#: Bodies larger than this are decoded and checked in a worker thread (a 10 MB body takes
#: seconds of CPU that would otherwise hold every other request on the event loop).
_PARSE_INLINE_BYTES = 256 * 1024
#: What a refused request's log line calls its error when the refusal has no code of its own.
_ERROR_NAMES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    408: "body_timeout",
    413: "too_large",
    429: "rate_limited",
}
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
        from tierwise.evaluation.live import load_learned
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
        from tierwise.gateway.learning import follow_forever
        from tierwise.gateway.metrics import GatewayMetrics
        from tierwise.gateway.recorder import GroupCommitLedger
        from tierwise.gateway.reload import load_or_last_good
        from tierwise.gateway.schema import request_adapter
        from tierwise.gateway.summaries import keep_forever
        from tierwise.gateway.upstream import UpstreamPool
        from tierwise.ledger import open_ledger
        from tierwise.ledger.spool import Spool, ledger_identity

        ledger = open_ledger(cfg.resolved_ledger_url())
        try:
            policy = load_or_last_good(cfg, ledger)
            learned = load_learned(policy)  # once at start (and on each reload)
        except BaseException:
            ledger.close()
            raise
        try:  # the learner's changes and people's overrides, served on top of the file
            changes = ledger.applied_changes()
        except LedgerError as exc:  # requests get 503 until it is back; the poller catches up
            log.warning("could not read the policy changes in force: %s", exc)
            changes = None
        for dialect in ("anthropic", "openai"):  # compile the request checks before serving
            request_adapter(dialect)
        env = cfg.environ()
        spool = Spool(cfg.resolved_spool_dir(), ledger_identity(ledger))
        recorder = GroupCommitLedger(ledger, spool=spool, health_ttl_s=cfg.ledger_check_s)
        tls = upstream_ssl_context(cfg.upstream_ca_file)
        transport: Transport = (
            HttpxTransport(max_connections=cfg.max_connections, ssl_context=tls)
            if proxy_configured(env)
            else FastTransport(max_idle_per_origin=cfg.max_connections, ssl_context=tls)
        )
        pool = UpstreamPool(policy, transport, env)
        missing = pool.missing_keys()
        if missing and not cfg.allow_missing_keys:
            await transport.aclose()
            ledger.close()
            raise MissingCredentialsError(missing)
        for tier, why in missing.items():
            log.warning("tier %s is unavailable: %s (started with allow_missing_keys)", tier, why)
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
                learned=learned,
                changes=changes,
            )
            state["service"] = service
            app.state.service = service
            fleet["gauges"] = FleetGauges(
                ledger, service.metrics.registry, policy.model.fleet.escalation_red_line
            )
            hangup = _on_sighup(service, cfg)
            follower = asyncio.ensure_future(
                follow_forever(lambda: state.get("service"), cfg.changes_poll_s)
            )
            background = [follower]
            if cfg.summary_every_s > 0:  # reports then read kept sums, not a week of rows
                background.append(asyncio.ensure_future(keep_forever(ledger, cfg.summary_every_s)))
            try:
                yield
            finally:
                hangup()
                for task in background:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
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
            return error_response(dialect, exc)
        return Response(json.dumps(_models(svc, dialect)).encode(), media_type=_JSON)

    async def healthz(request: Request) -> Response:
        svc = state.get("service")
        missing = {} if svc is None else svc.pool.missing_keys()
        ledger = {} if svc is None else _ledger_health(svc)
        if not missing and not ledger:
            return Response(b'{"status":"ok"}', media_type=_JSON)
        body: dict[str, Any] = {"status": "degraded"}
        if missing:
            body["unavailable"] = missing
        body.update(ledger)
        return Response(json.dumps(body).encode(), media_type=_JSON)

    async def metrics(request: Request) -> Response:
        from tierwise.gateway.metrics import CONTENT_TYPE

        svc = service()
        try:
            if svc.loopback:
                svc.keys.authenticate(request.headers)
            else:  # reachable from elsewhere: spend and traffic are for admins only
                svc.keys.authorize_admin(request.headers)
        except RequestError as exc:
            return error_response("openai", exc)
        await anyio.to_thread.run_sync(fleet["gauges"].refresh)  # a ledger read, cached
        return Response(svc.metrics.render(), media_type=CONTENT_TYPE)

    async def admin_reload(request: Request) -> Response:
        from tierwise.gateway.reload import check_policy, reload_policy, restart_workers

        svc = service()
        try:
            svc.keys.authorize_admin(request.headers)
        except RequestError as exc:
            return error_response("openai", exc)
        if cfg.workers > 1:  # the supervisor restarts every worker; each reads the file
            policy, problem = check_policy(cfg)
            if policy is None:
                body = {"ok": False, "revision": svc.policy.revision, "error": problem}
                return Response(json.dumps(body).encode(), 400, media_type=_JSON)
            restart_workers()
            body = {"ok": True, "revision": policy.revision, "restarting": cfg.workers}
            return Response(json.dumps(body).encode(), 202, media_type=_JSON)
        result = reload_policy(svc, cfg)
        status = 200 if result.ok else 400
        return Response(json.dumps(result.as_dict()).encode(), status, media_type=_JSON)

    async def admin_status(request: Request) -> Response:
        svc = service()
        try:
            svc.keys.authorize_admin(request.headers)
        except RequestError as exc:
            return error_response("openai", exc)
        return Response(json.dumps(_status(svc, cfg)).encode(), media_type=_JSON)

    async def feedback(request: Request) -> Response:
        from tierwise.gateway.feedback import handle_feedback

        return await handle_feedback(service(), request)

    async def learn_apply(request: Request) -> Response:
        from tierwise.gateway.learning import handle_learn

        return await handle_learn(service(), request, "learn/apply")

    async def learn_revert(request: Request) -> Response:
        from tierwise.gateway.learning import handle_learn

        return await handle_learn(service(), request, "learn/revert")

    def dashboard() -> DashboardContext:
        from tierwise.gateway.learning import follow_once

        svc = service()
        return DashboardContext(
            svc.ledger,
            lambda: svc.routing.policy,
            svc.keys,
            svc.loopback,
            changed=lambda: follow_once(svc.ledger, svc.cascade),
        )

    return Starlette(
        routes=[
            *dashboard_routes(dashboard),
            Route("/v1/messages", messages, methods=["POST"]),
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route(f"{ADMIN_PREFIX}/status", admin_status, methods=["GET"]),
            Route(f"{ADMIN_PREFIX}/reload", admin_reload, methods=["POST"]),
            Route(f"{ADMIN_PREFIX}/learn/apply", learn_apply, methods=["POST"]),
            Route(f"{ADMIN_PREFIX}/learn/revert", learn_revert, methods=["POST"]),
            Route("/v1/tierwise/feedback", feedback, methods=["POST"]),
        ],
        lifespan=lifespan,
    )


def create_app_from_env() -> Starlette:
    """The factory ``tierwise serve --workers N`` gives uvicorn: config from the environment."""
    import os

    from tierwise.gateway.config import CONFIG_ENV
    from tierwise.gateway.logs import configure_logging

    text = os.environ.get(CONFIG_ENV)
    config = GatewayConfig.from_json(text) if text else GatewayConfig()
    configure_logging(config.log_level, config.log_format)  # each worker is its own process
    return create_app(config)


class MissingCredentialsError(RuntimeError):
    """A tier's upstream key is not set, so the gateway refuses to start (one line per tier)."""

    def __init__(self, missing: dict[str, str]) -> None:
        from tierwise.gateway.upstream import describe_missing

        self.missing = missing
        super().__init__(describe_missing(missing))


def _on_sighup(service: GatewayService, cfg: GatewayConfig) -> Callable[[], None]:
    """Reload the policy on SIGHUP (when serving in the main thread); returns the undo."""
    import asyncio
    import signal
    import threading

    from tierwise.gateway.reload import reload_policy

    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGHUP"):
        return lambda: None  # signals reach only the main thread (tests serve from others)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, reload_policy, service, cfg)

    def undo() -> None:
        loop.remove_signal_handler(signal.SIGHUP)

    return undo


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


def _ledger_health(svc: GatewayService) -> dict[str, Any]:
    """What ``/healthz`` says about the ledger when it is not simply fine (no query is made)."""
    out: dict[str, Any] = {}
    if not svc.recorder.reachable:
        out["ledger"] = "unreachable"
    if svc.recorder.spooled:
        out["spooled_tasks"] = svc.recorder.spooled
    return out


def _status(svc: GatewayService, cfg: GatewayConfig) -> dict[str, Any]:
    """What an operator wants to know about a running gateway (the admin status route)."""
    import os
    from importlib.metadata import version

    return {
        "version": version("tierwise"),
        "pid": os.getpid(),
        "policy_revision": svc.policy.revision,
        "file_revision": svc.policy.file_revision,
        "changes_in_force": list(svc.policy.changes),
        "policy_source": str(svc.policy.source) if svc.policy.source else None,
        "ladder": list(svc.policy.ladder),
        "host": cfg.host,
        "anonymous": svc.keys.anonymous,
        "ledger": svc.ledger.url,
        "shadow": {
            **svc.shadows.state.status(datetime.now(UTC)),
            "day_budget_usd": _usd(svc.policy.model.budgets.shadow_day_usd),
            "in_flight": svc.shadows.in_flight,
        },
    }


def _usd(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


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


async def _read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The whole body, refused past *limit* bytes or when it has not arrived in *timeout_s*."""
    try:
        with anyio.fail_after(timeout_s):
            return await read_limited(request, limit)
    except TimeoutError:
        raise RequestError(
            f"the request body did not arrive within {timeout_s:g} s",
            status=408,
            headers={"connection": "close"},
        ) from None


def _header_map(request: Request) -> dict[str, str]:
    """The request's headers as one plain dict, read once (the first of repeated names wins,
    as with Starlette's ``Headers.get``); every later lookup is a dict lookup, not a scan."""
    out: dict[str, str] = {}
    for name, value in request.scope["headers"]:
        key = name.decode("latin-1")  # ASGI servers send names lower-cased
        if key not in out:
            out[key] = value.decode("latin-1")
    return out


def _prepare(
    svc: GatewayService,
    dialect: Dialect,
    raw: bytes,
    headers: Mapping[str, str],
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
    entry = RequestLog(dialect, request.url.path)
    call: Call | None = None
    route = "other"
    status = 500
    streaming = False
    svc.metrics.in_flight.inc()
    try:
        try:
            headers = _header_map(request)
            key = svc.keys.authenticate(headers)
            entry.key = None if key is None else key.name
            raw = await _read_body(request, cfg.max_body_bytes, cfg.body_timeout_s)
            if len(raw) > _PARSE_INLINE_BYTES:  # decoding a big body must not stall the loop
                call = await anyio.to_thread.run_sync(
                    _prepare, svc, dialect, raw, headers, key, started, upstream
                )
            else:
                call = _prepare(svc, dialect, raw, headers, key, started, upstream)
            call.log = entry
            entry.task_id, entry.route, entry.kind = call.task.id, call.route, call.task.kind
            route = call.route
            reply = await svc.serve(call)
        except RequestError as exc:
            status = exc.status
            entry.error = entry.error or exc.code or _ERROR_NAMES.get(status, "request_error")
            return error_response(dialect, exc)
        except Exception as exc:
            log.exception("unexpected error serving %s", request.url.path)
            entry.error = type(exc).__name__
            return error_response(dialect, RequestError("internal gateway error", status=500))
        status = reply.status
        # Shadow calls run after the last body message is sent, never before.
        after = None if reply.after is None else BackgroundTask(reply.after)
        if reply.stream is not None:
            streaming = True
            return StreamingResponse(
                reply.stream if reply.logs_itself else _logged(reply.stream, entry, started, call),
                status_code=reply.status,
                headers={**reply.headers, "cache-control": "no-cache"},
                media_type=_SSE,
                background=after,
            )
        return Response(
            reply.body,
            status_code=reply.status,
            headers=reply.headers,
            media_type=_JSON,
            background=after,
        )
    finally:
        svc.metrics.in_flight.dec()
        svc.metrics.request_count(dialect, route, str(status)).inc()
        if not streaming:  # a stream's line is written when the stream ends
            overhead = None if call is None else call.overhead_s()
            entry.write(status, time.perf_counter() - started, overhead)


async def _logged(
    stream: AsyncIterator[bytes], entry: RequestLog, started: float, call: Call | None
) -> AsyncIterator[bytes]:
    """Relay *stream*, then write the request's log line (however the stream ended)."""
    try:
        async for chunk in stream:
            yield chunk
    except BaseException as exc:
        entry.error = entry.error or type(exc).__name__
        raise
    finally:
        overhead = None if call is None else call.overhead_s()
        entry.write(200, time.perf_counter() - started, overhead)
