"""The gateway and the learner: serving the file plus the applied changes, following new ones,
and applying or reverting a change over HTTP.

Every worker reads the changes in force (:meth:`tierwise.ledger.Ledger.applied_changes`, one
small query) when it starts, after each reload, and then every ``changes_poll_s`` seconds (2 by
default) in a background task, off the event loop; a change applied anywhere — the CLI, another
worker, another host on the same PostgreSQL ledger — is served by every worker within a few
seconds, without a restart. Requests under way keep the decision they started with.

Admin routes (an admin key; on an anonymous loopback gateway, none):

* ``POST /v1/tierwise/admin/learn/apply`` ``{"id": 12}`` — apply a proposal;
* ``POST /v1/tierwise/admin/learn/revert`` ``{"id": 12, "reason": "..."}`` — undo an applied
  change or lift an override.

Both answer 200 with the audited row and the effective revision this worker now serves, 400 for
a body that is not that JSON, 401/403 without an admin key, 404 for an unknown id, 409 when the
change cannot be made (stale, held by an override, in the wrong state; the message says what to
do), 503 when the ledger cannot be reached. The actor recorded is ``key:<name>`` (``admin`` on
an anonymous gateway).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from tierwise.errors import LedgerError, PolicyChangeError, TierwiseError
from tierwise.gateway.bodies import json_object, read_limited
from tierwise.gateway.dialects import RequestError
from tierwise.gateway.errors import error_response

if TYPE_CHECKING:
    from collections.abc import Callable

    from tierwise.cascade import Cascade
    from tierwise.gateway.service import GatewayService
    from tierwise.ledger import Ledger

__all__ = ["LEARN_ROUTES", "follow_forever", "follow_once", "handle_learn"]

log = logging.getLogger("tierwise.gateway")

#: The admin routes' last path segments.
LEARN_ROUTES = ("learn/apply", "learn/revert")
_MAX_BODY = 8 * 1024
_FIELDS = {"learn/apply": ("id",), "learn/revert": ("id", "reason")}


def follow_once(ledger: Ledger, cascade: Cascade) -> bool:
    """Read the changes in force and serve them (blocking: run it off the event loop).

    Returns whether the effective policy changed. A ledger that cannot be read leaves the
    policy in force and is logged.
    """
    try:
        return cascade.follow(ledger.applied_changes())
    except TierwiseError as exc:
        log.warning("could not read the policy changes in force: %s", exc)
        return False


async def follow_forever(service: Callable[[], GatewayService | None], every_s: float) -> None:
    """Follow the changes in force every *every_s* seconds until cancelled."""
    import anyio

    while True:
        await anyio.sleep(every_s)
        svc = service()
        if svc is None:
            continue
        await anyio.to_thread.run_sync(follow_once, svc.ledger, svc.cascade)


async def handle_learn(svc: GatewayService, request: Request, route: str) -> Response:
    """Apply or revert a change (*route* is one of :data:`LEARN_ROUTES`)."""
    import anyio

    try:
        key = svc.keys.authorize_admin(request.headers)
        body = _parse(await read_limited(request, _MAX_BODY), route)
        actor = "admin" if key is None else f"key:{key.name}"
        done = await anyio.to_thread.run_sync(_change, svc, route, body, actor)
    except RequestError as exc:
        return error_response("openai", exc)
    return Response(json.dumps(done).encode(), media_type="application/json")


def _change(svc: GatewayService, route: str, body: dict[str, Any], actor: str) -> dict[str, Any]:
    from tierwise.learning import apply_change, revert_change

    base = svc.routing.policy
    try:
        if route == "learn/apply":
            change = apply_change(svc.ledger, base, body["id"], actor=actor)
        else:
            change = revert_change(
                svc.ledger, base, body["id"], actor=actor, reason=body.get("reason")
            )
    except PolicyChangeError as exc:
        raise RequestError(str(exc), status=404 if exc.unknown else 409, param="id") from None
    except LedgerError:
        raise RequestError("the ledger could not be reached; nothing changed", status=503) from None
    follow_once(svc.ledger, svc.cascade)  # this worker at once; the others at their next poll
    return {"change": change.as_dict(), "revision": svc.policy.revision}


def _parse(raw: bytes, route: str) -> dict[str, Any]:
    body = json_object(raw, _FIELDS[route], '{"id": 12}')
    change_id = body.get("id")
    if not isinstance(change_id, int) or isinstance(change_id, bool) or change_id < 1:
        raise RequestError(
            "id: expected the change's id, a positive integer (tierwise learn history)",
            param="id",
        )
    reason = body.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > 2000):
        raise RequestError("reason: expected text of at most 2000 characters", param="reason")
    return {"id": change_id, "reason": reason}
