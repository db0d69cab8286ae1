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

import json
import logging
import time
from collections.abc import Mapping, Sequence
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
from tierwise.gateway.dialects import Dialect
from tierwise.gateway.http import Transport, TransportError
from tierwise.gateway.replies import reply_problem
from tierwise.gateway.upstream_reply import (
    UpstreamReply,
    add_upstream_time,
    completion_from,
    upstream_seconds,
)
from tierwise.gateway.upstream_stream import UpstreamStream
from tierwise.policy import Policy
from tierwise.pricing import (
    Usage,
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


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


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
            add_upstream_time(elapsed)
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
