"""Reading a request body with a size limit: one reader for every route that takes a body."""

from __future__ import annotations

from starlette.requests import Request

from tierwise.gateway.dialects import RequestError

__all__ = ["read_limited"]


async def read_limited(request: Request, limit: int) -> bytes:
    """The whole body, or a 413 once it is (or declares itself) longer than *limit* bytes.

    The 413 closes the connection: the rest of an oversized body is never read.
    """
    declared = request.headers.get("content-length")
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
