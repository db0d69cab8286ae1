"""Token usage normalised into disjoint buckets, from either provider's usage shape.

Anthropic reports ``input_tokens`` *excluding* cache reads and writes; OpenAI reports
``prompt_tokens`` *including* ``prompt_tokens_details.cached_tokens``. Both are mapped here into
buckets that never overlap, so that pricing is a plain sum of bucket × price.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The record lives on the ground layer (tierwise.records); re-exported here for callers.
from tierwise.records import Usage as Usage

# -- provider usage shapes -------------------------------------------------------------------------


def _as_mapping(usage: object) -> Mapping[str, Any]:
    """A usage payload as a mapping: dicts as they are, SDK pydantic objects via model_dump()."""
    if usage is None:
        return {}
    if isinstance(usage, Mapping):
        return usage
    dump = getattr(usage, "model_dump", None)
    if callable(dump):
        dumped = dump()
        if isinstance(dumped, Mapping):
            return dumped
    raise TypeError(f"expected a usage mapping or SDK usage object, got {type(usage).__name__}")


def _count(data: Mapping[str, Any], key: str) -> int | None:
    """A token count from a usage payload; ``None`` when absent or null."""
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"usage field {key!r} must be a non-negative integer, got {value!r}")
    return value


def _split_writes(total: int | None, breakdown: object) -> tuple[int, int] | None:
    """(5-minute, 1-hour) cache writes from Anthropic's total and its optional TTL breakdown.

    With a breakdown, its two counts are used, and any part of the total it does not cover is
    counted as 5-minute writes (the default TTL). Without one, the whole total is 5-minute.
    ``None`` when neither is reported.
    """
    if breakdown is not None:
        parts = _as_mapping(breakdown)
        w5 = _count(parts, "ephemeral_5m_input_tokens") or 0
        w1 = _count(parts, "ephemeral_1h_input_tokens") or 0
        if total is not None and total > w5 + w1:
            w5 += total - (w5 + w1)
        return w5, w1
    if total is None:
        return None
    return total, 0


def usage_from_anthropic(usage: object) -> Usage:
    """Normalise Anthropic Messages usage (a dict or the SDK's ``Usage``) into buckets.

    Anthropic's ``input_tokens`` already *excludes* cache reads and writes, so it is the
    uncached bucket as is. ``cache_read_input_tokens`` is the cache-read bucket.
    ``cache_creation_input_tokens`` is split by the ``cache_creation`` breakdown
    (``ephemeral_5m_input_tokens`` / ``ephemeral_1h_input_tokens``) when present, else counted
    as 5-minute writes. ``output_tokens`` includes thinking tokens. Null fields count as zero;
    server-tool counts (web searches) are not token usage and are ignored.

    Raises:
        ValueError: a count is negative or not an integer.
        TypeError: *usage* is neither a mapping nor an SDK object.
    """
    data = _as_mapping(usage)
    writes = _split_writes(_count(data, "cache_creation_input_tokens"), data.get("cache_creation"))
    w5, w1 = writes or (0, 0)
    return Usage(
        input_tokens=_count(data, "input_tokens") or 0,
        cache_write_5m_tokens=w5,
        cache_write_1h_tokens=w1,
        cache_read_tokens=_count(data, "cache_read_input_tokens") or 0,
        output_tokens=_count(data, "output_tokens") or 0,
    )


def merge_anthropic_stream_usage(start: Usage, delta: object) -> Usage:
    """The final usage of an Anthropic stream: ``message_start`` usage updated by ``message_delta``.

    *start* is ``usage_from_anthropic(message_start.message.usage)``; *delta* is the
    ``message_delta`` event's ``usage`` (dict or SDK ``MessageDeltaUsage``). The delta's counts
    are cumulative for the whole message, so a non-null delta field *replaces* the start's
    value, never adds to it:

    * ``output_tokens`` ← delta's when non-null (it always is on the wire), else start's;
    * ``input_tokens`` and ``cache_read_input_tokens`` ← delta's when non-null, else start's;
    * cache writes: a non-null ``cache_creation`` breakdown in the delta is used as in
      :func:`usage_from_anthropic`; else a non-null ``cache_creation_input_tokens`` total
      replaces the start's total, keeping the start's 1-hour count (capped at the new total)
      and counting the rest as 5-minute writes; else the start's writes stand.

    Apply it to each ``message_delta`` in turn if a stream carries several.
    """
    data = _as_mapping(delta)
    total = _count(data, "cache_creation_input_tokens")
    breakdown = data.get("cache_creation")
    if breakdown is not None:
        w5, w1 = _split_writes(total, breakdown) or (0, 0)
    elif total is not None:
        w1 = min(start.cache_write_1h_tokens, total)
        w5 = total - w1
    else:
        w5, w1 = start.cache_write_5m_tokens, start.cache_write_1h_tokens

    def latest(key: str, before: int) -> int:
        value = _count(data, key)
        return before if value is None else value

    return Usage(
        input_tokens=latest("input_tokens", start.input_tokens),
        cache_write_5m_tokens=w5,
        cache_write_1h_tokens=w1,
        cache_read_tokens=latest("cache_read_input_tokens", start.cache_read_tokens),
        output_tokens=latest("output_tokens", start.output_tokens),
    )


def usage_from_openai(usage: object) -> Usage:
    """Normalise OpenAI-shaped usage (a dict or the SDK's usage object) into buckets.

    Chat Completions: ``prompt_tokens`` *includes* ``prompt_tokens_details.cached_tokens``, so
    uncached input = prompt − cached; ``prompt_tokens_details.cache_write_tokens``, when an
    OpenAI-compatible upstream reports it, is taken out of the uncached part into the 5-minute
    write bucket (OpenAI's own models have no cache-write price, so the catalog bills those at
    the input price and the total is unchanged). ``completion_tokens`` already *includes*
    ``completion_tokens_details.reasoning_tokens`` and is the output bucket as is. DeepSeek-style
    ``prompt_cache_hit_tokens`` is read as the cached count when no details are given.
    The Responses API shape (``input_tokens`` including ``input_tokens_details.cached_tokens``,
    ``output_tokens`` including reasoning) is accepted too.

    Raises:
        ValueError: counts are negative, not integers, or the cached part exceeds the prompt.
        TypeError: *usage* is neither a mapping nor an SDK object.
    """
    data = _as_mapping(usage)
    if "prompt_tokens" in data or "completion_tokens" in data:
        prompt_key, output_key, details_key = (
            "prompt_tokens",
            "completion_tokens",
            "prompt_tokens_details",
        )
    else:
        prompt_key, output_key, details_key = (
            "input_tokens",
            "output_tokens",
            "input_tokens_details",
        )
    prompt = _count(data, prompt_key) or 0
    details = _as_mapping(data.get(details_key))
    cached = _count(details, "cached_tokens")
    if cached is None:
        cached = _count(data, "prompt_cache_hit_tokens")
    cached = cached or 0
    written = _count(details, "cache_write_tokens") or 0
    if cached + written > prompt:
        raise ValueError(
            f"usage reports {cached} cached and {written} cache-write tokens, more than the "
            f"{prompt} {prompt_key} that include them"
        )
    return Usage(
        input_tokens=prompt - cached - written,
        cache_write_5m_tokens=written,
        cache_read_tokens=cached,
        output_tokens=_count(data, output_key) or 0,
    )
