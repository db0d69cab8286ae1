"""What the two SDK providers share: lazy clients, the error boundary, timing, closing.

A subclass says how to build its SDK's clients, how to turn a request into call parameters and
how to read the response; this base makes every call go through exactly one error boundary.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Mapping
from typing import Any, ClassVar, Generic, TypeVar

from tierwise.errors import ProviderError
from tierwise.providers.base import Completion, CompletionRequest
from tierwise.providers.errors_map import bad_response, is_mappable, map_error, missing_key

SyncClient = TypeVar("SyncClient")
AsyncClient = TypeVar("AsyncClient")


class SDKProvider(Generic[SyncClient, AsyncClient]):
    """Base of :class:`AnthropicProvider` and :class:`OpenAIProvider`.

    Clients are built on first use and reused: one blocking client, and one async client per
    event loop (an async client's connections belong to the loop that opened them). Both use
    ``max_retries=0``; tierwise retries itself (:mod:`tierwise.providers.retry`).
    """

    name: ClassVar[str]
    sdk: ClassVar[str]
    #: Request ``extra`` keys passed through to the API body (others are tierwise's own).
    body_keys: ClassVar[frozenset[str]]

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str | None = None,
        timeout_s: float = 60.0,
        defaults: Mapping[str, Any] | None = None,
        default_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.defaults = dict(defaults or {})
        self.default_headers = dict(default_headers or {})
        self._api_key = api_key
        self._lock = threading.Lock()
        self._sync: SyncClient | None = None
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncClient] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:  # never shows the key
        return (
            f"{type(self).__name__}(base_url={self.base_url!r}, api_key_env={self.api_key_env!r})"
        )

    # -- subclass hooks ------------------------------------------------------------------------

    def _new_sync(self, api_key: str) -> SyncClient:
        raise NotImplementedError

    def _new_async(self, api_key: str) -> AsyncClient:
        raise NotImplementedError

    def _call(self, client: SyncClient, params: dict[str, Any]) -> Any:
        raise NotImplementedError

    async def _acall(self, client: AsyncClient, params: dict[str, Any]) -> Any:
        raise NotImplementedError

    def _params(self, request: CompletionRequest) -> dict[str, Any]:
        raise NotImplementedError

    # -- shared by the subclasses' hooks ---------------------------------------------------------

    def _client_options(self, api_key: str) -> dict[str, Any]:
        """The constructor arguments both SDKs' clients take (SDK retries off)."""
        return {
            "api_key": api_key,
            "base_url": self.base_url,
            "max_retries": 0,
            "timeout": self.timeout_s,
            "default_headers": self.default_headers or None,
        }

    def _with_passthrough(
        self, request: CompletionRequest, params: dict[str, Any], **body_fields: Any
    ) -> dict[str, Any]:
        """Add ``extra_body`` and ``extra_headers`` to *params*, returning them.

        The body is, later entries winning: the provider's defaults, the request's ``extra``
        keys the API knows (:attr:`body_keys`), *body_fields* that are set, then
        ``extra["body"]`` verbatim. Headers come from ``extra["headers"]``.
        """
        extra = request.extra or {}
        body: dict[str, Any] = dict(self.defaults)
        body.update({k: v for k, v in extra.items() if k in self.body_keys})
        body.update({k: v for k, v in body_fields.items() if v is not None})
        raw_body = extra.get("body")
        if isinstance(raw_body, Mapping):
            body.update(raw_body)
        if body:
            params["extra_body"] = body
        headers = extra.get("headers")
        if isinstance(headers, Mapping):
            params["extra_headers"] = dict(headers)
        return params

    def _read(self, response: Any, request: CompletionRequest, latency_s: float) -> Completion:
        raise NotImplementedError

    # -- the seam --------------------------------------------------------------------------------

    def warm(self) -> None:
        """Import the SDK now, so its first import (a second or more) is not timed as a call.

        The cascade calls this before it starts an attempt's clock.
        """
        import importlib

        importlib.import_module(self.sdk)

    def complete(self, request: CompletionRequest) -> Completion:
        """Call the model once (no retries).

        Raises:
            ProviderError: the call failed (mapped from the SDK's exception).
        """
        client = self._sync_client()
        params = self._params(request)
        t0 = time.perf_counter()
        try:
            response = self._call(client, params)
        except Exception as exc:
            raise self._map(exc, request) from exc
        return self._finish(response, request, time.perf_counter() - t0)

    async def acomplete(self, request: CompletionRequest) -> Completion:
        """Async twin of :meth:`complete`."""
        client = self._async_client()
        params = self._params(request)
        t0 = time.perf_counter()
        try:
            response = await self._acall(client, params)
        except Exception as exc:
            raise self._map(exc, request) from exc
        return self._finish(response, request, time.perf_counter() - t0)

    def _map(self, exc: Exception, request: CompletionRequest) -> Exception:
        if isinstance(exc, ProviderError):
            return exc
        if not is_mappable(self.sdk, exc):
            return exc  # a bug, not an upstream failure: let it show as itself
        return map_error(
            exc, sdk=self.sdk, provider=self.name, model=request.model, secrets=(self._api_key,)
        )

    def _finish(self, response: Any, request: CompletionRequest, latency_s: float) -> Completion:
        try:
            return self._read(response, request, latency_s)
        except ProviderError:
            raise
        except (AttributeError, TypeError, ValueError, KeyError, IndexError) as exc:
            raise bad_response(self.name, request.model, f"{type(exc).__name__}: {exc}") from exc

    # -- clients ---------------------------------------------------------------------------------

    def _key(self) -> str:
        if not self._api_key:
            raise missing_key(self.name, self.api_key_env)
        return self._api_key

    def _sync_client(self) -> SyncClient:
        client = self._sync
        if client is None:
            with self._lock:
                if self._sync is None:
                    self._sync = self._new_sync(self._key())
                client = self._sync
        return client

    def _async_client(self) -> AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is None:
            with self._lock:
                client = self._async.get(loop)
                if client is None:
                    client = self._async[loop] = self._new_async(self._key())
        return client

    # -- closing ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the clients. Async clients are closed on their own loop when it still exists.

        Prefer ``await aclose()`` from the loop that made async calls. A provider stays usable:
        a later call opens new clients.
        """
        with self._lock:
            sync, self._sync = self._sync, None
            pending = list(self._async.items())
            self._async.clear()
        if sync is not None:
            sync.close()  # type: ignore[attr-defined]
        for loop, client in pending:
            _close_on_loop(loop, client)

    async def aclose(self) -> None:
        """Close every client; the current loop's async client is awaited here."""
        loop = asyncio.get_running_loop()
        with self._lock:
            mine = self._async.pop(loop, None)
        if mine is not None:
            await mine.close()  # type: ignore[attr-defined]
        self.close()


_CLOSING: set[asyncio.Task[Any]] = set()  # strong references until the close tasks finish


def _close_on_loop(loop: asyncio.AbstractEventLoop, client: Any) -> None:
    """Close an async client on the loop that owns its connections, if that is possible."""
    if loop.is_closed():
        return  # its connections died with their loop
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if loop.is_running():
        if running is loop:
            task = loop.create_task(client.close())
            _CLOSING.add(task)
            task.add_done_callback(_CLOSING.discard)
        else:
            asyncio.run_coroutine_threadsafe(client.close(), loop).result(timeout=10)
    elif running is None:
        loop.run_until_complete(client.close())
