"""From evidence to proposals: promote or demote a kind's floor by one tier, or hold, and why.

**Promotion** of a kind from its floor *F* to *F+1* needs, over the kind's window:

* at least ``min_sample`` tasks on *F*, whose failure rate (escalations and late failures) has
  the lower bound of its 95% Wilson interval at or above ``promotion_threshold`` — confidence,
  not the point estimate;
* the evidence to hold across the window: neither half of it confidently below the threshold
  (its interval's upper bound under it);
* the next tier to pass them: its failure rate on the tasks that reached it confidently below
  the threshold;
* and a reason: it saves money, or the fleet is above its red line and the kind escalates
  beyond its allowance, or it saves time (the failed attempts' latency). A promotion that costs
  more than it saves is proposed for the red line or latency, and says so.

**The money of a promotion**, from the stored costs: the attempts on *F* of the tasks that
failed there are no longer paid for; the tasks *F* answered now pay *F+1* for their first
attempt — their accepted attempts' tokens priced at *F+1*'s primary model — instead of what
they paid on *F*. Net = no longer paid − (dearer first attempts − what *F* cost them). At prices
of 1:3 and similar tokens the net is zero near a failure rate of 1 − 1/3 ≈ 67%
(:func:`break_even`): below it a promotion costs more than it saves.

**Demotion** from *F* to *F−1* needs at least ``min_sample`` judged probes on *F−1* (with
``cheaper_would_do`` flags counted as passes) whose failure rate has the upper bound of its
interval at or below ``demotion_threshold``, neither half confidently above it, and a saving:
the share of tasks that would pass below no longer pays *F*, every task pays a first attempt on
*F−1*. Thresholds apart (``demotion_threshold`` < ``promotion_threshold``) leave a band where a
kind stays put; a kind never moves twice within ``cooldown_days``, never while a person's
override holds it, and must-stay-frontier kinds never move.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from tierwise.errors import PricingError

if TYPE_CHECKING:
    from tierwise.analytics import Rate
    from tierwise.learning.evidence import KindEvidence
    from tierwise.learning.settings import LearnSettings
    from tierwise.policy import Policy
    from tierwise.pricing import Usage

__all__ = ["Direction", "Hold", "Money", "Proposal", "break_even", "decide", "toml_patch"]

Direction = Literal["promote", "demote"]


@dataclass(frozen=True, slots=True)
class Money:
    """What a move does to spend over the evidence window (USD; positive ``net``: it saves).

    ``saved_usd``: what is no longer paid; ``added_usd``: what is paid on top; ``per_1000``:
    the net per thousand tasks of the kind; ``break_even_failure``: the failure rate on the
    lower tier at which the move neither saves nor costs (``None`` when prices are missing).
    """

    saved_usd: Decimal
    added_usd: Decimal
    tasks: int
    break_even_failure: float | None = None

    @property
    def net_usd(self) -> Decimal:
        return self.saved_usd - self.added_usd

    @property
    def per_1000(self) -> Decimal | None:
        return None if not self.tasks else self.net_usd * 1000 / self.tasks

    def as_dict(self) -> dict[str, Any]:
        per = self.per_1000
        return {
            "saved_usd": str(self.saved_usd),
            "added_usd": str(self.added_usd),
            "net_usd": str(self.net_usd),
            "tasks": self.tasks,
            "net_per_1000_tasks_usd": None if per is None else str(round(per, 6)),
            "break_even_failure": self.break_even_failure,
        }


@dataclass(frozen=True, slots=True)
class Proposal:
    """A proposed move of one kind's floor, with its evidence, money, latency and reasons."""

    kind: str
    direction: Direction
    floor_before: str | None
    floor_after: str
    summary: str
    reasons: tuple[str, ...]
    evidence: dict[str, Any]
    money: Money | None
    latency: dict[str, Any] = field(default_factory=dict)
    toml: str = ""

    @property
    def reason(self) -> str:
        """One line for the ``reason`` column: the summary and why it is proposed."""
        return self.summary

    def change(self) -> dict[str, Any]:
        """The ``change_json`` of its row (``floor_before`` / ``floor_after`` are tier names)."""
        return {
            "action": self.direction,
            "direction": self.direction,
            "floor_before": self.floor_before,
            "floor_after": self.floor_after,
            "reasons": list(self.reasons),
            "evidence": self.evidence,
            "money": None if self.money is None else self.money.as_dict(),
            "latency": self.latency,
            "toml": self.toml,
        }

    def same_move(self, change: dict[str, Any] | Any) -> bool:
        """Whether a recorded change proposes this very move."""
        get = change.get
        return (
            get("action") == self.direction
            and get("floor_before") == self.floor_before
            and get("floor_after") == self.floor_after
        )


@dataclass(frozen=True, slots=True)
class Hold:
    """No move for a kind, and why (``reason`` is a short code, ``detail`` the sentence)."""

    kind: str
    reason: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "reason": self.reason, "detail": self.detail}


def break_even(low_cost: Decimal, high_cost: Decimal) -> float | None:
    """The failure rate on the cheaper tier at which promoting saves nothing.

    With *low_cost* and *high_cost* the cost of the same work on the two tiers, a failure rate
    *p* saves ``p · low`` and adds ``(1 − p) · (high − low)``; they are equal at
    ``p = 1 − low / high`` (1:3 prices: ≈ 0.667).
    """
    if high_cost <= 0 or high_cost <= low_cost:
        return None
    return float(1 - low_cost / high_cost)


def _pct(rate: Rate) -> str:
    """``80% (95% CI 68–88%)``."""
    interval = rate.interval
    if rate.value is None or interval is None:
        return "-"
    return f"{rate.value:.0%} (95% CI {interval[0] * 100:.0f}–{interval[1] * 100:.0f}%)"


def _usd(value: Decimal) -> str:
    return f"${value:,.4f}" if abs(value) < 100 else f"${value:,.2f}"


def _priced(policy: Policy, tier: str, usage: Usage) -> Decimal | None:
    from tierwise.pricing import PriceCatalog, cost_of

    config = policy.tier(tier)
    try:
        prices = PriceCatalog(policy.model.prices).prices_for(config.model, config.provider)
    except PricingError:
        return None
    return cost_of(usage, prices)


def _cooling(e: KindEvidence, settings: LearnSettings) -> datetime | None:
    """Until when the kind's last move holds it still (``None``: it may move)."""
    last = e.last_change
    if last is None or last.decided_at is None:
        return None
    ends = last.decided_at + settings.cooldown
    return ends if e.until < ends else None


def decide(e: KindEvidence, settings: LearnSettings, policy: Policy) -> Proposal | Hold:
    """Whether *e*'s kind should move one tier (module docstring), priced by *policy*."""
    if e.frontier:
        return Hold(e.kind, "frontier", "on the must-stay-frontier list: never moved")
    if e.override is not None:
        until = e.override.until
        held = f" until {until:%Y-%m-%d %H:%M} UTC" if until is not None else ""
        return Hold(
            e.kind,
            "override",
            f"held at {e.override.floor_after} by override #{e.override.id} "
            f"({e.override.actor}){held}",
        )
    cooling = _cooling(e, settings)
    if cooling is not None:
        assert e.last_change is not None
        return Hold(
            e.kind,
            "cooldown",
            f"moved by #{e.last_change.id} on {e.last_change.decided_at:%Y-%m-%d %H:%M} UTC; "
            f"cooling down until {cooling:%Y-%m-%d %H:%M} UTC",
        )
    promoted = _promotion(e, settings, policy)
    if isinstance(promoted, Proposal):
        return promoted
    if e.below is not None:
        demoted = _demotion(e, settings, policy)
        # a floored kind whose floor does fine: what the probes say is the news
        if isinstance(demoted, Proposal) or promoted.reason in _QUIET:
            return demoted
    return promoted


#: Promotion holds that say only "the floor does fine" (a floored kind then reports its probes).
_QUIET = ("small_sample", "below_threshold", "top")


def _promotion(e: KindEvidence, settings: LearnSettings, policy: Policy) -> Proposal | Hold:
    ev = e.on_floor
    rate = ev.tasks.rate
    threshold = settings.promotion_threshold
    if ev.next_tier is None:
        return Hold(e.kind, "top", f"its floor {ev.tier} is the top tier")
    if rate.of < settings.min_sample:
        return Hold(
            e.kind,
            "small_sample",
            f"{rate.of} tasks on {ev.tier} since {e.since:%Y-%m-%d}; needs {settings.min_sample}",
        )
    interval = rate.interval
    assert interval is not None
    if interval[0] < threshold:
        return Hold(
            e.kind,
            "below_threshold",
            f"failure on {ev.tier} {_pct(rate)}: its lower bound is under the promotion "
            f"threshold {threshold:.0%}",
        )
    for name, half in zip(("first", "second"), ev.tasks.halves, strict=True):
        bounds = half.interval
        if bounds is not None and bounds[1] < threshold:
            return Hold(
                e.kind,
                "not_held",
                f"failure on {ev.tier} {_pct(rate)}, but the {name} half of the window is "
                f"confidently below {threshold:.0%} ({_pct(half)}): the evidence does not hold",
            )
    nxt = ev.next.rate
    bounds = nxt.interval
    if bounds is None or bounds[1] >= threshold:
        return Hold(
            e.kind,
            "next_fails",
            f"failure on {ev.tier} {_pct(rate)}, but {ev.next_tier} does not pass them "
            f"({nxt.count} of {nxt.of} failed there too)",
        )
    money = _promotion_money(ev, policy)
    reasons: list[str] = []
    words: list[str] = []
    line = f"the fleet escalates {_pct_value(settings, e)}"
    if money is not None and money.net_usd > 0:
        reasons.append("money")
        words.append(f"saves {_usd(money.net_usd)} over the window")
    elif money is not None:
        even = money.break_even_failure
        at = f"; at these prices it breaks even near {even:.0%} failure" if even else ""
        words.append(f"costs {_usd(-money.net_usd)} more over the window{at}")
    above = _red_line_above(e, settings)
    if above:
        reasons.append("red_line")
        words.append(
            f"{line}, above its red line of {settings.red_line:.0%}, and this kind escalates "
            f"{e.red_line_excess:.1f} tasks beyond its allowance"
        )
    per_task = ev.failed_latency_s / ev.escalated if ev.escalated else 0.0
    if ev.failed_latency_s > 0:
        reasons.append("latency")
        words.append(
            f"saves {ev.failed_latency_s:.1f} s of failed attempts ({per_task:.2f} s per "
            "escalated task)"
        )
    if not reasons:
        return Hold(
            e.kind,
            "no_reason",
            f"failure on {ev.tier} {_pct(rate)}, but promoting costs more and neither the red "
            "line nor latency calls for it",
        )
    why = ""
    if "money" not in reasons and money is not None:
        why = " — proposed for " + " and ".join(
            {"red_line": "the red line", "latency": "latency"}[r] for r in reasons
        )
    summary = (
        f"{e.kind}: {_floor(e.floor, settings)} → {ev.next_tier}: {rate.count} of {rate.of} "
        f"tasks failed on {ev.tier}, {_pct(rate)}; {ev.next_tier} passed "
        f"{nxt.of - nxt.count} of {nxt.of}; " + "; ".join(words) + why
    )
    return Proposal(
        kind=e.kind,
        direction="promote",
        floor_before=e.floor,
        floor_after=ev.next_tier,
        summary=summary,
        reasons=tuple(reasons),
        evidence=e.as_dict(),
        money=money,
        latency={
            "failed_attempts_s": ev.failed_latency_s,
            "per_escalated_task_s": per_task,
            "escalated_tasks": ev.escalated,
        },
        toml=toml_patch(e.kind, ev.next_tier, e.floor),
    )


def _demotion(e: KindEvidence, settings: LearnSettings, policy: Policy) -> Proposal | Hold:
    below = e.below
    assert below is not None
    rate = below.probes.rate
    threshold = settings.demotion_threshold
    if rate.of < settings.min_sample:
        return Hold(
            e.kind,
            "small_sample",
            f"{rate.of} judged probes on {below.tier} since {e.since:%Y-%m-%d}; needs "
            f"{settings.min_sample}",
        )
    interval = rate.interval
    assert interval is not None
    if interval[1] > threshold:
        return Hold(
            e.kind,
            "above_threshold",
            f"probes on {below.tier} fail {_pct(rate)}: the upper bound is over the demotion "
            f"threshold {threshold:.0%}",
        )
    for name, half in zip(("first", "second"), below.probes.halves, strict=True):
        bounds = half.interval
        if bounds is not None and bounds[0] > threshold:
            return Hold(
                e.kind,
                "not_held",
                f"probes on {below.tier} fail {_pct(rate)}, but the {name} half of the window "
                f"is confidently above {threshold:.0%} ({_pct(half)})",
            )
    money = _demotion_money(e, policy, rate)
    if money is not None and money.net_usd <= 0:
        return Hold(
            e.kind,
            "no_saving",
            f"probes on {below.tier} pass, but demoting would not save money "
            f"({_usd(money.net_usd)})",
        )
    saving = "" if money is None else f"; saves {_usd(money.net_usd)} over the window"
    summary = (
        f"{e.kind}: {_floor(e.floor, settings)} → {below.tier}: probes on {below.tier} failed "
        f"{rate.count} of {rate.of}, {_pct(rate)} ({below.passed} passed, {below.rejected} "
        f"rejected, {below.flagged} flagged later, {below.cheaper_flags} 'cheaper would do' "
        f"flags); probes cost {_usd(below.spend_usd)}{saving}"
    )
    return Proposal(
        kind=e.kind,
        direction="demote",
        floor_before=e.floor,
        floor_after=below.tier,
        summary=summary,
        reasons=("money",) if money is not None else ("probes",),
        evidence=e.as_dict(),
        money=money,
        toml=toml_patch(e.kind, below.tier, e.floor),
    )


def _floor(floor: str | None, settings: LearnSettings) -> str:
    return floor if floor is not None else f"no floor ({settings.ladder[0]})"


def _red_line_above(e: KindEvidence, settings: LearnSettings) -> bool:
    return bool(e.red_line_rate is not None and e.red_line_rate > settings.red_line) and (
        e.red_line_excess > 0
    )


def _pct_value(settings: LearnSettings, e: KindEvidence) -> str:
    return "-" if e.red_line_rate is None else f"{e.red_line_rate:.1%}"


def _promotion_money(ev: Any, policy: Policy) -> Money | None:
    """Saved: the floor attempts of the failed tasks; added: the direct tasks' work priced on
    the next tier, minus what the floor charged them."""
    assert ev.next_tier is not None
    dearer = _priced(policy, ev.next_tier, ev.direct_usage)
    same = _priced(policy, ev.tier, ev.direct_usage)
    if dearer is None:
        return None
    even = break_even(same, dearer) if same is not None else None
    return Money(
        saved_usd=ev.failed_cost_usd,
        added_usd=dearer - ev.direct_cost_usd,
        tasks=ev.tasks.of,
        break_even_failure=even,
    )


def _demotion_money(e: KindEvidence, policy: Policy, rate: Rate) -> Money | None:
    """Saved: the floor's cost for the share that would pass below; added: a first attempt
    below for every task (the floor's accepted work priced one tier down, per task)."""
    ev, below = e.on_floor, e.below
    assert below is not None
    if not ev.direct_tasks or rate.value is None:
        return None
    cheaper = _priced(policy, below.tier, ev.direct_usage)
    if cheaper is None:
        return None
    tasks = ev.tasks.of
    per_task_below = cheaper / ev.direct_tasks
    pass_share = Decimal(1) - Decimal(rate.count) / Decimal(rate.of)
    same = _priced(policy, ev.tier, ev.direct_usage)
    return Money(
        saved_usd=ev.floor_cost_usd * pass_share,
        added_usd=per_task_below * tasks,
        tasks=tasks,
        break_even_failure=break_even(cheaper, same) if same is not None else None,
    )


def toml_patch(kind: str, floor_after: str, floor_before: str | None) -> str:
    """The policy-file edit that makes the same change (for teams who keep it in the file)."""
    from tierwise.policy.locate import format_path

    was = floor_before if floor_before is not None else "no floor"
    return f'[{format_path(("kinds", kind))}]\nfloor = "{floor_after}"  # was: {was}\n'
