"""Gateway keys on the request path: who is calling, checked against the ledger, cached briefly.

A key arrives as ``x-api-key`` (the Anthropic SDK) or ``Authorization: Bearer`` (the OpenAI SDK).
The ledger stores only SHA-256 hashes and looks keys up by hash, so comparing a key costs the
same whatever it shares with a stored one; this cache is keyed by the hash too. While no key
exists in the ledger the gateway is open (and the CLI binds it to loopback only).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping

from tierwise.gateway.dialects import RequestError
from tierwise.ledger import ApiKey, Ledger

__all__ = ["KeyChecker", "secret_from_headers"]

_MAX_CACHE = 10_000


def secret_from_headers(headers: Mapping[str, str]) -> str | None:
    """The key a request carries (``x-api-key`` first, then ``Authorization: Bearer``)."""
    key = headers.get("x-api-key")
    if key:
        return key.strip()
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


class KeyChecker:
    """Authenticates requests against the ledger's gateway keys.

    ``ttl_s`` bounds how stale an answer may be: a new first key closes an open gateway, and a
    revoked key stops working, within that time.
    """

    def __init__(
        self, ledger: Ledger, *, ttl_s: float = 2.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ledger = ledger
        self.ttl_s = ttl_s
        self._clock = clock
        self._open: tuple[bool, float] | None = None
        self._keys: dict[bytes, tuple[ApiKey | None, float]] = {}

    def has_keys(self) -> bool:
        """Whether any active key exists (cached for ``ttl_s``)."""
        now = self._clock()
        if self._open is None or self._open[1] <= now:
            self._open = (self.ledger.has_api_keys(), now + self.ttl_s)
        return self._open[0]

    def authenticate(self, headers: Mapping[str, str]) -> ApiKey | None:
        """The caller's key; ``None`` when the gateway has no keys (open on loopback).

        Raises:
            RequestError: 401 — keys exist and the request carries none, or a wrong one.
        """
        if not self.has_keys():
            return None
        secret = secret_from_headers(headers)
        if not secret:
            raise RequestError(
                "this gateway requires a key: send it as x-api-key or Authorization: Bearer",
                status=401,
            )
        digest = hashlib.sha256(secret.encode()).digest()
        now = self._clock()
        cached = self._keys.get(digest)
        if cached is None or cached[1] <= now:
            if len(self._keys) >= _MAX_CACHE:
                self._keys.clear()
            cached = (self.ledger.verify_api_key(secret), now + self.ttl_s)
            self._keys[digest] = cached
        key = cached[0]
        if key is None:
            raise RequestError("invalid gateway key (unknown or revoked)", status=401)
        return key
