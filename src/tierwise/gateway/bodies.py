"""Reading a request body: one size-limited reader and one small-JSON-object check for the
gateway's own routes (feedback, the learner's admin routes)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from starlette.requests import Request

from tierwise.gateway.dialects import RequestError

__all__ = ["json_object", "read_limited"]


async def read_limited(request: Request, limit: int) -> bytes:
    """The whole body, or a 413 once it is (or declares itself) longer than *limit* bytes.

    The 413 closes the connection: the rest of an oversized body is never read.
    """
    # straight from the ASGI scope: the gateway's request path has read its headers once already
    declared = next(
        (v.decode("latin-1") for k, v in request.scope["headers"] if k == b"content-length"), None
    )
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(
            f"the request body is {declared} bytes; this route accepts at most {limit}",
            status=413,
            headers={"connection": "close"},
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(
                f"the request body exceeds this route's limit of {limit} bytes",
                status=413,
                headers={"connection": "close"},
            )
        chunks.append(chunk)
    return b"".join(chunks)


def json_object(raw: bytes, fields: Sequence[str], example: str) -> dict[str, Any]:
    """*raw* as a JSON object holding no field but *fields*; a 400 naming the problem otherwise.

    *example* is a good body, quoted in the errors. The fields' values are the caller's to check.
    """
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise RequestError(f"the body is not JSON: expected {example}") from None
    if not isinstance(body, dict):
        raise RequestError(f"the body must be a JSON object: {example}")
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise RequestError(
            f"unknown field {unknown[0]!r}; expected {', '.join(fields)}", param=unknown[0]
        )
    return body
