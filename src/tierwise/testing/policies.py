"""Policies whose tiers point at a fake upstream, for tests and demos."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from tierwise.policy import Policy
    from tierwise.testing.server import FakeUpstream

#: The ladder of the default policy, bottom to top.
DEFAULT_MODELS: tuple[tuple[str, str], ...] = (
    ("cheap", "claude-haiku-4-5"),
    ("mid", "claude-sonnet-4-6"),
    ("strong", "claude-opus-4-6"),
)
#: The key variable upstream policies name; any value works against the fake.
TEST_KEY_ENV = "TIERWISE_TEST_KEY"


def upstream_policy_text(
    upstream: FakeUpstream | str,
    *,
    provider: Literal["anthropic", "openai"] = "anthropic",
    tiers: Sequence[tuple[str, str]] = DEFAULT_MODELS,
    api_key_env: str = TEST_KEY_ENV,
    timeout_s: float = 10.0,
    extra: str = "",
) -> str:
    """The TOML of a policy whose tiers are served by ``upstream`` (a server or its base URL).

    Retries do not wait (``backoff_s = 0``), so fault tests stay fast. ``extra`` is appended
    verbatim (rules, kinds, validators, prices for made-up model names …).
    """
    if isinstance(upstream, str):
        base = upstream.rstrip("/")
        url = f"{base}/v1" if provider == "openai" and not base.endswith("/v1") else base
    else:
        url = upstream.url_for(provider)
    lines = ["version = 1", ""]
    for name, model in tiers:
        lines += [
            "[[tiers]]",
            f'name = "{name}"',
            f'provider = "{provider}"',
            f'model = "{model}"',
            f'base_url = "{url}"',
            f'api_key_env = "{api_key_env}"',
            f"timeout_s = {timeout_s}",
            "",
        ]
    lines += ["[retry]", "attempts = 3", "backoff_s = 0.0", "max_backoff_s = 0.0", ""]
    return "\n".join(lines) + extra


def upstream_policy(upstream: FakeUpstream | str, **kw: object) -> Policy:
    """:func:`upstream_policy_text` loaded as a :class:`~tierwise.policy.Policy`."""
    from tierwise.policy import loads_policy

    return loads_policy(upstream_policy_text(upstream, **kw))  # type: ignore[arg-type]


def served_by(policy: Policy, upstream: FakeUpstream, *, api_key_env: str = TEST_KEY_ENV) -> Policy:
    """A copy of *policy* (rules, kinds, validators unchanged) whose tiers all talk to *upstream*.

    Every tier's ``base_url`` points at the fake server for its provider and its key is read from
    *api_key_env*. Alternates on the tier's provider follow, since they inherit both.
    """
    from tierwise.policy import Policy as _Policy

    tiers = [
        t.model_copy(update={"base_url": upstream.url_for(t.provider), "api_key_env": api_key_env})
        for t in policy.model.tiers
    ]
    return _Policy(policy.model.model_copy(update={"tiers": tiers}), base_dir=policy.base_dir)
