"""The advisor's judgement: verdicts with their evidence and the policy change each suggests.

:func:`judge` turns the fleet's monthly spend and volume and one :class:`KindProfile` per kind
into :class:`Verdict` s, by the reasons :mod:`tierwise.reports.advisor` lists; the profiles come
from the ledger or from a workload described by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tierwise.analytics import Rate
from tierwise.reports.workload import signal_of

__all__ = [
    "FEW_TASKS",
    "MANY_TASKS",
    "MIN_MONTHLY_USD",
    "CascadeStep",
    "KindProfile",
    "Verdict",
    "judge",
]

#: Below this monthly spend tiering rarely repays its upkeep (the articles: "past $500/month").
MIN_MONTHLY_USD = Decimal(500)
#: Tasks a month below which the overhead is not worth it, and above which it clearly is.
FEW_TASKS, MANY_TASKS = 10_000, 100_000
#: A kind is part of the mix when it has at least this share of the tasks.
SIGNIFICANT_SHARE = 0.05
#: ``needed_frontier`` on at least this share of a kind's accepted answers (and at least
#: ``QUALITY_MIN_FLAGS`` of them) says quality dominates cost for it.
QUALITY_FLAG_SHARE, QUALITY_MIN_FLAGS = 0.10, 3


@dataclass(frozen=True, slots=True)
class CascadeStep:
    """A kind starting on one tier with the next tier above: does starting there pay?

    ``break_even`` = 1 − ``cost_start`` ÷ ``cost_next`` (per task, the kind's own tokens priced
    on each tier's primary model); ``failure`` is the share of resolved tasks that left the
    starting tier (the escalation rate; from the ledger, with its interval) or the workload's
    ``failure_rate`` (``failure_given``).
    """

    kind: str
    start_tier: str
    next_tier: str
    tasks: int
    failure: Rate | None
    failure_given: float | None
    cost_start_usd: Decimal | None
    cost_next_usd: Decimal | None

    @property
    def break_even(self) -> float | None:
        if not self.cost_start_usd or not self.cost_next_usd:
            return None
        return float(1 - self.cost_start_usd / self.cost_next_usd)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "start_tier": self.start_tier,
            "next_tier": self.next_tier,
            "tasks": self.tasks,
            "failure": None if self.failure is None else self.failure.as_dict(),
            "failure_given": self.failure_given,
            "cost_start_usd": _str(self.cost_start_usd),
            "cost_next_usd": _str(self.cost_next_usd),
            "break_even": self.break_even,
        }


def _str(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True, slots=True)
class KindProfile:
    """What the advisor knows of one kind (``None``: not known in this mode)."""

    kind: str
    tasks: int
    share: float
    spend_usd: Decimal | None
    validators: tuple[str, ...]
    checked: int | None = None
    validator_usd: Decimal | None = None
    answers: dict[str, int] = field(default_factory=dict)
    flags: dict[str, Rate] = field(default_factory=dict)
    same_answer: bool = False
    quality_first: bool = False
    cascades: tuple[CascadeStep, ...] = ()

    @property
    def signal(self) -> str:
        return signal_of(self.validators)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "tasks": self.tasks,
            "share": self.share,
            "spend_usd": _str(self.spend_usd),
            "validators": list(self.validators),
            "signal": self.signal,
            "checked": self.checked,
            "validator_usd": _str(self.validator_usd),
            "answers": dict(self.answers),
            "flags": {k: v.as_dict() for k, v in self.flags.items()},
            "same_answer": self.same_answer,
            "quality_first": self.quality_first,
            "cascades": [c.as_dict() for c in self.cascades],
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """One judgement: what it is about, what it says, the evidence and the change it suggests.

    ``pays``: ``True`` speaks for routing, ``False`` against, ``None`` neither.
    """

    topic: str
    kind: str | None
    verdict: str
    pays: bool | None
    evidence: str
    suggestion: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "kind": self.kind,
            "verdict": self.verdict,
            "pays": self.pays,
            "evidence": self.evidence,
            "suggestion": self.suggestion,
        }


# -- judging --------------------------------------------------------------------------------------


def _usd(value: Decimal) -> str:
    return f"${value:,.2f}" if abs(value) >= 1 else f"${value:,.6f}"


def _trusted(profile: KindProfile | None, ladder: tuple[str, ...]) -> str:
    """The tier to pin to: the one that answers most of the kind now, else below the top."""
    if profile is not None and profile.answers:
        return max(
            profile.answers.items(),
            key=lambda kv: (kv[1], ladder.index(kv[0]) if kv[0] in ladder else -1),
        )[0]
    return ladder[-2] if len(ladder) > 2 else ladder[-1]


def _fleet(
    advice_spend: Decimal,
    monthly: Decimal,
    tasks_month: int,
    days: float,
    kinds: tuple[KindProfile, ...],
    ladder: tuple[str, ...],
) -> list[Verdict]:
    out = []
    over = f"{_usd(advice_spend)} over {days:g} days" if days else "projected"
    fleet_tier = _trusted(None, ladder)
    if monthly < MIN_MONTHLY_USD:
        out.append(
            Verdict(
                "spend",
                None,
                "one tier",
                False,
                f"{_usd(monthly)} a month ({over}): below about {_usd(MIN_MONTHLY_USD)} a month "
                "tiering rarely repays its upkeep",
                f'[defaults]\nfloor = "{fleet_tier}"  # one tier you trust; route past $500/month',
            )
        )
    else:
        out.append(
            Verdict(
                "spend",
                None,
                "route",
                True,
                f"{_usd(monthly)} a month ({over}): past {_usd(MIN_MONTHLY_USD)} routing can repay",
            )
        )
    if tasks_month < FEW_TASKS:
        out.append(
            Verdict(
                "volume",
                None,
                "too few",
                False,
                f"{tasks_month:,} tasks a month: under {FEW_TASKS:,} the overhead is not worth it",
            )
        )
    elif tasks_month >= MANY_TASKS:
        out.append(
            Verdict(
                "volume",
                None,
                "enough",
                True,
                f"{tasks_month:,} tasks a month: past {MANY_TASKS:,}",
            )
        )
    else:
        out.append(
            Verdict(
                "volume",
                None,
                "enough to measure",
                None,
                f"{tasks_month:,} tasks a month: between {FEW_TASKS:,} and {MANY_TASKS:,}; the "
                "spend decides",
            )
        )
    major = [k for k in kinds if k.share >= SIGNIFICANT_SHARE]
    listed = ", ".join(f"{k.kind} {k.share:.0%}" for k in sorted(kinds, key=lambda k: -k.share)[:6])
    if len(major) <= 1:
        out.append(
            Verdict(
                "variety",
                None,
                "one kind",
                False,
                f"{len(kinds)} kind(s) ({listed or 'none'}): nothing much to route between",
            )
        )
    else:
        out.append(
            Verdict(
                "variety",
                None,
                "varied",
                True,
                f"{len(major)} kinds with 5% of the tasks or more: {listed}",
            )
        )
    return out


def _per_kind(k: KindProfile, ladder: tuple[str, ...], hints: str | None) -> list[Verdict]:
    out = []
    tier = _trusted(k, ladder)
    checked = "" if k.checked is None else f"; {k.checked} of {k.tasks} outputs checked"
    if k.signal == "none":
        out.append(
            Verdict(
                "signal",
                k.kind,
                "one tier you trust",
                False,
                f"no validator checks {k.kind}{checked}: a cascade cannot tell when to climb",
                f'[kinds.{k.kind}]\nfloor = "{tier}"  # or a check without a model call',
            )
        )
    elif k.signal == "model":
        spent = ""
        if k.validator_usd is not None and k.spend_usd:
            spent = f"; validators' model calls cost {_usd(k.validator_usd)} "
            spent += f"({float(k.validator_usd / k.spend_usd):.0%} of the kind's spend)"
        out.append(
            Verdict(
                "signal",
                k.kind,
                "checking costs a model call",
                False,
                f"{k.kind} is checked by {', '.join(k.validators)}, a model call{spent}: "
                "escalation eats the savings",
                f'[kinds.{k.kind}]\nvalidators = ["json_schema-or-regex-or-command"]  # a check '
                f'without a model call\n# or pin it: floor = "{tier}"',
            )
        )
    else:
        out.append(
            Verdict(
                "signal",
                k.kind,
                "cheap signal",
                True,
                f"{k.kind} is checked by {', '.join(k.validators)}{checked}",
            )
        )
    if k.same_answer:
        spread = ", ".join(f"{t} {n}" for t, n in sorted(k.answers.items()))
        seen = f"; its answers came from {spread}" if len(k.answers) > 1 else ""
        out.append(
            Verdict(
                "consistency",
                k.kind,
                "pin",
                None,
                f"{k.kind} must give every user the same answer ({hints or 'marked'}){seen}",
                f'[kinds.{k.kind}]\nfloor = "{tier}"  # and no rule routing it elsewhere',
            )
        )
    needed = k.flags.get("needed_frontier")
    flagged = (
        needed is not None
        and needed.count >= QUALITY_MIN_FLAGS
        and (needed.value or 0) >= QUALITY_FLAG_SHARE
    )
    if k.quality_first or flagged:
        why = f"marked quality_first ({hints})" if k.quality_first else ""
        if flagged and needed is not None:
            why += ("; " if why else "") + (
                f"people flagged needed_frontier on {needed.count} of {needed.of} accepted answers"
            )
        out.append(
            Verdict(
                "quality",
                k.kind,
                "pin to the top",
                None,
                f"{k.kind}: quality dominates cost: {why}",
                f'[frontier]\nkinds = ["{k.kind}"]  # added to the must-stay-frontier list',
            )
        )
    for step in k.cascades:
        out.append(_break_even(step))
    return out


def _break_even(s: CascadeStep) -> Verdict:
    be = s.break_even
    costs = f"{_usd(s.cost_start_usd or Decimal(0))} on {s.start_tier} vs "
    costs += f"{_usd(s.cost_next_usd or Decimal(0))} on {s.next_tier} per task"
    if be is None:
        return Verdict(
            "break_even",
            s.kind,
            "unpriced",
            None,
            f"{s.kind} from {s.start_tier}: a tier has no price ({costs})",
        )
    line = f"break-even failure rate 1 − {costs.replace(' vs ', ' ÷ ')} = {be:.1%}"
    floor = f'[kinds.{s.kind}]\nfloor = "{s.next_tier}"  # start above {s.start_tier}'
    if s.failure is not None and s.failure.of:
        low, high = s.failure.interval or (0.0, 1.0)
        rate = (
            f"{s.failure.value:.1%} ({s.failure.count} of {s.failure.of}, 95% {low:.1%}–{high:.1%})"
        )
        evidence = f"{s.kind} fails on {s.start_tier} at {rate}; {line}"
        if high < be:
            return Verdict("break_even", s.kind, f"starting on {s.start_tier} pays", True, evidence)
        if low > be:
            return Verdict("break_even", s.kind, f"start on {s.next_tier}", False, evidence, floor)
        return Verdict(
            "break_even",
            s.kind,
            "undecided",
            None,
            evidence + ": the interval straddles it; more tasks will tell",
        )
    if s.failure_given is not None:
        evidence = f"{s.kind} fails on {s.start_tier} at {s.failure_given:.1%} (given); {line}"
        if s.failure_given < be:
            return Verdict("break_even", s.kind, f"starting on {s.start_tier} pays", True, evidence)
        return Verdict("break_even", s.kind, f"start on {s.next_tier}", False, evidence, floor)
    return Verdict(
        "break_even",
        s.kind,
        "measure it",
        None,
        f"{line}; starting on {s.start_tier} pays while fewer than {be:.0%} of {s.kind}'s "
        "tasks fail there",
    )


def judge(
    *,
    spend_usd: Decimal,
    monthly_usd: Decimal,
    tasks_per_month: int,
    days: float,
    kinds: tuple[KindProfile, ...],
    ladder: tuple[str, ...],
    hints: str | None = None,
) -> tuple[tuple[Verdict, ...], str, bool | None]:
    """Every verdict, the overall sentence, and whether routing pays (``None``: it depends)."""
    verdicts = _fleet(spend_usd, monthly_usd, tasks_per_month, days, kinds, ladder)
    for k in sorted(kinds, key=lambda k: (-k.share, k.kind)):
        verdicts += _per_kind(k, ladder, hints)
    against = [v for v in verdicts[:3] if v.pays is False]
    if against:
        reasons = "; ".join(f"{v.topic}: {v.verdict}" for v in against)
        return tuple(verdicts), f"routing does not pay here yet ({reasons})", False
    if all(v.pays for v in verdicts[:3]):
        return tuple(verdicts), "routing pays here; the verdicts per kind say where", True
    return tuple(verdicts), "routing can pay here; the spend and the kinds below decide", None
