"""Providers for a policy's tiers: one SDK provider per upstream, shared by the tiers using it."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

from tierwise.providers.base import Provider

if TYPE_CHECKING:
    from tierwise.policy.schema import Tier
    from tierwise.providers._sdk import SDKProvider

#: The key variable a provider reads when the policy names none.
DEFAULT_KEY_ENV: Mapping[str, str] = {
    "anthropic": "ANTHROPIC_API_KEY",
    "openai": "OPENAI_API_KEY",
}


class _HasTiers(Protocol):
    def tier(self, name: str) -> Tier: ...


class ProviderPool:
    """The providers behind a policy's tiers, built on first use and reused.

    One provider instance exists per (provider, base_url, key variable), so tiers and alternates
    on the same upstream share its connections. The key is read from ``env`` when the instance
    is built; a missing key does not fail here but on the first call, with an
    :class:`~tierwise.errors.AuthenticationError` that names the variable (never a value).

    Args:
        policy: anything with ``tier(name) -> Tier`` (a :class:`tierwise.policy.Policy`).
        env: where keys are read from (``os.environ`` in production, a dict in tests).
    """

    def __init__(self, policy: _HasTiers, env: Mapping[str, str]) -> None:
        self.policy = policy
        self.env = env
        self._providers: dict[tuple[str, str | None, str], SDKProvider[object, object]] = {}
        self._tiers: dict[str, list[tuple[str, Provider]]] = {}
        self._lock = threading.Lock()

    def for_tier(self, tier_name: str) -> list[tuple[str, Provider]]:
        """(model, provider) pairs serving a tier: the primary first, then its alternates.

        An alternate without its own ``provider`` uses the tier's; without ``base_url`` or
        ``api_key_env`` it uses the tier's when on the same provider, else that provider's
        defaults.
        """
        cached = self._tiers.get(tier_name)
        if cached is not None:
            return list(cached)
        tier = self.policy.tier(tier_name)
        out: list[tuple[str, Provider]] = [
            (tier.model, self.provider(tier.provider, tier.base_url, tier.api_key_env, tier))
        ]
        for alt in tier.alternate_specs():
            kind = alt.provider or tier.provider
            same = kind == tier.provider
            base_url = (
                alt.base_url if alt.base_url is not None else (tier.base_url if same else None)
            )
            key_env = alt.api_key_env or (tier.api_key_env if same else None)
            out.append((alt.model, self.provider(kind, base_url, key_env, tier)))
        with self._lock:
            self._tiers[tier_name] = out
        return list(out)

    def provider(
        self,
        kind: str,
        base_url: str | None = None,
        api_key_env: str | None = None,
        tier: Tier | None = None,
    ) -> Provider:
        """The shared provider instance for one upstream (``kind``: anthropic or openai)."""
        env_name = api_key_env or DEFAULT_KEY_ENV.get(kind)
        if env_name is None:
            raise ValueError(f"unknown provider {kind!r}; expected anthropic or openai")
        key = (kind, base_url, env_name)
        with self._lock:
            found = self._providers.get(key)
            if found is None:
                found = self._providers[key] = self._build(kind, base_url, env_name, tier)
        return found  # type: ignore[return-value]

    def _build(
        self, kind: str, base_url: str | None, env_name: str, tier: Tier | None
    ) -> SDKProvider[object, object]:
        api_key = self.env.get(env_name) or None
        timeout = tier.timeout_s if tier is not None else 60.0
        if kind == "anthropic":
            from tierwise.providers.anthropic import AnthropicProvider

            return AnthropicProvider(  # type: ignore[return-value]
                base_url=base_url, api_key=api_key, api_key_env=env_name, timeout_s=timeout
            )
        if kind == "openai":
            from tierwise.providers.openai import OpenAIProvider

            return OpenAIProvider(  # type: ignore[return-value]
                base_url=base_url, api_key=api_key, api_key_env=env_name, timeout_s=timeout
            )
        raise ValueError(f"unknown provider {kind!r}; expected anthropic or openai")

    @property
    def instances(self) -> tuple[Provider, ...]:
        """Every provider built so far."""
        with self._lock:
            return tuple(self._providers.values())  # type: ignore[arg-type]

    def close(self) -> None:
        """Close every provider's clients."""
        with self._lock:
            providers = list(self._providers.values())
            self._providers.clear()
            self._tiers.clear()
        for p in providers:
            p.close()

    async def aclose(self) -> None:
        """Close every provider, awaiting the async clients of the running loop."""
        with self._lock:
            providers = list(self._providers.values())
            self._providers.clear()
            self._tiers.clear()
        for p in providers:
            await p.aclose()

    def __enter__(self) -> ProviderPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
