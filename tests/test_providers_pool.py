"""ProviderPool: providers per tier, alternates in order, shared instances, keys from env."""

from __future__ import annotations

import pytest

from tierwise.cascade import Cascade
from tierwise.errors import AuthenticationError
from tierwise.policy import Policy
from tierwise.providers.anthropic import AnthropicProvider
from tierwise.providers.base import CompletionRequest
from tierwise.providers.factory import ProviderPool
from tierwise.providers.openai import OpenAIProvider
from tierwise.providers.retry import RetryPolicy, call_with_retries
from tierwise.task import Message, Task
from tierwise.testing import FakeUpstream, Fault, ModelScript, upstream_policy

SECRET = "sk-pool-secret-value-987654321"
REQ = CompletionRequest(model="", messages=(Message("user", "hello"),), max_tokens=16, timeout_s=5)

ALTERNATES = """
[prices."haiku-alt-1"]
input = 1
output = 5
[prices."gpt-alt"]
input = 1
output = 5
"""


def policy_with_alternates(up: FakeUpstream) -> Policy:
    text = f"""
version = 1

[[tiers]]
name = "cheap"
provider = "anthropic"
model = "claude-haiku-4-5"
base_url = "{up.base_url}"
api_key_env = "CHEAP_KEY"
alternates = [
    "haiku-alt-1",
    {{ model = "gpt-alt", provider = "openai", base_url = "{up.openai_base_url}" }},
]

[[tiers]]
name = "strong"
provider = "anthropic"
model = "claude-opus-4-6"
base_url = "{up.base_url}"
api_key_env = "CHEAP_KEY"
timeout_s = 2
"""
    from tierwise.policy import loads_policy

    return loads_policy(text + ALTERNATES)


def test_primary_then_alternates_in_policy_order(fake_upstream: FakeUpstream) -> None:
    with ProviderPool(policy_with_alternates(fake_upstream), env={"CHEAP_KEY": "k"}) as pool:
        pairs = pool.for_tier("cheap")
        assert [m for m, _ in pairs] == ["claude-haiku-4-5", "haiku-alt-1", "gpt-alt"]
        assert [p.name for _, p in pairs] == ["anthropic", "anthropic", "openai"]


def test_one_instance_per_upstream_and_key_variable(fake_upstream: FakeUpstream) -> None:
    with ProviderPool(policy_with_alternates(fake_upstream), env={"CHEAP_KEY": "k"}) as pool:
        cheap = pool.for_tier("cheap")
        strong = pool.for_tier("strong")
        assert cheap[0][1] is cheap[1][1], "same provider, URL and key variable"
        assert strong[0][1] is cheap[0][1], "tiers share an upstream's provider"
        assert cheap[2][1] is not cheap[0][1]
        assert len(pool.instances) == 2
        assert pool.for_tier("cheap")[0][1] is cheap[0][1], "reused across calls"


def test_alternate_on_another_provider_uses_that_providers_default_key(
    fake_upstream: FakeUpstream,
) -> None:
    env = {"CHEAP_KEY": "anthropic-key", "OPENAI_API_KEY": "openai-key"}
    with ProviderPool(policy_with_alternates(fake_upstream), env=env) as pool:
        gpt = pool.for_tier("cheap")[2][1]
        assert isinstance(gpt, OpenAIProvider)
        assert gpt.api_key_env == "OPENAI_API_KEY"
        assert gpt.base_url == fake_upstream.openai_base_url
        haiku = pool.for_tier("cheap")[0][1]
        assert isinstance(haiku, AnthropicProvider)
        assert haiku.api_key_env == "CHEAP_KEY"


def test_keys_come_from_env_and_reach_the_upstream(fake_upstream: FakeUpstream) -> None:
    fake_upstream.require_key = SECRET
    try:
        with ProviderPool(policy_with_alternates(fake_upstream), env={"CHEAP_KEY": SECRET}) as pool:
            model, provider = pool.for_tier("cheap")[0]
            done = provider.complete(CompletionRequest(model=model, messages=REQ.messages))
    finally:
        fake_upstream.require_key = None
    assert done.text == "hello"


def test_missing_key_fails_at_call_time_naming_the_variable(fake_upstream: FakeUpstream) -> None:
    pool = ProviderPool(policy_with_alternates(fake_upstream), env={"UNRELATED": SECRET})
    model, provider = pool.for_tier("cheap")[0]  # construction does not fail
    with pytest.raises(AuthenticationError) as caught:
        provider.complete(CompletionRequest(model=model, messages=REQ.messages))
    assert "CHEAP_KEY" in str(caught.value)
    assert SECRET not in str(caught.value)
    assert fake_upstream.requests == []
    pool.close()


def test_missing_key_in_a_cascade_names_the_variable_in_the_trail(
    fake_upstream: FakeUpstream,
) -> None:
    from tierwise.errors import EscalationExhaustedError

    policy = upstream_policy(fake_upstream, api_key_env="NOT_SET_ANYWHERE")
    with Cascade(policy, env={}) as cascade, pytest.raises(EscalationExhaustedError) as caught:
        cascade.run(Task.create("classify", "hello"))
    failures = [a.failure or "" for a in caught.value.attempts]
    assert failures and all("NOT_SET_ANYWHERE" in f for f in failures)
    assert {a.error_class for a in caught.value.attempts} == {"AuthenticationError"}


def test_unknown_tier_is_an_error(fake_upstream: FakeUpstream) -> None:
    with (
        ProviderPool(policy_with_alternates(fake_upstream), env={}) as pool,
        pytest.raises(KeyError),
    ):
        pool.for_tier("nope")


def test_cascade_falls_over_to_the_alternate_when_the_primary_keeps_failing(
    fake_upstream: FakeUpstream,
) -> None:
    fake_upstream.set_script("claude-haiku-4-5", ModelScript(faults=(Fault("529", always=True),)))
    fake_upstream.set_script("haiku-alt-1", ModelScript(reply="from the alternate"))
    slept: list[float] = []
    with Cascade(
        policy_with_alternates(fake_upstream), env={"CHEAP_KEY": "k"}, sleep=slept.append
    ) as cascade:
        result = cascade.run(Task.create("classify", "hello"), start_tier="cheap")
    assert result.output == "from the alternate"
    assert result.model == "haiku-alt-1"
    assert [(a.model, a.outcome) for a in result.attempts] == [
        ("claude-haiku-4-5", "error"),
        ("haiku-alt-1", "accepted"),
    ]
    assert len(fake_upstream.requests_for("claude-haiku-4-5")) == 3, "retried before failing over"


def test_pool_providers_retry_through_call_with_retries(fake_upstream: FakeUpstream) -> None:
    fake_upstream.add_faults("claude-opus-4-6", "500")
    with ProviderPool(policy_with_alternates(fake_upstream), env={"CHEAP_KEY": "k"}) as pool:
        model, provider = pool.for_tier("strong")[0]
        request = CompletionRequest(model=model, messages=REQ.messages, max_tokens=16)
        done = call_with_retries(provider, request, RetryPolicy(backoff_s=0), sleep=lambda _: None)
    assert done.model == "claude-opus-4-6"


async def test_pool_closes_async_clients(fake_upstream: FakeUpstream) -> None:
    pool = ProviderPool(policy_with_alternates(fake_upstream), env={"CHEAP_KEY": "k"})
    model, provider = pool.for_tier("cheap")[0]
    done = await provider.acomplete(CompletionRequest(model=model, messages=REQ.messages))
    assert done.text == "hello"
    await pool.aclose()
    assert pool.instances == ()
