"""Should you route? The articles' reasons, as verdicts with their evidence and a policy change.

:func:`advise` reads a window of the ledger (default: the last 30 days); :func:`advise_workload`
takes a workload described by hand (:mod:`tierwise.reports.workload`) when there is no history.
Both build one :class:`KindProfile` per kind and judge the same way:

* **spend** — below about $500 a month tiering rarely repays its upkeep: one tier you trust;
* **volume** — under about 10,000 tasks a month the overhead is not worth it; past 100,000 it is;
* **variety** — routing needs kinds to route between: one kind doing nearly all the work has
  nothing to separate;
* **a cheap quality signal per kind** — a validator that is not itself a model call. Without
  one: "send it to one tier you trust". A model-call check lets escalation eat the savings;
* **same answer for every user** — a kind marked so gets pinned to one tier;
* **quality dominates cost** — a kind marked so, or one people often flag ``needed_frontier``,
  goes on the must-stay-frontier list;
* **break-even per cascade** — starting cheap pays only while the starting tier's failure rate
  stays below 1 − (its cost ÷ the next tier's cost) for the kind's own tokens. Judged on the
  rate's 95% interval: wholly below pays, wholly above does not, across is undecided.

Every verdict names its evidence and the policy change it suggests (TOML to paste). From the
ledger, the spend, tasks, escalation and flags are the weekly report's own figures for the same
window (:mod:`tierwise.reports.measures`); monthly figures scale the window's to 30 days of the
history it covers.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from tierwise.analytics import window_bounds
from tierwise.ledger.schema import from_pico, to_pico
from tierwise.reports import measures as m
from tierwise.reports.verdicts import CascadeStep, KindProfile, Verdict, judge
from tierwise.reports.workload import WorkloadFile

if TYPE_CHECKING:
    from tierwise.ledger import Ledger
    from tierwise.policy import Policy
    from tierwise.pricing import ModelPrices, Usage, Workload

__all__ = [
    "DEFAULT_ADVICE_WINDOW",
    "Advice",
    "advise",
    "advise_workload",
]

DEFAULT_ADVICE_WINDOW = timedelta(days=30)
_MONTH_DAYS = 30


@dataclass(frozen=True, slots=True)
class Advice:
    """The advisor's answer: the overall verdict, each reason, and the numbers behind them."""

    source: str  # "ledger" or "workload"
    since: datetime | None
    until: datetime | None
    days: float
    spend_usd: Decimal
    monthly_usd: Decimal
    tasks: int
    tasks_per_month: int
    kinds: tuple[KindProfile, ...]
    verdicts: tuple[Verdict, ...]
    overall: str
    pays: bool | None
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "since": None if self.since is None else self.since.isoformat(),
            "until": None if self.until is None else self.until.isoformat(),
            "days": self.days,
            "spend_usd": str(self.spend_usd),
            "monthly_usd": str(self.monthly_usd),
            "tasks": self.tasks,
            "tasks_per_month": self.tasks_per_month,
            "overall": self.overall,
            "pays": self.pays,
            "verdicts": [v.as_dict() for v in self.verdicts],
            "kinds": [k.as_dict() for k in self.kinds],
            "notes": list(self.notes),
        }


# -- from the ledger ------------------------------------------------------------------------------


def _price(policy: Policy, at: datetime) -> dict[str, ModelPrices | None]:
    from tierwise.errors import PricingError
    from tierwise.pricing import PriceCatalog

    catalog = PriceCatalog(policy.model.prices, at=at)
    out: dict[str, ModelPrices | None] = {}
    for name in policy.ladder:
        tier = policy.tier(name)
        try:
            out[name] = catalog.prices_for(tier.model, tier.provider)
        except PricingError:
            out[name] = None
    return out


def _per_task(usage: Usage, tasks: int, prices: ModelPrices | None) -> Decimal | None:
    from tierwise.pricing import cost_of

    if prices is None or not tasks:
        return None
    return from_pico(to_pico(cost_of(usage, prices) / tasks))


def advise(
    ledger: Ledger,
    policy: Policy,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    now: datetime | None = None,
    hints: WorkloadFile | None = None,
    keep: bool = True,
) -> Advice:
    """Advice from the tasks created in [since, until) (default: the 30 days before *now*).

    Raises:
        ValueError: an empty window or a naive datetime.
        LedgerError: the ledger could not be read.
    """
    clock = now or datetime.now(UTC)
    start, end = window_bounds(since, until, now=clock, window=DEFAULT_ADVICE_WINDOW)
    window = ledger.report_summary(start, end, now=clock, keep=keep)
    with ledger.reading() as conn:
        flags = m.flag_facts(conn, start, end)
    summary = window.summary
    spent = m.lines_of(summary).total
    spend = from_pico(spent)
    tasks = sum(n for n, _ in m.day_spend(summary).values())
    first = min((h for h, n in summary.counts.items() if n), default=start)
    # the history the window holds, never less than a day: a burst of minutes is no month
    held = max(end - max(start, first), min(timedelta(days=1), end - start))
    micro = timedelta(microseconds=1)
    scale = Fraction(timedelta(days=_MONTH_DAYS) // micro, held // micro)  # exact
    covered = held.total_seconds() / 86400
    monthly = from_pico(round(spent * scale))
    kinds_totals = m.kind_totals(summary)
    starts = m.by_start(summary)
    answers = m.answer_tiers(summary)
    prices = _price(policy, end)
    ladder = tuple(policy.ladder)
    counted = sum(t.tasks for t in kinds_totals.values())
    profiles = []
    for kind, totals in kinds_totals.items():
        config = policy.kind(kind)
        hint = hints.kind(kind) if hints is not None else None
        cascades = []
        for (k, start_tier), (index, t) in starts.items():
            if k != kind or index < 0 or index + 1 >= len(ladder) or not t.resolved:
                continue
            n, usage = m.work_usage(summary, kind, start_tier)
            nxt = ladder[index + 1]
            cascades.append(
                CascadeStep(
                    kind,
                    start_tier,
                    nxt,
                    t.resolved,
                    t.escalation,
                    None,
                    _per_task(usage, n, prices.get(start_tier)),
                    _per_task(usage, n, prices[nxt]),
                )
            )
        profiles.append(
            KindProfile(
                kind=kind,
                tasks=totals.tasks,
                share=totals.tasks / counted if counted else 0.0,
                spend_usd=totals.cost_usd,
                validators=tuple(spec.type for spec in config.validators),
                checked=totals.checked,
                validator_usd=totals.validator_usd,
                answers=dict(answers.get(kind, Counter())),
                flags=flags.rates(totals.accepted, kind),
                same_answer=hint.same_answer if hint else False,
                quality_first=hint.quality_first if hint else False,
                cascades=tuple(cascades),
            )
        )
    per_month = round(tasks * scale)  # an exact rational, rounded half-even
    verdicts, overall, pays = judge(
        spend_usd=spend,
        monthly_usd=monthly,
        tasks_per_month=per_month,
        days=round(covered, 2),
        kinds=tuple(profiles),
        ladder=ladder,
        hints=str(hints.path) if hints is not None else None,
    )
    notes = []
    if tasks and covered < 7:
        notes.append(
            f"only {covered:g} day{'' if covered == 1 else 's'} of history: monthly figures "
            "are extrapolated from them"
        )
    if not tasks:
        notes.append("no tasks in this window: describe the workload instead (--workload FILE)")
    return Advice(
        "ledger",
        start,
        end,
        round(covered, 2),
        spend,
        monthly,
        tasks,
        per_month,
        tuple(profiles),
        verdicts,
        overall,
        pays,
        tuple(notes),
    )


# -- from a workload described by hand ------------------------------------------------------------


def advise_workload(
    workload: Workload, tiers: dict[str, ModelPrices], kinds: WorkloadFile
) -> Advice:
    """Advice for a workload with no history: *workload* from ``tierwise cost``'s flags, *tiers*
    its prices in ladder order, *kinds* the file listing each kind.

    The monthly spend judged is the workload on the top tier (what a team pays before it
    routes); each kind's cascade from its ``start_tier`` (default: the bottom tier) is judged on
    its ``failure_rate`` when the file gives one.
    """
    from dataclasses import replace

    from tierwise.pricing.whatif import per_task_cost

    ladder = tuple(tiers)
    top = ladder[-1]
    per_day = Decimal(workload.tasks_per_day)
    days_month = Decimal(workload.days_per_month)
    monthly = Decimal(0)
    profiles = []
    for k in kinds.kinds:
        own = replace(
            workload,
            input_tokens=k.input_tokens if k.input_tokens is not None else workload.input_tokens,
            output_tokens=k.output_tokens
            if k.output_tokens is not None
            else workload.output_tokens,
        )
        n_month = per_day * days_month * Decimal(repr(k.share))
        spend = per_task_cost(own, tiers[top]) * n_month
        monthly += spend
        start = k.start_tier or ladder[0]
        cascades: tuple[CascadeStep, ...] = ()
        index = ladder.index(start) if start in ladder else len(ladder) - 1
        if index + 1 < len(ladder):
            nxt = ladder[index + 1]
            cascades = (
                CascadeStep(
                    k.kind,
                    start,
                    nxt,
                    0,
                    None,
                    k.failure_rate,
                    per_task_cost(own, tiers[start]),
                    per_task_cost(own, tiers[nxt]),
                ),
            )
        profiles.append(
            KindProfile(
                kind=k.kind,
                tasks=int(n_month),
                share=k.share,
                spend_usd=from_pico(to_pico(spend)),
                validators=tuple(v for v in k.validator.split(",") if v != "none"),
                same_answer=k.same_answer,
                quality_first=k.quality_first,
                cascades=cascades,
            )
        )
    monthly = from_pico(to_pico(monthly))
    tasks_month = int(per_day * days_month)
    verdicts, overall, pays = judge(
        spend_usd=monthly,
        monthly_usd=monthly,
        tasks_per_month=tasks_month,
        days=0,
        kinds=tuple(profiles),
        ladder=ladder,
        hints=str(kinds.path),
    )
    note = f"monthly spend is the workload on the top tier ({top}), before routing"
    return Advice(
        "workload",
        None,
        None,
        float(days_month),
        monthly,
        monthly,
        tasks_month,
        tasks_month,
        tuple(profiles),
        verdicts,
        overall,
        pays,
        (note,),
    )
