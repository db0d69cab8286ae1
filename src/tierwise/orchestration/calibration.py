"""Planner calibration: how the tiers a planner assigns turn out, per assigned tier.

The planner is as prone to underestimating a task as the executors are, so its assignments are
tracked like any router's: per planner-assigned tier, how many subtasks were

- **accepted as assigned** — accepted on the assigned tier, no climb;
- **escalated by validators** — a validator (or a provider error) sent them up (under-assignment);
- **escalated by the reviewer** — the reviewer sent them up (under-assignment);
- **not accepted** — no tier produced an output that passed (failed, rejected, out of budget);
- **flagged wrong later** — accepted, then flagged wrong downstream (``tierwise plan flag``);
- **passed cheaper when probed** — a probe on a lower tier passed (over-assignment).

A subtask *fails* when it was escalated, not accepted or flagged. :func:`planner_calibration`
says when one assigned tier fails significantly more often than another (a one-sided
two-proportion z-test), which is the articles' sign that the planner's routing judgement is off;
:func:`failure_rate_lines` is what ``[plan] prompt_failure_rates`` tells the planner. Skipped
subtasks (a dependency failed) and unfinished ones are not counted.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Calibration", "TierCalibration", "failure_rate_lines", "planner_calibration"]

_COUNTED = ("accepted", "rejected", "failed", "budget")


@dataclass(frozen=True, slots=True)
class TierCalibration:
    """The counts for one planner-assigned tier."""

    tier: str
    tier_index: int
    subtasks: int = 0
    accepted_as_assigned: int = 0
    escalated_by_validators: int = 0
    escalated_by_reviewer: int = 0
    not_accepted: int = 0
    flagged_wrong: int = 0
    passed_cheaper_when_probed: int = 0
    failed: int = 0

    @property
    def failure_rate(self) -> float | None:
        return self.failed / self.subtasks if self.subtasks else None


@dataclass(frozen=True, slots=True)
class Finding:
    """One assigned tier failing significantly more often than another."""

    worse: str
    better: str
    worse_rate: float
    better_rate: float
    p_value: float

    def text(self) -> str:
        return (
            f"subtasks the planner assigned to {self.worse} fail significantly more often than "
            f"those assigned to {self.better}: {self.worse_rate:.0%} vs {self.better_rate:.0%} "
            f"(one-sided p = {self.p_value:.3g}); the planner under-assigns {self.worse}"
        )


@dataclass(frozen=True, slots=True)
class Calibration:
    """Per assigned tier (bottom to top) the counts, and the significant differences found."""

    tiers: tuple[TierCalibration, ...]
    findings: tuple[Finding, ...]
    min_sample: int
    alpha: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "tiers": [{**asdict(t), "failure_rate": t.failure_rate} for t in self.tiers],
            "findings": [{**asdict(f), "text": f.text()} for f in self.findings],
            "min_sample": self.min_sample,
            "alpha": self.alpha,
        }


def planner_calibration(
    rows: Iterable[Mapping[str, Any]],
    ladder: Sequence[str] | None = None,
    *,
    min_sample: int = 20,
    alpha: float = 0.05,
) -> Calibration:
    """Count subtasks per planner-assigned tier and test the tiers' failure rates pairwise.

    Args:
        rows: ``Ledger.calibration_rows()`` (one per subtask).
        ladder: tier names bottom to top (default: as the rows' tier indexes order them);
            every tier of it gets a line, counted or not.
        min_sample: a tier is compared only with this many counted subtasks.
        alpha: the significance level of the one-sided test.
    """
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    index: dict[str, int] = {}
    for row in rows:
        if row["outcome"] not in _COUNTED:
            continue
        tier = str(row["assigned_tier"])
        index[tier] = int(row["assigned_tier_index"])
        c = counts[tier]
        c["subtasks"] += 1
        by_validators = int(row["validator_climbs"] or 0) > 0
        by_reviewer = int(row["reviewer_climbs"] or 0) > 0
        accepted = row["outcome"] == "accepted"
        flagged = row.get("flagged_at") is not None
        c["escalated_by_validators"] += by_validators
        c["escalated_by_reviewer"] += by_reviewer
        c["not_accepted"] += not accepted
        c["flagged_wrong"] += flagged
        c["passed_cheaper_when_probed"] += bool(row.get("probe_passed_below"))
        c["accepted_as_assigned"] += accepted and not by_validators and not by_reviewer
        c["failed"] += by_validators or by_reviewer or not accepted or flagged
    names = list(ladder) if ladder is not None else sorted(index, key=lambda t: index[t])
    for name in counts:
        if name not in names:
            names.append(name)
    tiers = tuple(
        TierCalibration(name, index.get(name, i), **dict(counts.get(name, {})))
        for i, name in enumerate(names)
    )
    findings = []
    eligible = [t for t in tiers if t.subtasks >= min_sample]
    for worse in eligible:
        for better in eligible:
            if worse is better:
                continue
            p = _one_sided_p(worse.failed, worse.subtasks, better.failed, better.subtasks)
            if p is not None and p < alpha:
                assert worse.failure_rate is not None and better.failure_rate is not None
                findings.append(
                    Finding(worse.tier, better.tier, worse.failure_rate, better.failure_rate, p)
                )
    return Calibration(tiers, tuple(findings), min_sample, alpha)


def failure_rate_lines(rows: Iterable[Mapping[str, Any]], *, limit: int = 30) -> list[str]:
    """Failure rates per (kind, assigned tier), one line each, for the planner's prompt."""
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        if row["outcome"] not in _COUNTED:
            continue
        failed = (
            int(row["validator_climbs"] or 0) > 0
            or int(row["reviewer_climbs"] or 0) > 0
            or row["outcome"] != "accepted"
            or row.get("flagged_at") is not None
        )
        pair = counts[(str(row["kind"]), str(row["assigned_tier"]))]
        pair[0] += failed
        pair[1] += 1
    lines = [
        f"{kind} on {tier}: {failed} of {n} subtasks failed ({failed / n:.0%})"
        for (kind, tier), (failed, n) in sorted(counts.items())
    ]
    return lines[:limit]


def _one_sided_p(x1: int, n1: int, x2: int, n2: int) -> float | None:
    """P-value that the first proportion is greater than the second (pooled z-test)."""
    if not n1 or not n2:
        return None
    p1, p2 = x1 / n1, x2 / n2
    pooled = (x1 + x2) / (n1 + n2)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if spread == 0:
        return None  # both all-failed or all-passed: nothing to tell apart
    z = (p1 - p2) / spread
    return 0.5 * math.erfc(z / math.sqrt(2))
