"""Retrying one model call, and cooling down a model that keeps failing.

Retries dispatch on the error class (:attr:`tierwise.errors.ProviderError.retryable`: rate
limits, 5xx including 529, timeouts, connection failures, cut or malformed replies), never on
message text. Waits use full-jitter exponential backoff: attempt *n* (from 0) waits a uniform
random fraction of ``min(max_backoff_s, backoff_s * 2**n)``. A 429 that says ``retry-after``
waits at least that long; when it asks for more than ``max_retry_after_s`` (default 60 s) the
error is raised at once instead, so the caller moves to an alternate model rather than block.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from tierwise.errors import ProviderError, RateLimitedError

if TYPE_CHECKING:
    from tierwise.policy.schema import Retry
    from tierwise.providers.base import Completion, CompletionRequest, Provider

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently one model is retried, and when it cools down.

    ``attempts`` counts every call including the first; ``cooldown_after`` consecutive failed
    calls (each after its retries) cool a model down for ``cooldown_s``. A ``retry-after``
    longer than ``max_retry_after_s`` is not waited for.
    """

    attempts: int = 3
    backoff_s: float = 0.5
    max_backoff_s: float = 20.0
    cooldown_s: float = 60.0
    cooldown_after: int = 3
    max_retry_after_s: float = 60.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts}")
        if min(self.backoff_s, self.max_backoff_s, self.cooldown_s, self.max_retry_after_s) < 0:
            raise ValueError(
                "backoff_s, max_backoff_s, cooldown_s and max_retry_after_s must not be negative"
            )
        if self.cooldown_after < 1:
            raise ValueError(f"cooldown_after must be at least 1, got {self.cooldown_after}")

    @classmethod
    def from_policy(cls, retry: Retry) -> RetryPolicy:
        """The retry policy of a policy file's ``[retry]`` table."""
        return cls(
            attempts=retry.attempts,
            backoff_s=retry.backoff_s,
            max_backoff_s=retry.max_backoff_s,
            cooldown_s=retry.cooldown_s,
            cooldown_after=retry.cooldown_after,
        )

    def backoff(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        """The full-jitter wait after failed attempt ``attempt`` (0-based)."""
        ceiling = min(self.max_backoff_s, self.backoff_s * 2.0 ** min(attempt, 32))
        return float(rng()) * ceiling

    def wait_before_retry(
        self, error: ProviderError, attempt: int, rng: Callable[[], float] = random.random
    ) -> float | None:
        """Seconds to wait before retrying after ``error`` on attempt ``attempt`` (0-based).

        ``None`` means do not retry: the error is not retryable, attempts are used up, or a
        ``retry-after`` asks for longer than ``max_retry_after_s``.
        """
        if not error.retryable or attempt + 1 >= self.attempts:
            return None
        wait = self.backoff(attempt, rng)
        if isinstance(error, RateLimitedError) and error.retry_after is not None:
            if error.retry_after > self.max_retry_after_s:
                return None
            wait = max(wait, error.retry_after)
        return wait


def retrying(
    op: Callable[[], T],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None] = time.sleep,
    rng: Callable[[], float] = random.random,
    on_retry: Callable[[ProviderError], None] | None = None,
) -> T:
    """Run ``op()``, retrying retryable provider errors per ``policy``.

    The one retry loop (with :func:`aretrying`, its async twin): calls, streams opened before
    their first event, and validators' calls all go through it. ``on_retry`` sees each error
    that is retried (a retried call may still have been billed).

    Raises:
        ProviderError: the last error, once it is not retryable or attempts are used up.
    """
    attempt = 0
    while True:
        try:
            return op()
        except ProviderError as exc:
            wait = policy.wait_before_retry(exc, attempt, rng)
            if wait is None:
                raise
            if on_retry is not None:
                on_retry(exc)
        sleep(wait)
        attempt += 1


async def aretrying(
    op: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    rng: Callable[[], float] = random.random,
    on_retry: Callable[[ProviderError], None] | None = None,
) -> T:
    """Async twin of :func:`retrying` (``sleep`` defaults to ``asyncio.sleep``)."""
    if sleep is None:
        import asyncio

        sleep = asyncio.sleep
    attempt = 0
    while True:
        try:
            return await op()
        except ProviderError as exc:
            wait = policy.wait_before_retry(exc, attempt, rng)
            if wait is None:
                raise
            if on_retry is not None:
                on_retry(exc)
        await sleep(wait)
        attempt += 1


def call_with_retries(
    provider: Provider,
    request: CompletionRequest,
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None] = time.sleep,
    rng: Callable[[], float] = random.random,
) -> Completion:
    """``provider.complete(request)`` through :func:`retrying`."""
    return retrying(lambda: provider.complete(request), policy, sleep=sleep, rng=rng)


async def acall_with_retries(
    provider: Provider,
    request: CompletionRequest,
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    rng: Callable[[], float] = random.random,
) -> Completion:
    """``provider.acomplete(request)`` through :func:`aretrying`."""
    return await aretrying(lambda: provider.acomplete(request), policy, sleep=sleep, rng=rng)


class CooldownTracker:
    """Counts consecutive failed calls per model and cools a model down after too many.

    After ``policy.cooldown_after`` consecutive failures a model is *cooling* for
    ``policy.cooldown_s``; a success resets its count. When the cooldown ends the model gets one
    trial call: another failure cools it down again at once (a half-open circuit breaker).
    Thread-safe.
    """

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, policy: RetryPolicy | None = None
    ) -> None:
        self.clock = clock
        self.policy = policy or RetryPolicy()
        self._failures: dict[str, int] = {}
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def record_failure(self, model: str) -> None:
        """Count a failed call (after its retries) of ``model``."""
        with self._lock:
            n = self._failures.get(model, 0) + 1
            self._failures[model] = n
            if n >= self.policy.cooldown_after:
                self._until[model] = self.clock() + self.policy.cooldown_s

    def record_success(self, model: str) -> None:
        """A call of ``model`` succeeded: it is healthy again."""
        with self._lock:
            self._failures.pop(model, None)
            self._until.pop(model, None)

    def cooling(self, model: str) -> bool:
        """Whether ``model`` is cooling down (skip it when anything else can serve)."""
        until = self._until.get(model)
        return until is not None and self.clock() < until

    def failures(self, model: str) -> int:
        """Consecutive failed calls of ``model`` so far."""
        return self._failures.get(model, 0)

    def remaining(self, model: str) -> float:
        """Seconds of cooldown left for ``model`` (0 when it is not cooling)."""
        until = self._until.get(model)
        return 0.0 if until is None else max(0.0, until - self.clock())
