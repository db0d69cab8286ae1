"""What the analytics return: frozen dataclasses, each with ``as_dict()`` for ``--json``.

Money is ``Decimal`` USD in Python and a decimal string in JSON (exact, as the ledger stores it);
times are aware UTC datetimes and ISO 8601 text; rates carry their count, their denominator and
a 95% Wilson interval (:class:`~tierwise.analytics.rates.Rate`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from tierwise.analytics.rates import Rate
from tierwise.ledger.schema import from_pico, to_pico

if TYPE_CHECKING:
    from tierwise.policy import Policy

__all__ = [
    "Analytics",
    "Contribution",
    "FlagStats",
    "GroupStats",
    "KindStats",
    "Latency",
    "RedLine",
    "Settings",
    "SideLine",
    "Totals",
    "status_of",
]


def _usd(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True, slots=True)
class Settings:
    """The policy's ``[fleet]`` settings and ladder the analytics judge by."""

    red_line: float = 0.09
    promotion_threshold: float = 0.60
    min_sample: int = 50
    ladder: tuple[str, ...] = ("cheap", "mid", "strong")

    @classmethod
    def from_policy(cls, policy: Policy) -> Settings:
        fleet = policy.model.fleet
        return cls(
            red_line=fleet.escalation_red_line,
            promotion_threshold=fleet.promotion_threshold,
            min_sample=fleet.min_sample,
            ladder=tuple(policy.ladder),
        )

    @property
    def top_index(self) -> int:
        return len(self.ladder) - 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "escalation_red_line": self.red_line,
            "promotion_threshold": self.promotion_threshold,
            "min_sample": self.min_sample,
            "ladder": list(self.ladder),
        }


@dataclass(frozen=True, slots=True)
class Latency:
    """Task latency percentiles of a set of tasks (``None`` without tasks)."""

    tasks: int = 0
    p50_s: float | None = None
    p95_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"tasks": self.tasks, "p50_s": self.p50_s, "p95_s": self.p95_s}


@dataclass(frozen=True, slots=True)
class Totals:
    """The measures every grouping shares (a kind × starting tier, a kind, the fleet).

    ``tasks`` are counted (live, on the ladder) tasks created in the window; ``resolved`` the
    accepted and exhausted ones, the escalation rate's denominator; ``unresolved`` counts the
    others by outcome (``budget``, ``error``, ``running``). ``first_try``: accepted with none of
    their own attempts failed. ``cost_usd`` is every attempt of these tasks (validator, probe and
    shadow calls included) as stored; ``wasted_usd`` their own rejected and errored attempts;
    ``cost_per_accepted_usd`` cost ÷ accepted tasks. ``checked`` counts tasks a validator judged.
    """

    tasks: int = 0
    resolved: int = 0
    accepted: int = 0
    exhausted: int = 0
    unresolved: dict[str, int] = field(default_factory=dict)
    escalated: int = 0
    first_try: int = 0
    checked: int = 0
    fallbacks: int = 0
    cost_usd: Decimal = Decimal(0)
    wasted_usd: Decimal = Decimal(0)
    validator_usd: Decimal = Decimal(0)
    probe_usd: Decimal = Decimal(0)
    shadow_usd: Decimal = Decimal(0)
    latency_direct: Latency = Latency()
    latency_escalated: Latency = Latency()

    @property
    def escalation(self) -> Rate:
        return Rate(self.escalated, self.resolved)

    @property
    def first_try_pass(self) -> Rate:
        return Rate(self.first_try, self.resolved)

    @property
    def cost_per_accepted_usd(self) -> Decimal | None:
        """Cost ÷ accepted tasks, rounded half-even to the pico-dollar."""
        return from_pico(to_pico(self.cost_usd / self.accepted)) if self.accepted else None

    def as_dict(self) -> dict[str, Any]:
        per = self.cost_per_accepted_usd
        return {
            "tasks": self.tasks,
            "resolved": self.resolved,
            "accepted": self.accepted,
            "exhausted": self.exhausted,
            "unresolved": dict(self.unresolved),
            "escalation": self.escalation.as_dict(),
            "first_try_pass": self.first_try_pass.as_dict(),
            "checked": self.checked,
            "fallbacks": self.fallbacks,
            "cost_usd": _usd(self.cost_usd),
            "cost_per_accepted_usd": _usd(per),
            "wasted_usd": _usd(self.wasted_usd),
            "validator_usd": _usd(self.validator_usd),
            "probe_usd": _usd(self.probe_usd),
            "shadow_usd": _usd(self.shadow_usd),
            "latency": {
                "direct": self.latency_direct.as_dict(),
                "escalated": self.latency_escalated.as_dict(),
            },
        }


def status_of(totals: Totals, settings: Settings) -> str:
    """``unmeasured`` (no validator judged an output: nothing can fail, which is not health),
    ``small_sample`` (fewer resolved tasks than ``min_sample``) or ``measured``."""
    if totals.checked == 0:
        return "unmeasured"
    if totals.resolved < settings.min_sample:
        return "small_sample"
    return "measured"


@dataclass(frozen=True, slots=True)
class GroupStats:
    """One kind and the tier its tasks started on, over the window.

    ``reasons`` counts why escalated tasks left their starting tier: the failure of the last
    attempt made there (the validator's name, or the error class), most frequent first.
    ``flags`` counts the group's accepted tasks flagged ``wrong``, ``needed_frontier`` or
    ``cheaper_would_do``; ``late_failures`` those accepted on the starting tier and flagged
    ``wrong``, or ``needed_frontier`` below the top tier — failures the validators missed;
    ``failure_with_flags`` is (escalated + late failures) ÷ resolved, the rate a learner that
    trusts people's flags reads.
    """

    kind: str
    start_tier: str
    start_index: int
    totals: Totals
    status: str
    reasons: dict[str, int] = field(default_factory=dict)
    flags: dict[str, int] = field(default_factory=dict)
    late_failures: int = 0

    @property
    def failure_with_flags(self) -> Rate:
        t = self.totals
        return Rate(t.escalated + self.late_failures, t.resolved)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "start_tier": self.start_tier,
            "start_index": self.start_index,
            "status": self.status,
            **self.totals.as_dict(),
            "reasons": dict(self.reasons),
            "flags": dict(self.flags),
            "late_failures": self.late_failures,
            "failure_with_flags": self.failure_with_flags.as_dict(),
        }


@dataclass(frozen=True, slots=True)
class KindStats:
    """One kind over all its starting tiers (sums; latency percentiles are per group only)."""

    kind: str
    totals: Totals
    status: str
    start_tiers: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        data = {"kind": self.kind, "status": self.status, "start_tiers": list(self.start_tiers)}
        data.update(self.totals.as_dict())
        data.pop("latency")
        return data


@dataclass(frozen=True, slots=True)
class FlagStats:
    """People's flags on the outputs one tier produced for one kind.

    ``accepted`` counts the kind's tasks that tier answered (the rates' denominator).
    ``needed_frontier`` on the top tier confirms the routing (``confirmed``); below it, it is
    under-routing (``under_routed``). ``wrong`` is a late failure of this tier;
    ``cheaper_would_do`` over-routing.
    """

    kind: str
    tier: str
    tier_index: int
    top: bool
    accepted: int
    wrong: int = 0
    needed_frontier: int = 0
    cheaper_would_do: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "tier": self.tier,
            "tier_index": self.tier_index,
            "top": self.top,
            "accepted": self.accepted,
            "wrong": Rate(self.wrong, self.accepted).as_dict(),
            "needed_frontier": Rate(self.needed_frontier, self.accepted).as_dict(),
            "cheaper_would_do": Rate(self.cheaper_would_do, self.accepted).as_dict(),
            "under_routed": 0 if self.top else self.needed_frontier,
            "confirmed": self.needed_frontier if self.top else 0,
            "over_routed": self.cheaper_would_do,
            "late_failures": self.wrong,
        }


@dataclass(frozen=True, slots=True)
class Contribution:
    """One kind's part in the fleet's escalation over the red line's window.

    ``excess`` = escalated − red line × resolved: the escalations beyond what the red line allows
    this kind's volume (negative below the line). ``share`` is its part of the fleet's excess
    (the shares of all kinds add up to 1; a kind below the line has a negative share);
    ``points`` how much of the fleet's rate it makes (escalated ÷ the fleet's resolved tasks):
    the drop in the fleet's rate if its escalations stopped.
    """

    kind: str
    resolved: int
    escalated: int
    excess: float
    share: float | None
    points: float | None

    @property
    def rate(self) -> Rate:
        return Rate(self.escalated, self.resolved)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "resolved": self.resolved,
            "escalated": self.escalated,
            "escalation": self.rate.as_dict(),
            "excess": self.excess,
            "share_of_excess": self.share,
            "points": self.points,
        }


@dataclass(frozen=True, slots=True)
class RedLine:
    """The fleet's escalation rate over [since, until) against the policy's red line.

    ``above`` when the rate is strictly above the line; ``contributors`` lists every kind, the
    largest excess first.
    """

    threshold: float
    since: datetime
    until: datetime
    resolved: int
    escalated: int
    contributors: tuple[Contribution, ...] = ()

    @property
    def rate(self) -> Rate:
        return Rate(self.escalated, self.resolved)

    @property
    def above(self) -> bool:
        value = self.rate.value
        return value is not None and value > self.threshold

    @property
    def excess(self) -> float:
        return self.escalated - self.threshold * self.resolved

    def as_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "resolved": self.resolved,
            "escalated": self.escalated,
            "escalation": self.rate.as_dict(),
            "above": self.above,
            "excess": self.excess,
            "contributors": [c.as_dict() for c in self.contributors],
        }


@dataclass(frozen=True, slots=True)
class SideLine:
    """Traffic the escalation rate leaves out, counted on its own line."""

    tasks: int = 0
    attempts: int = 0
    cost_usd: Decimal = Decimal(0)

    def as_dict(self) -> dict[str, Any]:
        return {"tasks": self.tasks, "attempts": self.attempts, "cost_usd": _usd(self.cost_usd)}


@dataclass(frozen=True, slots=True)
class Analytics:
    """Routing analytics over tasks created in [since, until) (UTC), and the red line.

    ``fleet`` sums every counted task; ``groups`` is per kind and starting tier, ``kinds`` per
    kind; ``flags`` per kind and the tier that produced the flagged outputs; ``red_line`` the
    fleet's rate over the day before ``until``. ``passthrough`` is concrete-model calls;
    ``excluded`` the tasks of other roles (``probe``, ``shadow``, ``replay``) by role.
    ``pruned_before``: rows before this UTC day were pruned into daily rollups and are not in
    these figures (``None``: nothing was pruned).
    """

    since: datetime
    until: datetime
    settings: Settings
    fleet: Totals
    groups: tuple[GroupStats, ...]
    kinds: tuple[KindStats, ...]
    flags: tuple[FlagStats, ...]
    red_line: RedLine
    passthrough: SideLine
    excluded: dict[str, SideLine]
    pruned_before: date | None = None

    def group(self, kind: str, start_tier: str) -> GroupStats | None:
        """The (kind, starting tier) group, if it had tasks."""
        return next((g for g in self.groups if (g.kind, g.start_tier) == (kind, start_tier)), None)

    def kind(self, kind: str) -> KindStats | None:
        """One kind's totals, if it had tasks."""
        return next((k for k in self.kinds if k.kind == kind), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "settings": self.settings.as_dict(),
            "red_line": self.red_line.as_dict(),
            "fleet": self.fleet.as_dict(),
            "kinds": [k.as_dict() for k in self.kinds],
            "groups": [g.as_dict() for g in self.groups],
            "flags": [f.as_dict() for f in self.flags],
            "passthrough": self.passthrough.as_dict(),
            "excluded": {role: line.as_dict() for role, line in self.excluded.items()},
            "pruned_before": None if self.pruned_before is None else self.pruned_before.isoformat(),
        }
