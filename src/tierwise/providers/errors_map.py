"""Map the SDKs' exceptions, once, into tierwise's provider error tree.

Each SDK class is looked up along its MRO in an explicit table, so a subclass the SDK adds under a
known class (Anthropic adds one per ``error_code``) inherits its parent's meaning, while a class
added directly under an SDK root maps only to the generic root entry — the test over every SDK
class catches that and a person decides what it means.

================================  =============================================================
SDK class (anthropic / openai)    tierwise error
================================  =============================================================
APITimeoutError, 408              :class:`~tierwise.errors.ProviderTimeoutError`
APIConnectionError, 499           :class:`~tierwise.errors.ProviderConnectionError`
  … caused by a cut body          :class:`~tierwise.errors.BadResponseError`
RateLimitError (429)              :class:`~tierwise.errors.RateLimitedError` (``retry_after``)
Authentication/PermissionDenied   :class:`~tierwise.errors.AuthenticationError`
  credentials / OAuth errors
other 4xx                         :class:`~tierwise.errors.BadRequestError`
InternalServerError (5xx, 529)    :class:`~tierwise.errors.ServerError`
APIResponseValidationError,       :class:`~tierwise.errors.BadResponseError`
  bodies that are not JSON
================================  =============================================================

Messages never carry credentials: the provider's key and anything shaped like an API key are
replaced by ``[redacted]``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import httpx2

from tierwise.errors import (
    AuthenticationError,
    BadRequestError,
    BadResponseError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitedError,
    ServerError,
)

ErrorTable = dict[type[BaseException], type[ProviderError]]

_KEY_SHAPES = re.compile(r"\b(?:sk|pk|rk|key)-[A-Za-z0-9_\-*.]{6,}")
_MAX_MESSAGE = 500


#: Secrets shorter than this are not searched for: masking every "k" of a one-letter test key
#: would mangle messages while protecting nothing (real keys are dozens of characters).
MIN_SECRET_LEN = 8


def redact(text: str, secrets: tuple[str | None, ...] = ()) -> str:
    """Remove secrets and anything shaped like an API key (``sk-…``) from a message."""
    for secret in secrets:
        if secret and len(secret) >= MIN_SECRET_LEN:
            text = text.replace(secret, "[redacted]")
    return _KEY_SHAPES.sub("[redacted]", text)


def parse_retry_after(
    headers: Mapping[str, str] | None, now: Callable[[], float] = time.time
) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date).

    ``None`` when neither header is present or readable; never negative.
    """
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - now())


def status_class(status: int) -> type[ProviderError]:
    """The tierwise error for an HTTP status the tables do not name."""
    if status in (401, 403):
        return AuthenticationError
    if status == 429:
        return RateLimitedError
    if status == 408:
        return ProviderTimeoutError
    if status == 499:
        return ProviderConnectionError
    if 400 <= status < 500:
        return BadRequestError
    if status >= 500:
        return ServerError
    return BadResponseError


def _anthropic_table() -> ErrorTable:
    import anthropic

    e = anthropic
    return {
        e.AnthropicError: ProviderError,
        e.APIError: BadResponseError,
        e.APIResponseValidationError: BadResponseError,
        e.APIWebhookValidationError: BadResponseError,
        e.APIConnectionError: ProviderConnectionError,
        e.APITimeoutError: ProviderTimeoutError,
        e.APIStatusError: BadResponseError,  # refined by status code below
        e.BadRequestError: BadRequestError,
        e.AuthenticationError: AuthenticationError,
        e.PaymentRequiredError: BadRequestError,
        e.PermissionDeniedError: AuthenticationError,
        e.NotFoundError: BadRequestError,
        e.RequestTimeoutError: ProviderTimeoutError,
        e.ConflictError: BadRequestError,
        e.PreconditionFailedError: BadRequestError,
        e.ContentTooLargeError: BadRequestError,
        e.UnprocessableEntityError: BadRequestError,
        e.RateLimitError: RateLimitedError,
        e.RequestHeaderFieldsTooLargeError: BadRequestError,
        e.ClientClosedRequestError: ProviderConnectionError,
        e.InternalServerError: ServerError,
        e.HTTPNotImplementedError: ServerError,
        e.ServiceUnavailableError: ServerError,
        e.GatewayTimeoutError: ServerError,
        e.OverloadedError: ServerError,
        e.RetryableError: ServerError,
        e.CredentialsError: AuthenticationError,
        e.IdentityTokenFileError: AuthenticationError,
    }


def _openai_table() -> ErrorTable:
    import openai

    e = openai
    return {
        e.OpenAIError: ProviderError,
        e.APIError: BadResponseError,
        e.APIResponseValidationError: BadResponseError,
        e.APIConnectionError: ProviderConnectionError,
        e.APITimeoutError: ProviderTimeoutError,
        e.APIStatusError: BadResponseError,  # refined by status code below
        e.BadRequestError: BadRequestError,
        e.AuthenticationError: AuthenticationError,
        e.OAuthError: AuthenticationError,
        e.PermissionDeniedError: AuthenticationError,
        e.NotFoundError: BadRequestError,
        e.ConflictError: BadRequestError,
        e.UnprocessableEntityError: BadRequestError,
        e.RateLimitError: RateLimitedError,
        e.InternalServerError: ServerError,
        e.LengthFinishReasonError: BadResponseError,
        e.ContentFilterFinishReasonError: BadResponseError,
        e.WebSocketConnectionClosedError: ProviderConnectionError,
        e.WebSocketQueueFullError: ProviderConnectionError,
    }


#: Transport errors the SDKs let through (e.g. while iterating a stream) and body decoding.
_TRANSPORT_TABLE: ErrorTable = {
    httpx2.HTTPError: ProviderConnectionError,
    httpx2.TransportError: ProviderConnectionError,
    httpx2.TimeoutException: ProviderTimeoutError,
    httpx2.RemoteProtocolError: BadResponseError,
    httpx2.DecodingError: BadResponseError,
    httpx2.StreamError: BadResponseError,
    json.JSONDecodeError: BadResponseError,
    UnicodeDecodeError: BadResponseError,
}

#: Classes in the SDKs' private modules, by ``module.qualname``: client-side usage errors (a bug
#: or a misconfiguration, not an upstream failure) map to the non-retryable base class.
_NAMED: dict[str, dict[str, type[ProviderError]]] = {
    "anthropic": {
        "anthropic._response.StreamAlreadyConsumed": ProviderError,
        "anthropic.lib._extras._common.MissingDependencyError": ProviderError,
        "anthropic.lib.credentials._workload.WorkloadIdentityError": AuthenticationError,
        "anthropic.lib.foundry.MutuallyExclusiveAuthError": AuthenticationError,
        "anthropic.lib.tools._toolsets._errors.ToolsetClosedError": ProviderError,
        "anthropic.lib.tools._toolsets._errors.ToolsetConfigError": ProviderError,
        "anthropic.lib.tools._toolsets._errors.ToolsetContractError": ProviderError,
        "anthropic.lib.tools._toolsets._errors.ToolsetUsageError": ProviderError,
        "anthropic.lib.tools._toolsets._errors.ToolsetsFixedError": ProviderError,
    },
    "openai": {
        "openai._exceptions.SubjectTokenProviderError": AuthenticationError,
        "openai._response.StreamAlreadyConsumed": ProviderError,
        "openai._AmbiguousModuleClientUsageError": ProviderError,
        "openai._extras._common.MissingDependencyError": ProviderError,
        "openai.lib.beta.agents._files.AgentFilePreparationError": ProviderError,
        "openai.lib.beta.agents._files.AgentFileStagingError": ProviderError,
        "openai.lib.beta.agents._result.AgentOutputParseError": BadResponseError,
        "openai.lib.beta.agents._result.AgentTurnResultError": BadResponseError,
        "openai.lib._old_api.APIRemovedInV1": ProviderError,
        "openai.lib.azure.MutuallyExclusiveAuthError": AuthenticationError,
    },
}

_TABLES: dict[str, ErrorTable] = {}


def error_table(sdk: str) -> ErrorTable:
    """The explicit class table of one SDK (``anthropic`` or ``openai``), transport included."""
    table = _TABLES.get(sdk)
    if table is None:
        base = _anthropic_table() if sdk == "anthropic" else _openai_table()
        table = _TABLES[sdk] = {**_TRANSPORT_TABLE, **base}
    return table


def lookup(sdk: str, cls: type[BaseException]) -> tuple[type[BaseException], type[ProviderError]]:
    """The nearest table entry along ``cls``'s MRO: (the SDK class matched, tierwise class).

    Raises:
        KeyError: no class in the MRO is in the table (not an SDK or transport error).
    """
    table = error_table(sdk)
    named = _NAMED.get(sdk, {})
    for base in cls.__mro__:
        target = table.get(base) or named.get(f"{base.__module__}.{base.__qualname__}")
        if target is not None:
            return base, target
    raise KeyError(cls.__name__)


def sdk_root(sdk: str) -> type[BaseException]:
    """The root exception class of an SDK (``AnthropicError`` / ``OpenAIError``)."""
    if sdk == "anthropic":
        import anthropic

        return anthropic.AnthropicError
    import openai

    return openai.OpenAIError


def is_mappable(sdk: str, exc: BaseException) -> bool:
    """Whether :func:`map_error` knows ``exc`` (an SDK, transport or body-decoding error)."""
    try:
        lookup(sdk, type(exc))
    except KeyError:
        return False
    return True


def _cut_short(exc: BaseException) -> bool:
    """Whether a connection error was the body being cut, not the connection failing."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, httpx2.RemoteProtocolError):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def _describe(exc: BaseException) -> tuple[int | None, str, str | None, Mapping[str, str] | None]:
    """(status, upstream message, request id, response headers) of an SDK error."""
    status = getattr(exc, "status_code", None)
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) if response is not None else None
    request_id = getattr(exc, "request_id", None)
    body = getattr(exc, "body", None)
    message = None
    if isinstance(body, Mapping):
        err = body.get("error")
        if isinstance(err, Mapping):
            etype, emsg = err.get("type"), err.get("message")
            message = f"{etype}: {emsg}" if etype and emsg else (emsg or etype)
        elif isinstance(err, str):
            message = err
        elif isinstance(body.get("message"), str):  # openai hands over the inner error object
            etype, emsg = body.get("type") or body.get("code"), body["message"]
            message = f"{etype}: {emsg}" if etype else emsg
    if not message:
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return (
        status if isinstance(status, int) else None,
        str(message),
        request_id if isinstance(request_id, str) else None,
        headers,
    )


def map_error(
    exc: BaseException,
    *,
    sdk: str,
    provider: str,
    model: str,
    secrets: tuple[str | None, ...] = (),
) -> ProviderError:
    """The tierwise error for an exception raised by an SDK call (``sdk``: anthropic/openai).

    Exceptions that are not SDK, transport or body-decoding errors are not mapped: they are
    bugs, and the caller lets them propagate.

    Raises:
        KeyError: ``exc`` is not an error this module maps (see :func:`is_mappable`).
    """
    if isinstance(exc, ProviderError):
        return exc
    matched, cls = lookup(sdk, type(exc))
    status, message, request_id, headers = _describe(exc)
    if cls is BadResponseError and status is not None and matched.__name__ == "APIStatusError":
        cls = status_class(status)
    if cls is ProviderConnectionError and _cut_short(exc):
        cls = BadResponseError
        message = f"the response was cut short ({message})"
    elif cls is BadResponseError and isinstance(exc, json.JSONDecodeError | UnicodeDecodeError):
        message = f"the response body is not valid JSON ({exc})"
    where = f"{provider} model {model!r}"
    head = f"HTTP {status}" if status is not None else type(exc).__name__
    text = redact(f"{where}: {head}: {message}", secrets)
    if len(text) > _MAX_MESSAGE:
        text = text[: _MAX_MESSAGE - 1] + "…"
    if request_id:
        text += f" (request id {request_id})"
    kw: dict[str, Any] = {
        "provider": provider,
        "model": model,
        "status": status,
        "request_id": request_id,
    }
    if cls is RateLimitedError:
        return RateLimitedError(text, retry_after=parse_retry_after(headers), **kw)
    return cls(text, **kw)


def bad_response(
    provider: str, model: str, what: str, request_id: str | None = None
) -> BadResponseError:
    """A :class:`BadResponseError` for a reply the SDK parsed but that is not usable."""
    return BadResponseError(
        f"{provider} model {model!r}: unusable response: {what}",
        provider=provider,
        model=model,
        request_id=request_id,
    )


def missing_key(provider: str, env: str | None) -> AuthenticationError:
    """The error for a provider whose API key environment variable is not set."""
    if env:
        text = (
            f"no API key for {provider}: the environment variable {env} is not set or empty; "
            f"export {env}=... (or set api_key_env on the tier to the variable that holds it)"
        )
    else:
        text = f"no API key for {provider}: none was given and no api_key_env is configured"
    return AuthenticationError(text, provider=provider)
