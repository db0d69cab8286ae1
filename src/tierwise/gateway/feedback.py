"""``POST /v1/tierwise/feedback``: people flag a task's output through the gateway.

Body: ``{"task_id": "...", "flag": "wrong" | "needed_frontier" | "cheaper_would_do",
"note": "..." (optional)}``; a keyless request may add ``"author"`` (default ``anonymous``).

Who may flag what: a client key the tasks its own key created (any other task is a 404, the same
answer as an unknown task, so a key cannot probe for others' task ids); an admin key any task; a
keyless request to an anonymous gateway (loopback without keys, or ``--allow-anonymous``) any
task. A keyed flag is recorded under the author ``key:<name>``. The latest flag per task and
author stands, so sending the same request again changes nothing (``"change": "unchanged"``).

Answers 200 with the stored flag as JSON; 400 (a body that is not the JSON above, the message
names the field), 401, 404, 413, in the OpenAI error shape the admin routes use.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from tierwise.errors import LedgerError
from tierwise.gateway.bodies import json_object, read_limited
from tierwise.gateway.dialects import RequestError
from tierwise.gateway.errors import error_response
from tierwise.ledger.feedback import FLAGS, MAX_NOTE_CHARS

if TYPE_CHECKING:
    from tierwise.gateway.service import GatewayService
    from tierwise.ledger import ApiKey, Ledger
    from tierwise.ledger.feedback import Feedback

__all__ = ["FEEDBACK_PATH", "handle_feedback"]

FEEDBACK_PATH = "/v1/tierwise/feedback"
#: A flag and a note fit in far less; larger bodies are refused before they are read whole.
MAX_BODY_BYTES = 16 * 1024
_FIELDS = ("task_id", "flag", "note", "author")


async def handle_feedback(svc: GatewayService, request: Request) -> Response:
    """Authenticate, check the body, and record the flag (ledger work off the event loop)."""
    import anyio

    try:
        key = svc.keys.authenticate(request.headers)
        body = _parse(await read_limited(request, MAX_BODY_BYTES))
        stored = await anyio.to_thread.run_sync(_record, svc.ledger, key, body)
    except RequestError as exc:
        return error_response("openai", exc)
    return Response(json.dumps(stored.as_dict()).encode(), media_type="application/json")


def _parse(raw: bytes) -> dict[str, Any]:
    """The body as a dict of checked fields; a 400 that names the field otherwise."""
    body = json_object(raw, _FIELDS, '{"task_id": "...", "flag": "wrong"}')
    task_id = body.get("task_id")
    if not isinstance(task_id, str) or not task_id.strip() or len(task_id) > 64:
        raise RequestError("task_id: expected the task's id (x-tierwise-task-id)", param="task_id")
    flag = body.get("flag")
    if flag not in FLAGS:
        raise RequestError(f"flag: expected one of {', '.join(FLAGS)}, got {flag!r}", param="flag")
    note = body.get("note")
    if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE_CHARS):
        raise RequestError(
            f"note: expected text of at most {MAX_NOTE_CHARS} characters", param="note"
        )
    author = body.get("author")
    if author is not None and (not isinstance(author, str) or not 0 < len(author) <= 200):
        raise RequestError("author: expected 1-200 characters", param="author")
    return {"task_id": task_id.strip(), "flag": flag, "note": note, "author": author}


def _record(ledger: Ledger, key: ApiKey | None, body: dict[str, Any]) -> Feedback:
    task_id = body["task_id"]
    missing = RequestError(f"no task {task_id!r} for this key", status=404, param="task_id")
    try:
        task = ledger.task(task_id)
    except LedgerError:
        raise RequestError("the ledger could not be read; try again", status=503) from None
    if task is None:
        raise missing
    if key is not None:
        if body["author"] is not None:
            raise RequestError(
                f"author: a request with a key flags as its key (key:{key.name}); omit author",
                param="author",
            )
        if key.role != "admin" and task["key_id"] != key.id:
            raise missing  # the same answer as an unknown task: ids of others stay unknown
        author = f"key:{key.name}"
    else:
        author = body["author"] or "anonymous"
    try:
        stored = ledger.record_feedback(
            task_id,
            body["flag"],
            author=author,
            note=body["note"],
            key_id=None if key is None else key.id,
        )
    except ValueError as exc:
        raise RequestError(str(exc)) from None
    except LedgerError:
        raise RequestError(
            "the ledger could not record the flag; nothing was stored, try again", status=503
        ) from None
    if stored is None:  # pruned between the read and the write
        raise missing
    return stored
