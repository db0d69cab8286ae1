"""Raw upstream providers: the gateway's request path to Anthropic and OpenAI-compatible APIs.

The gateway already holds the request as JSON in the right dialect, so it forwards it over a
lean pooled transport (:mod:`tierwise.gateway.http`) instead of rebuilding it through an SDK,
which would parse and re-serialise every field. Usage is still parsed exactly with
:mod:`tierwise.pricing`'s functions, errors are mapped into tierwise's error tree (status codes
as the SDKs map them, transport failures, cut bodies, malformed JSON), and messages never
contain the upstream key.

:class:`RawProvider` implements the :class:`~tierwise.providers.base.Provider` protocol;
:class:`UpstreamPool` is the :class:`~tierwise.cascade.seams.ProviderSource` the gateway's
cascade uses. ``Completion.raw`` is an :class:`UpstreamReply` with the upstream's JSON (and its
exact bytes for non-streamed calls) so a same-dialect answer can be returned verbatim.
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx2

from tierwise.errors import (
    BadResponseError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitedError,
)
from tierwise.gateway.dialects import Dialect, neutral_stop_reason
from tierwise.gateway.http import Transport, TransportError, UpstreamResponse
from tierwise.gateway.replies import reply_problem
from tierwise.gateway.sse import AnthropicCollector, Event, OpenAICollector, SSEDecoder
from tierwise.gateway.translate import text_of_anthropic_content, text_of_openai_content
from tierwise.policy import Policy
from tierwise.pricing import (
    Usage,
    merge_anthropic_stream_usage,
    usage_from_anthropic,
    usage_from_openai,
)
from tierwise.providers.base import Completion, CompletionRequest, openai_max_tokens_param
from tierwise.providers.errors_map import (
    MIN_SECRET_LEN,
    missing_key,
    parse_retry_after,
    redact,
    status_class,
)

__all__ = [
    "DEFAULT_BASE_URLS",
    "RawProvider",
    "UpstreamPool",
    "UpstreamReply",
    "UpstreamStream",
    "describe_missing",
    "missing_keys",
    "upstream_seconds",
]

log = logging.getLogger("tierwise.gateway")

DEFAULT_BASE_URLS: dict[str, str] = {
    "anthropic": "https://api.anthropic.com",
    "openai": "https://api.openai.com/v1",
}
ANTHROPIC_VERSION = "2023-06-01"
_MAX_ERROR_TEXT = 400

#: Seconds the current request spent waiting on upstreams (the gateway's overhead excludes it).
_UPSTREAM_TIME: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar(
    "tierwise_upstream_time", default=None
)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def upstream_seconds() -> list[float]:
    """Start accounting upstream wait time for the current request; returns the accumulator."""
    acc = [0.0]
    _UPSTREAM_TIME.set(acc)
    return acc


def _add_upstream_time(seconds: float) -> None:
    acc = _UPSTREAM_TIME.get()
    if acc is not None:
        acc[0] += seconds


@dataclass(frozen=True, slots=True)
class UpstreamReply:
    """What the upstream said: its JSON (collected, for streams) and, when not streamed, bytes."""

    data: dict[str, Any]
    dialect: Dialect
    body: bytes | None = None
    streamed: bool = False


def completion_from(
    data: dict[str, Any],
    dialect: Dialect,
    *,
    provider: str,
    model: str,
    usage: Usage,
    latency_s: float,
    body: bytes | None = None,
    streamed: bool = False,
    request_id: str | None = None,
) -> Completion:
    """A :class:`Completion` for an upstream reply in either dialect.

    ``text`` is the answer's text; an answer made only of tool calls is represented by their
    JSON (``[{"name": ..., "input": ...}]``) so validators still see what the model produced.
    """
    if dialect == "anthropic":
        text = text_of_anthropic_content(
            [
                b
                for b in data.get("content") or ()
                if isinstance(b, dict) and b.get("type") == "text"
            ]
        )
        calls = [
            {"name": b.get("name"), "input": b.get("input")}
            for b in data.get("content") or ()
            if isinstance(b, dict) and b.get("type") == "tool_use"
        ]
        raw_stop = data.get("stop_reason")
    else:
        choice = (data.get("choices") or [{}])[0] or {}
        message = choice.get("message") or {}
        text = text_of_openai_content(message.get("content")) or str(message.get("refusal") or "")
        calls = []
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            try:
                args: Any = json.loads(function.get("arguments") or "{}")
            except json.JSONDecodeError:
                args = function.get("arguments")
            calls.append({"name": function.get("name"), "input": args})
        raw_stop = choice.get("finish_reason")
    if not text and calls:
        text = json.dumps(calls)
    return Completion(
        text=text,
        model=str(data.get("model") or model),
        provider=provider,
        usage=usage,
        stop_reason=neutral_stop_reason(dialect, raw_stop),
        raw_stop_reason=raw_stop if isinstance(raw_stop, str) else None,
        request_id=request_id,
        latency_s=latency_s,
        raw=UpstreamReply(data, dialect, body, streamed),
    )


class RawProvider:
    """One upstream API (Anthropic Messages or OpenAI Chat Completions) over a shared client.

    Expects ``request.extra["body"]``: the request JSON in this provider's dialect (the model
    is set from ``request.model``); ``request.extra["headers"]`` may add headers (the caller's
    ``anthropic-beta``, for instance). Without a body, one is built from the neutral request.
    """

    def __init__(
        self,
        provider: Dialect,
        *,
        transport: Transport,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str | None = None,
    ) -> None:
        self.name: str = provider
        self.dialect: Dialect = provider
        self.transport = transport
        base = (base_url or DEFAULT_BASE_URLS[provider]).rstrip("/")
        #: How this server takes the output limit when tierwise builds a body itself.
        self.max_tokens_param = openai_max_tokens_param(base_url)
        self.url = f"{base}/v1/messages" if provider == "anthropic" else f"{base}/chat/completions"
        self._api_key = api_key
        # what scrub() masks in upstream bytes (keys too short to matter are not searched for)
        self._secret = api_key.encode() if api_key and len(api_key) >= MIN_SECRET_LEN else b""
        self._api_key_env = api_key_env

    def __repr__(self) -> str:  # never the key
        return f"RawProvider({self.name!r}, url={self.url!r})"

    @property
    def missing_key(self) -> str | None:
        """The environment variable that should hold this provider's key, when it is unset."""
        return None if self._api_key else (self._api_key_env or "an API key")

    # -- request building ------------------------------------------------------------------------

    def headers(self, request: CompletionRequest) -> dict[str, str]:
        """The request headers: the key, the API version, and any the request adds."""
        if not self._api_key:
            raise missing_key(self.name, self._api_key_env)
        headers = {"content-type": "application/json", "accept": "application/json"}
        if self.dialect == "anthropic":
            headers["x-api-key"] = self._api_key
            headers["anthropic-version"] = ANTHROPIC_VERSION
        else:
            headers["authorization"] = f"Bearer {self._api_key}"
        extra = request.extra.get("headers") if request.extra else None
        if isinstance(extra, Mapping):
            headers.update({str(k): str(v) for k, v in extra.items()})
        return headers

    def _body(self, request: CompletionRequest) -> dict[str, Any]:
        body = request.extra.get("body") if request.extra else None
        if isinstance(body, dict):
            if body.get("model") == request.model:
                return body
            return {**body, "model": request.model}
        return self._neutral_body(request)

    def _neutral_body(self, request: CompletionRequest) -> dict[str, Any]:
        messages: list[dict[str, Any]] = [
            {"role": m.role, "content": m.content} for m in request.messages
        ]
        if self.dialect == "anthropic":
            out: dict[str, Any] = {
                "model": request.model,
                "max_tokens": request.max_tokens,
                "messages": messages,
            }
            if request.system:
                out["system"] = request.system
        else:
            if request.system:
                messages.insert(0, {"role": "system", "content": request.system})
            out = {
                "model": request.model,
                self.max_tokens_param: request.max_tokens,
                "messages": messages,
            }
        if request.temperature is not None:
            out["temperature"] = request.temperature
        return out

    def _timeout(self, request: CompletionRequest) -> httpx2.Timeout:
        return httpx2.Timeout(request.timeout_s, connect=min(10.0, request.timeout_s))

    def transport_error(self, model: str, exc: TransportError) -> ProviderError:
        """A transport failure as tierwise's error, with the key redacted."""
        where = f"{self.name} model {model!r}"
        text = redact(f"{where}: {exc}", (self._api_key,))
        kw: dict[str, Any] = {"provider": self.name, "model": model}
        if exc.kind == "timeout":
            return ProviderTimeoutError(text, **kw)
        if exc.kind == "protocol":
            return BadResponseError(text, **kw)
        return ProviderConnectionError(text, **kw)

    # -- what the upstream says back ---------------------------------------------------------------

    def scrub(self, data: bytes) -> bytes:
        """*data* with this provider's key masked, should the upstream reflect it."""
        if self._secret and self._secret in data:
            return data.replace(self._secret, b"[redacted]")
        return data

    def redacted(self, text: str | None) -> str | None:
        """Upstream-provided text (a header value, a message) with secrets masked."""
        return None if text is None else redact(text, (self._api_key,))

    # -- errors ----------------------------------------------------------------------------------

    def status_error(
        self, model: str, status: int, body: bytes, headers: Mapping[str, str]
    ) -> ProviderError:
        """A non-200 reply as tierwise's error (class by status), with the key redacted."""
        message = body.decode("utf-8", errors="replace")
        try:
            data = json.loads(body)
            err = data.get("error") if isinstance(data, dict) else None
            if isinstance(err, dict):
                etype, emsg = err.get("type") or err.get("code"), err.get("message")
                message = f"{etype}: {emsg}" if etype and emsg else str(emsg or etype)
        except (ValueError, RecursionError):
            pass
        # Everything the upstream said is redacted together: it may reflect the key anywhere.
        request_id = self.redacted(headers.get("request-id") or headers.get("x-request-id"))
        said = message[:_MAX_ERROR_TEXT] + (f" (request id {request_id})" if request_id else "")
        text = redact(f"{self.name} model {model!r}: HTTP {status}: {said}", (self._api_key,))
        cls = status_class(status)
        kw: dict[str, Any] = {
            "provider": self.name,
            "model": model,
            "status": status,
            "request_id": request_id,
        }
        if cls is RateLimitedError:
            return RateLimitedError(text, retry_after=parse_retry_after(headers), **kw)
        return cls(text, **kw)

    # -- calls -----------------------------------------------------------------------------------

    async def acomplete(self, request: CompletionRequest) -> Completion:
        """One call; a streamed request body is collected into the complete answer."""
        body = self._body(request)
        if body.get("stream"):
            async with self.open_stream(request) as stream:
                async for _ in stream.events():
                    pass
                return stream.completion()
        headers = self.headers(request)
        payload = json.dumps(body).encode()
        started = time.perf_counter()
        try:
            response = await self.transport.send(self.url, payload, headers, request.timeout_s)
            content = await response.read()
        except TransportError as exc:
            raise self.transport_error(request.model, exc) from None
        finally:
            elapsed = time.perf_counter() - started
            _add_upstream_time(elapsed)
        return self._finish(request.model, response.status, content, response.headers, elapsed)

    def _finish(
        self, model: str, status: int, content: bytes, headers: Mapping[str, str], elapsed: float
    ) -> Completion:
        if status != 200:
            raise self.status_error(model, status, content, headers)
        content = self.scrub(content)
        try:
            data = json.loads(content, parse_constant=_no_constants)
        except (ValueError, RecursionError) as exc:  # not JSON, NaN, huge numbers, too deep
            raise BadResponseError(
                f"{self.name} model {model!r}: the response body is not valid JSON ({exc})",
                provider=self.name,
                model=model,
            ) from None
        # The usage first: a reply that is no valid answer may still have been billed.
        usage: Usage | None = None
        usage_error: Exception | None = None
        try:
            raw_usage = data.get("usage") if isinstance(data, dict) else None
            usage = (
                usage_from_anthropic(raw_usage)
                if self.dialect == "anthropic"
                else usage_from_openai(raw_usage)
            )
        except (TypeError, ValueError) as exc:
            usage_error = exc
        problem = reply_problem(self.dialect, data)
        if problem is None and usage_error is not None:
            problem = f"unusable usage ({usage_error})"
        if problem is not None or usage is None:
            raise BadResponseError(
                f"{self.name} model {model!r}: the reply is not a valid answer: {problem}",
                provider=self.name,
                model=model,
                usage=usage,
            )
        request_id = self.redacted(headers.get("request-id") or headers.get("x-request-id"))
        return completion_from(
            data,
            self.dialect,
            provider=self.name,
            model=model,
            usage=usage,
            latency_s=elapsed,
            body=content,
            request_id=request_id,
        )

    async def aopen(self, request: CompletionRequest) -> UpstreamStream:
        """Send *request* streamed and wait for its first events (nothing relayed yet).

        Raises:
            ProviderError: the call failed, or the stream ended or broke before its first event.
        """
        stream = self.open_stream(request)
        await stream.__aenter__()
        try:
            await stream.prime()
        except BaseException:
            await stream.aclose()
            raise
        return stream

    def open_stream(self, request: CompletionRequest) -> UpstreamStream:
        """A streamed call, used as ``async with provider.open_stream(req) as s:``.

        Entering the context sends the request and raises the mapped error for a non-200 reply.
        """
        body = self._body(request)
        if not body.get("stream"):
            body = {**body, "stream": True}
        if self.dialect == "openai":
            options = body.get("stream_options")
            if not (isinstance(options, dict) and options.get("include_usage")):
                body = {**body, "stream_options": {**(options or {}), "include_usage": True}}
        return UpstreamStream(self, request, body)


class UpstreamStream:
    """One streamed upstream call: relays events and folds them into the final answer."""

    def __init__(
        self, provider: RawProvider, request: CompletionRequest, body: dict[str, Any]
    ) -> None:
        self.provider = provider
        self.request = request
        self.body = body
        self.model = request.model
        self._response: UpstreamResponse | None = None
        self._decoder = SSEDecoder()
        self._anthropic = AnthropicCollector() if provider.dialect == "anthropic" else None
        self._openai = OpenAICollector() if provider.dialect == "openai" else None
        self._usage = Usage()
        self._done = False
        self.started = time.perf_counter()
        self.elapsed = 0.0
        self.request_id: str | None = None
        self._gen: AsyncIterator[list[tuple[Event, dict[str, Any] | None]]] | None = None
        self._first: list[tuple[Event, dict[str, Any] | None]] | None = None

    async def __aenter__(self) -> UpstreamStream:
        provider = self.provider
        headers = provider.headers(self.request)
        headers["accept"] = "text/event-stream"
        t0 = time.perf_counter()
        try:
            response = await provider.transport.send(
                provider.url, json.dumps(self.body).encode(), headers, self.request.timeout_s
            )
            if response.status != 200:
                content = await response.read()
                raise provider.status_error(self.model, response.status, content, response.headers)
        except TransportError as exc:
            raise provider.transport_error(self.model, exc) from None
        finally:
            self._account(t0)
        self._response = response
        self.request_id = provider.redacted(
            response.headers.get("request-id") or response.headers.get("x-request-id")
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Release the upstream connection (idempotent)."""
        response, self._response = self._response, None
        if response is not None:
            await response.aclose()

    def _account(self, t0: float) -> None:
        spent = time.perf_counter() - t0
        self.elapsed += spent
        _add_upstream_time(spent)

    async def prime(self) -> None:
        """Wait for the first events (kept for :meth:`batches`); raises the mapped error.

        Until they arrive nothing has been relayed, so a caller can still try another model.
        """
        self._gen = self._batches()
        try:
            self._first = await self._gen.__anext__()
        except StopAsyncIteration:
            raise BadResponseError(
                f"{self.provider.name} model {self.model!r}: the stream ended before any event",
                provider=self.provider.name,
                model=self.model,
            ) from None

    async def batches(self) -> AsyncIterator[list[tuple[Event, dict[str, Any] | None]]]:
        """The upstream's events as they arrive, one list per network read.

        Each event keeps its exact bytes and its parsed JSON (``None`` for ``ping`` and
        ``[DONE]``). Raises the mapped :class:`ProviderError` when the stream breaks.
        """
        if self._gen is None:
            self._gen = self._batches()
        elif self._first is not None:
            first, self._first = self._first, None
            yield first
        async for batch in self._gen:
            yield batch

    async def events(self) -> AsyncIterator[tuple[Event, dict[str, Any] | None]]:
        """:meth:`batches`, one event at a time."""
        async for batch in self.batches():
            for item in batch:
                yield item

    async def _batches(self) -> AsyncIterator[list[tuple[Event, dict[str, Any] | None]]]:
        assert self._response is not None, "use the stream as an async context manager"
        iterator = self._response.aiter_bytes().__aiter__()
        while True:
            t0 = time.perf_counter()
            try:
                chunk = await iterator.__anext__()
            except StopAsyncIteration:
                self._account(t0)
                break
            except TransportError as exc:
                self._account(t0)
                raise self._billed(self.provider.transport_error(self.model, exc)) from None
            self._account(t0)
            batch, error = self._fold_all(self._decoder.feed(chunk))
            if batch:
                yield batch
            if error is not None:
                raise self._billed(error)
        batch, error = self._fold_all(self._decoder.flush())
        if batch:
            yield batch
        if error is not None:
            raise self._billed(error)
        if not self._done:
            raise self._billed(
                BadResponseError(
                    f"{self.provider.name} model {self.model!r}: the stream ended before its "
                    "last event (cut short)",
                    provider=self.provider.name,
                    model=self.model,
                )
            )

    def _billed(self, error: ProviderError) -> ProviderError:
        """*error* carrying the usage reported so far: a stream that started was billed."""
        if error.usage is None and self._usage.total_tokens > 0:
            error.usage = self._usage
        return error

    def _fold_all(
        self, events: list[Event]
    ) -> tuple[list[tuple[Event, dict[str, Any] | None]], ProviderError | None]:
        """Fold events; on an error event, what came before it and the error to raise next."""
        out: list[tuple[Event, dict[str, Any] | None]] = []
        for event in events:
            scrubbed = self.provider.scrub(event.raw)
            if scrubbed is not event.raw:  # the upstream reflected the key: never relay it
                event = Event(
                    event.event, self.provider.scrub(event.data.encode()).decode(), scrubbed
                )
            try:
                out.append((event, self._fold(event)))
            except ProviderError as exc:
                return out, exc
            except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
                return out, BadResponseError(
                    f"{self.provider.name} model {self.model!r}: a stream event is not valid "
                    f"in its dialect ({type(exc).__name__}: {exc})",
                    provider=self.provider.name,
                    model=self.model,
                )
        return out, None

    def _fold(self, event: Event) -> dict[str, Any] | None:
        if self._anthropic is not None:
            if event.event == "ping":
                return None
            data = self._json(event)
            self._anthropic.feed(data)
            kind = data.get("type")
            if kind == "message_start":
                self._usage = usage_from_anthropic((data.get("message") or {}).get("usage"))
            elif kind == "message_delta" and data.get("usage"):
                self._usage = merge_anthropic_stream_usage(self._usage, data["usage"])
            elif kind == "message_stop":
                self._done = True
            elif kind == "error":
                raise self._stream_error(data)
            return data
        assert self._openai is not None
        if event.data.strip() == "[DONE]":
            self._done = True
            return None
        data = self._json(event)
        if "error" in data and not data.get("choices"):
            raise self._stream_error(data)
        self._openai.feed(data)
        if data.get("usage"):
            self._usage = usage_from_openai(data["usage"])
        return data

    def _json(self, event: Event) -> dict[str, Any]:
        try:
            data = json.loads(event.data)
        except json.JSONDecodeError as exc:
            raise BadResponseError(
                f"{self.provider.name} model {self.model!r}: a stream event is not valid JSON "
                f"({exc})",
                provider=self.provider.name,
                model=self.model,
            ) from None
        if not isinstance(data, dict):
            raise BadResponseError(
                f"{self.provider.name} model {self.model!r}: a stream event is not an object",
                provider=self.provider.name,
                model=self.model,
            )
        return data

    def _stream_error(self, data: dict[str, Any]) -> ProviderError:
        err = data.get("error") or {}
        etype = err.get("type") if isinstance(err, dict) else None
        status = {"overloaded_error": 529, "rate_limit_error": 429}.get(str(etype), 500)
        return self.provider.status_error(self.model, status, json.dumps(data).encode(), {})

    @property
    def usage(self) -> Usage:
        """Usage so far (final once the stream has ended)."""
        return self._usage

    @property
    def finished(self) -> bool:
        """Whether the upstream's final event (``message_stop`` / ``[DONE]``) arrived."""
        return self._done

    def collected(self) -> dict[str, Any]:
        """The answer folded so far, as the non-streamed response object."""
        if self._anthropic is not None:
            return self._anthropic.result()
        assert self._openai is not None
        return self._openai.result()

    def completion(self) -> Completion:
        """The whole answer as a :class:`Completion` (after the events are exhausted).

        Raises:
            BadResponseError: the events do not add up to a valid answer.
        """
        data = self.collected()
        problem = reply_problem(self.provider.dialect, data)
        if problem is not None:
            raise self._billed(
                BadResponseError(
                    f"{self.provider.name} model {self.model!r}: the streamed reply is not a "
                    f"valid answer: {problem}",
                    provider=self.provider.name,
                    model=self.model,
                )
            )
        return completion_from(
            data,
            self.provider.dialect,
            provider=self.provider.name,
            model=self.model,
            usage=self._usage,
            latency_s=self.elapsed,
            streamed=True,
            request_id=self.request_id,
        )


def _default_key_env(provider: str) -> str:
    return "ANTHROPIC_API_KEY" if provider == "anthropic" else "OPENAI_API_KEY"


def missing_keys(policy: Policy, env: Mapping[str, str]) -> dict[str, str]:
    """Tier → why it cannot be called (``$VAR is not set``), for tiers none of whose models
    (primary or alternates) has its key variable set in *env*."""
    out: dict[str, str] = {}
    for tier in policy.model.tiers:
        names = [tier.api_key_env or _default_key_env(tier.provider)]
        names += [
            alt.api_key_env or tier.api_key_env or _default_key_env(alt.provider or tier.provider)
            for alt in tier.alternate_specs()
        ]
        if not any(env.get(n) for n in names):
            out[tier.name] = f"${names[0]} is not set"
    return out


def describe_missing(missing: Mapping[str, str]) -> str:
    """One line for :func:`missing_keys`'s answer, grouped by variable."""
    by_why: dict[str, list[str]] = {}
    for tier, why in missing.items():
        by_why.setdefault(why, []).append(tier)
    parts = [f"{why} (tier{'s' if len(t) > 1 else ''} {', '.join(t)})" for why, t in by_why.items()]
    return (
        "; ".join(parts) + "; export it, or pass --allow-missing-keys to serve the other tiers "
        "and report these unavailable in /healthz"
    )


@dataclass(frozen=True, slots=True)
class _Target:
    tier: str
    model: str
    provider: RawProvider


@dataclass(slots=True)
class UpstreamPool:
    """Raw providers for every tier of a policy (primary model first, then alternates).

    Providers are shared by (provider, base URL, key variable). Keys are read from *env* once.
    """

    policy: Policy
    transport: Transport
    env: Mapping[str, str]
    _tiers: dict[str, list[tuple[str, RawProvider]]] = field(default_factory=dict)
    _providers: dict[tuple[str, str | None, str | None], RawProvider] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for tier in self.policy.model.tiers:
            entries = [(tier.model, self._provider(tier.provider, tier.base_url, tier.api_key_env))]
            for alt in tier.alternate_specs():
                entries.append(
                    (
                        alt.model,
                        self._provider(
                            alt.provider or tier.provider,
                            alt.base_url if alt.base_url is not None else tier.base_url,
                            alt.api_key_env or tier.api_key_env,
                        ),
                    )
                )
            self._tiers[tier.name] = entries

    def _provider(self, kind: str, base_url: str | None, key_env: str | None) -> RawProvider:
        key = (kind, base_url, key_env)
        provider = self._providers.get(key)
        if provider is None:
            env_name = key_env or _default_key_env(kind)
            provider = RawProvider(
                "anthropic" if kind == "anthropic" else "openai",
                transport=self.transport,
                base_url=base_url,
                api_key=self.env.get(env_name) or None,
                api_key_env=env_name,
            )
            self._providers[key] = provider
        return provider

    def for_tier(self, tier: str) -> Sequence[tuple[str, RawProvider]]:
        """(model, provider) for a tier, primary first."""
        return self._tiers[tier]

    def missing_keys(self) -> dict[str, str]:
        """Tier → why it cannot be called, for tiers none of whose models has a key."""
        return missing_keys(self.policy, self.env)

    def owner_of(self, model: str) -> tuple[str, RawProvider] | None:
        """The lowest tier serving *model* (as primary or alternate) and its provider."""
        for name in self.policy.ladder:
            for m, provider in self._tiers[name]:
                if m == model:
                    return name, provider
        return None

    def provider_for_dialect(self, dialect: Dialect) -> tuple[str, RawProvider] | None:
        """The lowest tier with a provider speaking *dialect*, and that provider."""
        for name in self.policy.ladder:
            for _, provider in self._tiers[name]:
                if provider.dialect == dialect:
                    return name, provider
        return None

    def models(self) -> list[tuple[str, str]]:
        """(model, tier) for every model of the pool, in ladder order, without duplicates."""
        seen: dict[str, str] = {}
        for name in self.policy.ladder:
            for model, _ in self._tiers[name]:
                seen.setdefault(model, name)
        return list(seen.items())

    async def aclose(self) -> None:
        """Close the shared transport (the providers hold nothing else)."""
        await self.transport.aclose()
