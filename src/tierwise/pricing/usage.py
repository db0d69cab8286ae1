"""Token usage normalised into disjoint buckets, from either provider's usage shape.

Anthropic reports ``input_tokens`` *excluding* cache reads and writes; OpenAI reports
``prompt_tokens`` *including* ``prompt_tokens_details.cached_tokens``. Both are mapped here into
buckets that never overlap, so that pricing is a plain sum of bucket × price.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True, slots=True)
class Usage:
    """Disjoint token buckets of one call (or a sum of calls)."""

    input_tokens: int = 0  # uncached input only
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    cache_read_tokens: int = 0
    output_tokens: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"usage bucket {f.name} must be a non-negative int, got {value!r}")

    def __add__(self, other: Usage) -> Usage:
        return Usage(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    @property
    def total_input_tokens(self) -> int:
        """Every input token, cached or not."""
        return (
            self.input_tokens
            + self.cache_write_5m_tokens
            + self.cache_write_1h_tokens
            + self.cache_read_tokens
        )

    @property
    def total_tokens(self) -> int:
        return self.total_input_tokens + self.output_tokens

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
