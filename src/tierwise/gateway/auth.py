"""Gateway keys on the request path: who is calling, checked against the ledger, cached briefly.

A key arrives as ``x-api-key`` (the Anthropic SDK) or ``Authorization: Bearer`` (the OpenAI SDK).
The ledger stores only SHA-256 hashes and looks keys up by hash, so comparing a key costs the
same whatever it shares with a stored one; this cache is keyed by the hash too.

Roles: a ``client`` key may call the model endpoints (``/v1/messages``,
``/v1/chat/completions``, ``/v1/models``); an ``admin`` key may also call everything under
``/v1/tierwise/admin/`` and, on a gateway served off loopback, ``/metrics``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping

from tierwise.errors import LedgerUnavailableError
from tierwise.gateway.dialects import RequestError
from tierwise.gateway.errors import ledger_unavailable
from tierwise.ledger import ApiKey, Ledger
from tierwise.ledger.keys import SECRET_PREFIX

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

    Whether a key is required is decided once, when the gateway starts (``anonymous``), never
    by how many keys exist at the moment: revoking the last key of a gateway that required
    keys does not open it. An anonymous gateway (on loopback with no keys at start, or started
    with ``--allow-anonymous``) serves requests without a key — and with the placeholder keys
    SDK clients insist on (``"unused"``, ``"sk-..."``) — but a tierwise key (``tw_...``) is
    checked on every gateway: an unknown or revoked one is a 401. ``ttl_s`` bounds how stale a
    cached answer may be: a revoked key stops working within that time.
    """

    def __init__(
        self,
        ledger: Ledger,
        *,
        anonymous: bool = False,
        ttl_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ledger = ledger
        self.anonymous = anonymous
        self.ttl_s = ttl_s
        self._clock = clock
        self._keys: dict[bytes, tuple[ApiKey | None, float]] = {}

    def authenticate(self, headers: Mapping[str, str]) -> ApiKey | None:
        """The caller's key; ``None`` for a keyless request to an anonymous gateway.

        Raises:
            RequestError: 401 — a key is required and missing, or the key is unknown or revoked;
                503 — the key is not cached and the ledger's database cannot be reached.
        """
        secret = secret_from_headers(headers)
        if not secret or (self.anonymous and not secret.startswith(SECRET_PREFIX)):
            if self.anonymous:
                return None
            raise RequestError(
                "this gateway requires a key: send it as x-api-key or Authorization: Bearer",
                status=401,
            )
        digest = hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()
        now = self._clock()
        cached = self._keys.get(digest)
        if cached is None or cached[1] <= now:
            if len(self._keys) >= _MAX_CACHE:
                self._keys.clear()
            try:
                cached = (self.ledger.verify_api_key(secret), now + self.ttl_s)
            except LedgerUnavailableError:
                raise ledger_unavailable() from None
            self._keys[digest] = cached
        key = cached[0]
        if key is None:
            raise RequestError("invalid gateway key (unknown or revoked)", status=401)
        return key

    def authorize_admin(self, headers: Mapping[str, str]) -> ApiKey | None:
        """The caller's admin key (``None`` on an anonymous gateway asked without a key).

        Raises:
            RequestError: 401 as :meth:`authenticate`; 403 — the key is not an admin key.
        """
        key = self.authenticate(headers)
        if key is not None and key.role != "admin":
            raise RequestError(
                f"key {key.name!r} has the role {key.role!r}; this route needs an admin key "
                "(tierwise keys create --role admin)",
                status=403,
            )
        return key
