"""Rates with a Wilson score interval.

A kind that escalated 3 tasks of 4 and one that escalated 300 of 400 have the same rate and very
different evidence; the learner promotes on the interval's lower bound, not the point estimate.
The Wilson interval stays inside [0, 1] and behaves at 0 and n successes, where the normal
approximation does not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["Z95", "Rate", "wilson_interval"]

#: The two-sided 95% normal quantile.
Z95 = 1.959963984540054


def wilson_interval(successes: int, trials: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of *successes* in *trials* (``None`` for no trials).

    Raises:
        ValueError: negative counts, or more successes than trials.
    """
    if successes < 0 or trials < 0 or successes > trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes} of {trials}")
    if trials == 0:
        return None
    p = successes / trials
    z2 = z * z
    denominator = 1 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / denominator
    # at 0 and n successes the bound is exactly 0 or 1; rounding must not push it past
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


@dataclass(frozen=True, slots=True)
class Rate:
    """*count* of *of* as a share, with its 95% Wilson interval (``None`` when *of* is 0)."""

    count: int
    of: int

    @property
    def value(self) -> float | None:
        return self.count / self.of if self.of else None

    @property
    def interval(self) -> tuple[float, float] | None:
        return wilson_interval(self.count, self.of)

    def as_dict(self) -> dict[str, Any]:
        interval = self.interval
        return {
            "count": self.count,
            "of": self.of,
            "rate": self.value,
            "low": None if interval is None else interval[0],
            "high": None if interval is None else interval[1],
        }
