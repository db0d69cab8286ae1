"""``/dashboard``: the weekly report as a live page, and the admin's sign-in, sign-out and apply.

Routes (the gateway serves them beside the model endpoints; ``tierwise dashboard`` alone):

* ``GET /dashboard?since=&until=`` — the page for a window (``tierwise report``'s syntax: a
  date, a date-time, an age such as ``7d``, or ``now``; default the report's own, the last 7
  days). Readable without signing in when served on loopback; elsewhere it shows only the
  sign-in form until an admin signs in.
* ``POST /dashboard/sign-in`` — a form with the admin key, checked once
  (:meth:`KeyChecker.authorize_admin`); it opens a session in the ledger and sets an HttpOnly,
  SameSite=Strict cookie holding the session's random secret, never the key.
* ``POST /dashboard/sign-out`` — ends the session (its row is deleted) and clears the cookie.
* ``POST /dashboard/proposals/{id}/apply`` — applies a learning proposal as the signed-in key.

Every POST is refused with 403 when it comes from another site (``Origin`` or
``Sec-Fetch-Site``), and sign-out and apply also need the CSRF token the page put in the form
(an HMAC of the session's secret: bound to that session, stored nowhere). Without a session the
apply route answers 403 and the page is read-only. Sessions live in the ledger, so every
worker (``--workers N``) and every replica sharing it accepts them. No form field, cookie or key
is ever logged; the page loads nothing from anywhere (its Content-Security-Policy forbids it).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode

import anyio
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from tierwise.errors import LedgerError, PolicyChangeError
from tierwise.gateway.dialects import RequestError
from tierwise.reports.dashboard import (
    DASHBOARD_PATH,
    Charts,
    Viewer,
    Window,
    render_dashboard,
    render_message,
    render_sign_in,
)

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from tierwise.gateway.auth import KeyChecker
    from tierwise.ledger import ApiKey, Ledger, PolicyChange
    from tierwise.policy import Policy

__all__ = [
    "DASHBOARD_PATH",
    "SESSION_COOKIE",
    "DashboardContext",
    "create_dashboard_app",
    "csrf_token",
    "dashboard_routes",
]

log = logging.getLogger("tierwise.gateway")

#: The cookie that holds a signed-in admin's session secret.
SESSION_COOKIE = "tierwise_dashboard"
#: How long a session lasts after signing in (then sign in again).
SESSION_TTL = timedelta(hours=12)
#: A sign-in or apply form is a few hundred bytes; larger bodies are refused unread.
_MAX_FORM_BYTES = 8 * 1024
_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",  # "no-referrer" would make a form's Origin "null"
    "cache-control": "no-store",
}


@dataclass(frozen=True, slots=True)
class DashboardContext:
    """What the dashboard needs from whoever serves it (the gateway or ``tierwise dashboard``).

    ``policy`` is called on each request, so a reloaded policy is used at once; ``open_read``
    says whether the page may be read without signing in (served on loopback); ``changed`` is
    called after a proposal is applied (a gateway worker serves the change at once; the others
    follow at their next poll of the ledger).
    """

    ledger: Ledger
    policy: Callable[[], Policy]
    keys: KeyChecker
    open_read: bool
    changed: Callable[[], object] | None = None


# -- the two seams onto the report and the learner ----------------------------------------


@dataclass(frozen=True, slots=True)
class Loaded:
    """A window's report: its JSON form, its charts and each open proposal's ``change_json``."""

    data: dict[str, Any]
    charts: Charts
    changes: dict[int, dict[str, Any]]


def load_report(
    ledger: Ledger, policy: Policy, since: datetime | None, until: datetime | None
) -> Loaded:
    """The weekly report of [since, until) — the same function ``tierwise report`` calls.

    Raises:
        ValueError: an empty window.
        LedgerError: the ledger could not be read.
    """
    from tierwise.reports.html import day_chart, escalation_chart, mix_chart
    from tierwise.reports.weekly import weekly_report

    report = weekly_report(ledger, policy, since=since, until=until)
    charts = Charts(
        days=day_chart(report), tier_mix=mix_chart(report), escalation=escalation_chart(report)
    )
    changes = {p.id: dict(p.change) for p in report.proposals}
    return Loaded(report.as_dict(), charts, changes)


def apply_proposal(ledger: Ledger, policy: Policy, proposal_id: int, actor: str) -> PolicyChange:
    """Apply an open learning proposal as *actor* — what ``tierwise learn apply ID`` does.

    Raises:
        PolicyChangeError: no such proposal (``unknown``), or it cannot be applied (stale, held
            by an override, not proposed: the message says what to do).
        LedgerError: the ledger could not be reached; nothing was applied.
    """
    from tierwise.learning import apply_change

    return apply_change(ledger, policy, proposal_id, actor=actor)


# -- sessions and CSRF -----------------------------------------------------------------------


def csrf_token(session_secret: str) -> str:
    """The CSRF token of a session: an HMAC of its secret (bound to it, stored nowhere)."""
    return hmac.new(session_secret.encode(), b"tierwise dashboard csrf", hashlib.sha256).hexdigest()


def _html(body: str, status: int = 200, headers: dict[str, str] | None = None) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers={**_HEADERS, **(headers or {})})


def _refuse(status: int, message: str, back: str = DASHBOARD_PATH) -> HTMLResponse:
    return _html(render_message(_TITLES.get(status, "Refused"), message, back=back), status)


_TITLES = {400: "Bad request", 401: "Not signed in", 403: "Refused", 404: "Not found"}
_TITLES |= {409: "Not applied", 413: "Too large", 503: "Ledger unavailable"}


def _redirect(to: str, headers: dict[str, str] | None = None) -> RedirectResponse:
    return RedirectResponse(to, status_code=303, headers={**_HEADERS, **(headers or {})})


def _cookie(secret: str, max_age: int, secure: bool) -> str:
    flags = f"; Path={DASHBOARD_PATH}; Max-Age={max_age}; HttpOnly; SameSite=Strict"
    return f"{SESSION_COOKIE}={secret}{flags}{'; Secure' if secure else ''}"


def _same_site(request: Request) -> bool:
    """Whether a POST came from this dashboard's own pages, as the browser tells it: by
    ``Sec-Fetch-Site`` (which no page can set), else by ``Origin``. A client that sends
    neither is no browser; the session's CSRF token still decides for it."""
    fetched = request.headers.get("sec-fetch-site")
    if fetched is not None:
        return fetched in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return origin == f"{request.url.scheme}://{request.headers.get('host', '')}"


async def _form(request: Request) -> dict[str, str]:
    """A small urlencoded form (first value of each field); RequestError when it is not one."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise RequestError("expected a form (application/x-www-form-urlencoded)", status=400)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM_BYTES:
            raise RequestError("the form is too large", status=413)
    try:
        fields = parse_qs(body.decode(), max_num_fields=16, keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        raise RequestError("the form could not be read", status=400) from None
    return {name: values[0] for name, values in fields.items()}


def _window_query(request: Request) -> str:
    keep = {k: request.query_params[k] for k in ("since", "until") if request.query_params.get(k)}
    return "?" + urlencode(keep) if keep else ""


# -- the routes ---------------------------------------------------------------------------


def dashboard_routes(context: Callable[[], DashboardContext]) -> list[Route]:
    """The dashboard's routes; *context* is called per request (the app's running state)."""

    async def session(request: Request) -> tuple[ApiKey | None, str | None]:
        secret = request.cookies.get(SESSION_COOKIE)
        if not secret:
            return None, None
        key = await anyio.to_thread.run_sync(context().ledger.dashboard_session, secret)
        return (key, secret) if key is not None else (None, None)

    async def page(request: Request) -> Response:
        ctx = context()
        try:
            key, secret = await session(request)
        except LedgerError:
            return _refuse(503, "the ledger cannot be read right now; try again shortly")
        viewer = Viewer(
            admin=None if key is None else key.name,
            csrf=None if secret is None else csrf_token(secret),
        )
        query = _window_query(request)
        if key is None and not ctx.open_read:
            return _html(render_sign_in(query), 401)
        since_text = request.query_params.get("since", "")
        until_text = request.query_params.get("until", "")
        notes: list[str] = []
        since = _when(since_text, "since", notes)
        until = _when(until_text, "until", notes)
        try:
            loaded = await anyio.to_thread.run_sync(
                load_report, ctx.ledger, ctx.policy(), since, until
            )
        except ValueError as exc:
            return _refuse(400, str(exc))
        except LedgerError:
            return _refuse(503, "the ledger cannot be read right now; try again shortly")
        notice = await _applied_notice(ctx.ledger, request.query_params.get("applied", ""))
        window = Window(since=since_text, until=until_text, query=query, notes=tuple(notes))
        html = render_dashboard(
            loaded.data,
            charts=loaded.charts,
            viewer=viewer,
            window=window,
            changes=loaded.changes,
            notice=notice,
        )
        return _html(html)

    async def sign_in(request: Request) -> Response:
        ctx = context()
        if not _same_site(request):
            return _refuse(403, "sign-in refused: the form was not sent from this dashboard")
        try:
            secret_key = (await _form(request)).get("key", "").strip()
            if not secret_key:
                raise RequestError("enter an admin key", status=401)
            key = ctx.keys.authorize_admin({"x-api-key": secret_key})
            if key is None:  # an anonymous gateway takes no key: there is no admin to be
                raise RequestError(
                    "an admin key is needed to sign in; create one with "
                    "`tierwise keys create --name NAME --role admin`",
                    status=401,
                )
            secret = await anyio.to_thread.run_sync(
                ctx.ledger.open_dashboard_session, key, SESSION_TTL
            )
        except RequestError as exc:
            return _refuse(exc.status, exc.message)
        except LedgerError:
            return _refuse(503, "the ledger cannot be written right now; try again shortly")
        log.info("dashboard: key %r signed in", key.name)
        secure = request.url.scheme == "https"
        cookie = _cookie(secret, int(SESSION_TTL.total_seconds()), secure)
        return _redirect(DASHBOARD_PATH + _window_query(request), {"set-cookie": cookie})

    async def sign_out(request: Request) -> Response:
        ctx = context()
        checked = await _checked(request)
        if isinstance(checked, Response):
            return checked
        key, secret = checked
        await anyio.to_thread.run_sync(ctx.ledger.close_dashboard_session, secret)
        log.info("dashboard: key %r signed out", key.name)
        clear = _cookie("", 0, request.url.scheme == "https")
        return _redirect(DASHBOARD_PATH, {"set-cookie": clear})

    async def apply(request: Request) -> Response:
        ctx = context()
        checked = await _checked(request)
        if isinstance(checked, Response):
            return checked
        key, _ = checked
        pid = int(request.path_params["pid"])
        query = _window_query(request)
        back = DASHBOARD_PATH + query
        try:
            done = await anyio.to_thread.run_sync(
                apply_proposal, ctx.ledger, ctx.policy(), pid, f"key:{key.name}"
            )
        except PolicyChangeError as exc:
            return _refuse(404 if exc.unknown else 409, str(exc), back=back)
        except LedgerError:
            return _refuse(503, "the ledger cannot be written right now; nothing was applied")
        if ctx.changed is not None:
            await anyio.to_thread.run_sync(ctx.changed)
        log.info(
            "dashboard: key %r applied change #%d (%s: %s -> %s)",
            key.name,
            pid,
            done.kind,
            done.floor_before or "no floor",
            done.floor_after,
        )
        return _redirect(f"{back}{'&' if query else '?'}applied={pid}")

    async def _checked(request: Request) -> Response | tuple[ApiKey, str]:
        """The admin session of a state-changing POST, or the 403 that refuses it."""
        if not _same_site(request):
            return _refuse(403, "refused: the form was not sent from this dashboard")
        try:
            key, secret = await session(request)
        except LedgerError:
            return _refuse(503, "the ledger cannot be read right now; nothing was changed")
        if key is None or secret is None:
            return _refuse(403, "refused: sign in with an admin key first (read-only)")
        try:
            form = await _form(request)
        except RequestError as exc:
            if exc.status != 400:
                return _refuse(exc.status, exc.message)
            form = {}  # not a form at all: no CSRF token either
        sent = form.get("csrf", "")
        if not sent or not hmac.compare_digest(sent.encode(), csrf_token(secret).encode()):
            return _refuse(403, "refused: the form's CSRF token is missing or wrong; reload")
        return key, secret

    return [
        Route(DASHBOARD_PATH, page, methods=["GET"]),
        Route(f"{DASHBOARD_PATH}/sign-in", sign_in, methods=["POST"]),
        Route(f"{DASHBOARD_PATH}/sign-out", sign_out, methods=["POST"]),
        Route(f"{DASHBOARD_PATH}/proposals/{{pid:int}}/apply", apply, methods=["POST"]),
    ]


async def _applied_notice(ledger: Ledger, applied: str) -> str | None:
    """What the redirect after an apply shows: the change as the ledger now records it."""
    if not applied.isdigit() or len(applied) > 18:
        return None
    try:
        change = await anyio.to_thread.run_sync(ledger.policy_change, int(applied))
    except LedgerError:
        return None
    if change is None or change.status != "applied":
        return None
    return (
        f"Change #{change.id} applied by {change.actor}: {change.kind} floor "
        f"{change.floor_before or 'none'} → {change.floor_after or 'none'}. Every process "
        "sharing the ledger follows within seconds (tierwise learn history; revert with "
        f"tierwise learn revert {change.id})."
    )


def _when(text: str, name: str, notes: list[str]) -> datetime | None:
    """A window bound as typed (``now`` too), or ``None`` with a note saying why it was ignored."""
    from tierwise.analytics.when import parse_when

    text = text.strip()
    if not text:
        return None
    if text.lower() == "now":
        return datetime.now(UTC)
    try:
        return parse_when(text)
    except ValueError as exc:
        notes.append(f"{name}: {exc}; the report's default was used instead")
        return None


def create_dashboard_app(ledger_url: str, policy: Policy, *, host: str = "127.0.0.1") -> Starlette:
    """The dashboard alone (``tierwise dashboard``): its routes, ``/`` and ``/healthz``.

    The ledger is opened when the app starts and closed when it stops. Served on loopback the
    page is readable by anyone who can reach it; elsewhere only by a signed-in admin.
    """
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette

    state: dict[str, DashboardContext] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        from tierwise.gateway.auth import KeyChecker
        from tierwise.gateway.config import is_loopback
        from tierwise.ledger import open_ledger

        ledger = open_ledger(ledger_url, create=False)
        try:
            keys = KeyChecker(ledger, anonymous=False)
            state["context"] = DashboardContext(ledger, lambda: policy, keys, is_loopback(host))
            yield
        finally:
            state.pop("context", None)
            ledger.close()

    def context() -> DashboardContext:
        found = state.get("context")
        if found is None:
            raise RuntimeError("the dashboard is not running (lifespan not started)")
        return found

    async def home(request: Request) -> Response:
        return RedirectResponse(DASHBOARD_PATH, status_code=307)

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return Starlette(
        routes=[
            Route("/", home, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            *dashboard_routes(context),
        ],
        lifespan=lifespan,
    )
