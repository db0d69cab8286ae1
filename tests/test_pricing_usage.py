"""Provider usage → disjoint buckets: Anthropic, Anthropic streams, OpenAI chat and responses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tierwise.pricing import (
    Usage,
    merge_anthropic_stream_usage,
    usage_from_anthropic,
    usage_from_openai,
)

n = st.integers(min_value=0, max_value=10_000_000)


@given(n, n, n, n, n)
def test_anthropic_buckets_keep_every_input_token_once(
    inp: int, w5: int, w1: int, read: int, out: int
) -> None:
    u = usage_from_anthropic(
        {
            "input_tokens": inp,
            "cache_creation_input_tokens": w5 + w1,
            "cache_read_input_tokens": read,
            "cache_creation": {"ephemeral_5m_input_tokens": w5, "ephemeral_1h_input_tokens": w1},
            "output_tokens": out,
        }
    )
    assert u == Usage(inp, w5, w1, read, out)
    assert u.total_input_tokens == inp + w5 + w1 + read


def test_anthropic_write_total_beyond_the_breakdown_counts_as_5m() -> None:
    u = usage_from_anthropic(
        {
            "input_tokens": 1,
            "cache_creation_input_tokens": 100,
            "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 60},
            "output_tokens": 2,
        }
    )
    assert (u.cache_write_5m_tokens, u.cache_write_1h_tokens) == (40, 60)


def test_anthropic_nulls_count_as_zero() -> None:
    u = usage_from_anthropic(
        {
            "input_tokens": 5,
            "output_tokens": 7,
            "cache_creation_input_tokens": None,
            "cache_read_input_tokens": None,
            "cache_creation": None,
        }
    )
    assert u == Usage(input_tokens=5, output_tokens=7)


@pytest.mark.parametrize("bad", [-1, 1.5, "12", True])
def test_bad_counts_are_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match="input_tokens"):
        usage_from_anthropic({"input_tokens": bad, "output_tokens": 1})


def test_usage_that_is_not_a_mapping_is_rejected() -> None:
    with pytest.raises(TypeError, match="usage"):
        usage_from_openai(42)


@given(n, n, n, n, n, n)
def test_stream_delta_values_replace_never_add(
    s_in: int, s_read: int, s_out: int, d_in: int, d_read: int, d_out: int
) -> None:
    start = Usage(input_tokens=s_in, cache_read_tokens=s_read, output_tokens=s_out)
    merged = merge_anthropic_stream_usage(
        start, {"input_tokens": d_in, "cache_read_input_tokens": d_read, "output_tokens": d_out}
    )
    assert merged == Usage(input_tokens=d_in, cache_read_tokens=d_read, output_tokens=d_out)


@given(n, n, n, n, n)
def test_stream_delta_with_only_output_keeps_the_start(
    s_in: int, w5: int, w1: int, read: int, out: int
) -> None:
    start = Usage(s_in, w5, w1, read, 1)
    merged = merge_anthropic_stream_usage(start, {"output_tokens": out, "input_tokens": None})
    assert merged == Usage(s_in, w5, w1, read, out)


def test_stream_delta_cache_write_total_keeps_the_1h_share() -> None:
    start = Usage(cache_write_5m_tokens=100, cache_write_1h_tokens=300, output_tokens=1)
    merged = merge_anthropic_stream_usage(
        start, {"cache_creation_input_tokens": 500, "output_tokens": 9}
    )
    assert (merged.cache_write_5m_tokens, merged.cache_write_1h_tokens) == (200, 300)
    shrunk = merge_anthropic_stream_usage(start, {"cache_creation_input_tokens": 250})
    assert (shrunk.cache_write_5m_tokens, shrunk.cache_write_1h_tokens) == (0, 250)
    assert shrunk.output_tokens == 1


def test_stream_delta_breakdown_wins() -> None:
    start = Usage(cache_write_5m_tokens=100, output_tokens=1)
    merged = merge_anthropic_stream_usage(
        start,
        {
            "cache_creation_input_tokens": 100,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 100},
            "output_tokens": 3,
        },
    )
    assert (merged.cache_write_5m_tokens, merged.cache_write_1h_tokens) == (0, 100)


@given(st.integers(0, 10_000_000), st.data())
def test_openai_cached_tokens_are_taken_out_of_the_prompt(prompt: int, data: st.DataObject) -> None:
    cached = data.draw(st.integers(0, prompt))
    written = data.draw(st.integers(0, prompt - cached))
    reasoning = data.draw(st.integers(0, 1000))
    completion = reasoning + data.draw(st.integers(0, 1000))
    u = usage_from_openai(
        {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached, "cache_write_tokens": written},
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        }
    )
    assert u.total_input_tokens == prompt
    assert u == Usage(
        input_tokens=prompt - cached - written,
        cache_write_5m_tokens=written,
        cache_read_tokens=cached,
        output_tokens=completion,  # reasoning is inside completion_tokens, not added
    )


def test_openai_without_details_is_all_uncached() -> None:
    u = usage_from_openai({"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13})
    assert u == Usage(input_tokens=10, output_tokens=3)


def test_openai_compatible_deepseek_cache_hits() -> None:
    u = usage_from_openai(
        {
            "prompt_tokens": 100,
            "completion_tokens": 5,
            "prompt_cache_hit_tokens": 64,
            "prompt_cache_miss_tokens": 36,
        }
    )
    assert (u.input_tokens, u.cache_read_tokens) == (36, 64)


def test_openai_cached_beyond_prompt_is_an_error() -> None:
    with pytest.raises(ValueError, match="more than the 10 prompt_tokens"):
        usage_from_openai(
            {
                "prompt_tokens": 10,
                "completion_tokens": 1,
                "prompt_tokens_details": {"cached_tokens": 11},
            }
        )


def test_sdk_objects_are_accepted() -> None:
    from anthropic.types import Usage as AnthropicUsage
    from openai.types import CompletionUsage

    a = AnthropicUsage(input_tokens=3, output_tokens=4, cache_read_input_tokens=5)
    assert usage_from_anthropic(a) == Usage(input_tokens=3, cache_read_tokens=5, output_tokens=4)
    o = CompletionUsage.model_validate(
        {
            "prompt_tokens": 30,
            "completion_tokens": 4,
            "total_tokens": 34,
            "prompt_tokens_details": {"cached_tokens": 20},
        }
    )
    assert usage_from_openai(o) == Usage(input_tokens=10, cache_read_tokens=20, output_tokens=4)
