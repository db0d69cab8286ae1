"""One mapping from what went wrong to the status, error body and headers a caller gets.

Every path — routed or concrete model, unstreamed, buffered or live stream — ends a failed
request here, so the same failure always gets the same answer:

============================================  ======  ==================================
what happened                                 status  notes
============================================  ======  ==================================
a budget cannot cover the next attempt        429     ``budget_exceeded``; not retried
every tier's answer failed validation         502     ``validation_failed``
the upstream refused the request (4xx other   same    400, 404, 413, 422 … passed through
than 401, 403, 408, 429)                              with the upstream's (redacted) text
the upstream rate-limited every try           429     ``retry-after`` when it gave one
401/403 from the upstream                     502     the gateway's own upstream key,
                                                      never the caller's
5xx, timeouts, connection failures, replies   502
that are not valid answers
a model the gateway cannot price              502     a configuration error
the ledger's database cannot be reached       503     ``ledger_unavailable``, before any
before an upstream call                               upstream call: nothing is charged;
                                                      ``retry-after: 1``
============================================  ======  ==================================

(A database that fails *after* a paid call is no error for the caller: the call's rows are
spooled to a local file and written when the database returns; see
:mod:`tierwise.gateway.recorder`.)

When several tiers failed, the *last* tier's error decides (the one nearest the answer the
caller asked for). Every error carries ``x-tierwise-task-id`` (the attempt trail in the ledger)
and what the request cost so far: ``x-tierwise-attempts``, ``x-tierwise-cost-usd`` and, when an
attempt was made, ``x-tierwise-tier``. Errors produced after the gateway's own retries say
``x-should-retry: false`` so SDKs do not retry them again, except an upstream 429 and an
unreachable ledger (``true``: the caller should back off and try again).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

from tierwise.errors import (
    BudgetExceededError,
    EscalationExhaustedError,
    LedgerUnavailableError,
    ProviderError,
    RateLimitedError,
    StreamInterruptedError,
    TierwiseError,
    UnknownModelError,
)
from tierwise.gateway.dialects import Dialect, RequestError, error_body
from tierwise.records import SIDE_ROLES, AttemptRecord

if TYPE_CHECKING:
    from starlette.responses import Response

__all__ = [
    "error_response",
    "failure_error",
    "ledger_unavailable",
    "trail_headers",
    "upstream_status",
]

#: Upstream statuses that mean "the gateway's problem", not the caller's: never passed through.
_NOT_PASSED = frozenset({401, 403, 408, 429})


def upstream_status(error: ProviderError) -> int:
    """The status a caller gets for an upstream failure (see the table above)."""
    status = error.status
    if isinstance(error, RateLimitedError) or status == 429:
        return 429
    if status is not None and 400 <= status < 500 and status not in _NOT_PASSED:
        return status
    return 502


def trail_headers(
    task_id: str, attempts: Sequence[AttemptRecord] = (), *, retry: bool = False
) -> dict[str, str]:
    """The headers every error carries: the trail's task id and what was spent so far."""
    headers = {
        "x-tierwise-task-id": task_id,
        "x-tierwise-attempts": str(len(attempts)),
        "x-tierwise-cost-usd": format(sum((a.cost_usd for a in attempts), Decimal(0)), "f"),
    }
    tried = [a for a in attempts if a.role not in SIDE_ROLES]
    if tried:
        headers["x-tierwise-tier"] = tried[-1].tier
    headers["x-should-retry"] = "true" if retry else "false"
    return headers


def failure_error(task_id: str, exc: TierwiseError) -> RequestError:
    """The :class:`RequestError` (status, message, headers) answering a failed task.

    Raises:
        TypeError: *exc* is not a failure this mapping knows (a bug: let it surface as a 500).
    """
    trail = f"attempt trail {task_id}"
    if isinstance(exc, BudgetExceededError):
        return RequestError(
            f"budget {exc.budget} exhausted: limit ${exc.limit_usd}, spent or held "
            f"${exc.spent_usd}, the next attempt may cost up to ${exc.needed_usd}; {trail}",
            status=429,
            code="budget_exceeded",
            headers=trail_headers(task_id, exc.attempts),
        )
    if isinstance(exc, EscalationExhaustedError):
        tried = [a for a in exc.attempts if a.role not in SIDE_ROLES]
        last = tried[-1] if tried else None
        if exc.last_error is None and any(a.outcome == "rejected" for a in tried):
            return RequestError(
                f"no tier produced an answer that passed validation after {len(tried)} "
                f"attempt(s); last failure: {last.failure if last else '-'}; {trail}",
                status=502,
                code="validation_failed",
                headers=trail_headers(task_id, exc.attempts),
            )
        if exc.last_error is not None:
            return _upstream(task_id, exc.last_error, exc.attempts)
        return RequestError(f"no tier could answer; {trail}", status=502)
    if isinstance(exc, StreamInterruptedError):
        return RequestError(
            f"the upstream stream broke: {exc.cause}; {trail}",
            status=502,
            headers=trail_headers(task_id, exc.attempts),
        )
    if isinstance(exc, ProviderError):
        return _upstream(task_id, exc, ())
    if isinstance(exc, LedgerUnavailableError):
        return ledger_unavailable(task_id)
    if isinstance(exc, UnknownModelError):
        return RequestError(
            f"the gateway cannot price model {exc.model!r} ({exc}); task {task_id}",
            status=502,
            headers=trail_headers(task_id),
        )
    raise TypeError(f"no mapping for {type(exc).__name__}") from exc


def _upstream(
    task_id: str, error: ProviderError, attempts: Sequence[AttemptRecord]
) -> RequestError:
    status = upstream_status(error)
    trail = f"attempt trail {task_id}"
    if status == 429:
        headers = trail_headers(task_id, attempts, retry=True)
        retry_after = error.retry_after if isinstance(error, RateLimitedError) else None
        if retry_after is not None:
            headers["retry-after"] = str(max(1, round(retry_after)))
        return RequestError(
            f"the upstream is rate limiting: {error}; {trail}",
            status=429,
            code="upstream_rate_limited",
            headers=headers,
        )
    if status != 502:
        return RequestError(
            f"the upstream refused the request: {error}; {trail}",
            status=status,
            headers=trail_headers(task_id, attempts),
        )
    return RequestError(
        f"upstream unavailable after retries: {error}; {trail}",
        status=502,
        headers=trail_headers(task_id, attempts),
    )


def ledger_unavailable(task_id: str | None = None) -> RequestError:
    """503: the ledger's database cannot be reached, so the request was refused before its
    (next) upstream call. The gateway fails closed: a call it cannot record or hold a budget
    for is not made. Worth retrying shortly; the SDKs do (``x-should-retry: true``)."""
    headers = {"x-should-retry": "true", "retry-after": "1"}
    where = ""
    if task_id is not None:
        headers["x-tierwise-task-id"] = task_id
        where = f"; task {task_id}"
    return RequestError(
        "the gateway's ledger database cannot be reached, so the request was stopped before "
        f"any (further) upstream call and is not charged for one; try again shortly{where}",
        status=503,
        code="ledger_unavailable",
        headers=headers,
    )


def error_response(dialect: Dialect, exc: RequestError) -> Response:
    """*exc* as the caller's dialect of error JSON, with the headers SDK clients act on."""
    from starlette.responses import Response

    body = error_body(dialect, exc.status, exc.message, param=exc.param, code=exc.code)
    headers = dict(exc.headers)
    if exc.status == 401:
        headers.setdefault("www-authenticate", "Bearer")
    if exc.status in (400, 401, 404, 413):
        headers.setdefault("x-should-retry", "false")
    return Response(
        json.dumps(body).encode(),
        status_code=exc.status,
        headers=headers,
        media_type="application/json",
    )
