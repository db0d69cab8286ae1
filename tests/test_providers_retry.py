"""Retries with jittered backoff and retry-after, and cooldown of failing models."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tierwise.errors import (
    AuthenticationError,
    BadRequestError,
    ProviderError,
    RateLimitedError,
    ServerError,
)
from tierwise.policy.schema import Retry
from tierwise.providers.anthropic import AnthropicProvider
from tierwise.providers.base import CompletionRequest
from tierwise.providers.openai import OpenAIProvider
from tierwise.providers.retry import (
    CooldownTracker,
    RetryPolicy,
    acall_with_retries,
    call_with_retries,
)
from tierwise.task import Message
from tierwise.testing import FakeClock, FakeUpstream, Fault, ModelScript

REQ = CompletionRequest(model="m", messages=(Message("user", "ping"),), max_tokens=20, timeout_s=5)


@pytest.fixture(params=["anthropic", "openai"])
def provider(
    request: pytest.FixtureRequest, fake_upstream: FakeUpstream
) -> Iterator[AnthropicProvider | OpenAIProvider]:
    p: AnthropicProvider | OpenAIProvider
    if request.param == "anthropic":
        p = AnthropicProvider(base_url=fake_upstream.base_url, api_key="t")
    else:
        p = OpenAIProvider(base_url=fake_upstream.openai_base_url, api_key="t")
    yield p
    p.close()


def test_policy_from_the_policy_file_table() -> None:
    retry = Retry(attempts=5, backoff_s=0.25, max_backoff_s=4, cooldown_s=30, cooldown_after=2)
    assert RetryPolicy.from_policy(retry) == RetryPolicy(
        attempts=5, backoff_s=0.25, max_backoff_s=4, cooldown_s=30, cooldown_after=2
    )


def test_429_is_retried_after_at_least_the_retry_after(
    fake_upstream: FakeUpstream, provider: AnthropicProvider | OpenAIProvider
) -> None:
    fake_upstream.add_faults("m", Fault("429", retry_after=3))
    clock = FakeClock()
    policy = RetryPolicy(attempts=3, backoff_s=0.1, max_backoff_s=1)
    done = call_with_retries(provider, REQ, policy, sleep=clock.sleep, rng=lambda: 0.5)
    assert done.text == "ping"
    assert clock.slept == [3.0]
    assert [r.fault for r in fake_upstream.requests_for("m")] == ["429", None]


def test_http_date_retry_after_is_honoured(
    fake_upstream: FakeUpstream, provider: AnthropicProvider | OpenAIProvider
) -> None:
    from datetime import UTC, datetime, timedelta
    from email.utils import format_datetime

    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    fake_upstream.add_faults("m", Fault("429", retry_after=when))
    clock = FakeClock()
    call_with_retries(provider, REQ, RetryPolicy(max_backoff_s=1), sleep=clock.sleep)
    [wait] = clock.slept
    assert 25 <= wait <= 31


def test_500_then_success(
    fake_upstream: FakeUpstream, provider: AnthropicProvider | OpenAIProvider
) -> None:
    fake_upstream.add_faults("m", "500", "529")
    clock = FakeClock()
    policy = RetryPolicy(attempts=3, backoff_s=1, max_backoff_s=10)
    done = call_with_retries(provider, REQ, policy, sleep=clock.sleep, rng=lambda: 1.0)
    assert done.text == "ping"
    assert clock.slept == [1.0, 2.0], "full-jitter ceiling doubles: 1 s then 2 s"


def test_last_error_is_raised_when_attempts_are_used_up(
    fake_upstream: FakeUpstream, provider: AnthropicProvider | OpenAIProvider
) -> None:
    fake_upstream.set_script("m", ModelScript(faults=(Fault("529", always=True),)))
    clock = FakeClock()
    with pytest.raises(ServerError):
        call_with_retries(provider, REQ, RetryPolicy(attempts=4), sleep=clock.sleep)
    assert len(fake_upstream.requests_for("m")) == 4
    assert len(clock.slept) == 3


def test_malformed_and_cut_replies_are_retried(
    fake_upstream: FakeUpstream, provider: AnthropicProvider | OpenAIProvider
) -> None:
    fake_upstream.add_faults("m", "malformed", "cut")
    done = call_with_retries(provider, REQ, RetryPolicy(attempts=3), sleep=FakeClock().sleep)
    assert done.text == "ping"


def test_non_retryable_errors_are_raised_at_once(fake_upstream: FakeUpstream) -> None:
    provider = AnthropicProvider(base_url=fake_upstream.base_url, api_key=None, api_key_env="K")
    clock = FakeClock()
    with pytest.raises(AuthenticationError):
        call_with_retries(provider, REQ, RetryPolicy(attempts=5), sleep=clock.sleep)
    assert clock.slept == []
    provider.close()


def test_retry_after_beyond_the_limit_is_not_waited_for(
    fake_upstream: FakeUpstream, provider: AnthropicProvider | OpenAIProvider
) -> None:
    fake_upstream.add_faults("m", Fault("429", retry_after=3600))
    clock = FakeClock()
    with pytest.raises(RateLimitedError) as caught:
        call_with_retries(provider, REQ, RetryPolicy(attempts=3), sleep=clock.sleep)
    assert caught.value.retry_after == 3600
    assert clock.slept == []


async def test_async_retries_honour_retry_after(fake_upstream: FakeUpstream) -> None:
    provider = OpenAIProvider(base_url=fake_upstream.openai_base_url, api_key="t")
    fake_upstream.add_faults("m", Fault("429", retry_after=2), "500")
    clock = FakeClock()
    try:
        done = await acall_with_retries(
            provider, REQ, RetryPolicy(backoff_s=0.5), sleep=clock.asleep, rng=lambda: 0.0
        )
    finally:
        await provider.aclose()
    assert done.text == "ping"
    assert clock.slept == [2.0, 0.0]


async def test_async_retries_give_up_with_the_last_error(fake_upstream: FakeUpstream) -> None:
    provider = AnthropicProvider(base_url=fake_upstream.base_url, api_key="t")
    fake_upstream.set_script("m", ModelScript(faults=(Fault("500", always=True),)))
    clock = FakeClock()
    try:
        with pytest.raises(ServerError):
            await acall_with_retries(provider, REQ, RetryPolicy(attempts=2), sleep=clock.asleep)
    finally:
        await provider.aclose()
    assert len(clock.slept) == 1


@given(
    attempt=st.integers(min_value=0, max_value=60),
    base=st.floats(min_value=0, max_value=10),
    cap=st.floats(min_value=0, max_value=100),
    r=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_backoff_stays_within_the_full_jitter_window(
    attempt: int, base: float, cap: float, r: float
) -> None:
    policy = RetryPolicy(backoff_s=base, max_backoff_s=cap)
    wait = policy.backoff(attempt, rng=lambda: r)
    assert 0 <= wait <= min(cap, base * 2**attempt)


@given(
    retry_after=st.floats(min_value=0, max_value=60),
    r=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_rate_limit_wait_is_never_shorter_than_retry_after(retry_after: float, r: float) -> None:
    policy = RetryPolicy(attempts=3, backoff_s=0.5, max_backoff_s=20)
    err = RateLimitedError("429", retry_after=retry_after)
    wait = policy.wait_before_retry(err, 0, rng=lambda: r)
    assert wait is not None and wait >= retry_after


def test_wait_is_none_for_non_retryable_and_last_attempts() -> None:
    policy = RetryPolicy(attempts=2)
    assert policy.wait_before_retry(BadRequestError("400"), 0) is None
    assert policy.wait_before_retry(ServerError("500"), 1) is None
    assert policy.wait_before_retry(ServerError("500"), 0) is not None
    assert ProviderError.retryable is False


def test_invalid_retry_policy_is_rejected() -> None:
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError, match="negative"):
        RetryPolicy(backoff_s=-1)


def test_cooldown_after_consecutive_failures(fake_clock: FakeClock) -> None:
    tracker = CooldownTracker(clock=fake_clock, policy=RetryPolicy(cooldown_after=3, cooldown_s=60))
    tracker.record_failure("m")
    tracker.record_failure("m")
    assert not tracker.cooling("m")
    tracker.record_failure("m")
    assert tracker.cooling("m")
    assert tracker.remaining("m") == 60
    assert not tracker.cooling("other")
    fake_clock.advance(59.9)
    assert tracker.cooling("m")
    fake_clock.advance(0.1)
    assert not tracker.cooling("m"), "the cooldown is over after cooldown_s"


def test_a_success_resets_the_count(fake_clock: FakeClock) -> None:
    tracker = CooldownTracker(clock=fake_clock, policy=RetryPolicy(cooldown_after=2))
    tracker.record_failure("m")
    tracker.record_success("m")
    tracker.record_failure("m")
    assert not tracker.cooling("m")
    assert tracker.failures("m") == 1


def test_a_failed_trial_after_cooldown_cools_again_at_once(fake_clock: FakeClock) -> None:
    tracker = CooldownTracker(clock=fake_clock, policy=RetryPolicy(cooldown_after=2, cooldown_s=10))
    tracker.record_failure("m")
    tracker.record_failure("m")
    fake_clock.advance(10)
    assert not tracker.cooling("m")
    tracker.record_failure("m")  # the trial call failed
    assert tracker.cooling("m")
    fake_clock.advance(10)
    tracker.record_success("m")
    tracker.record_failure("m")
    assert not tracker.cooling("m")
