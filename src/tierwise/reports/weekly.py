"""The weekly routing report: where the money went, and whether quality held.

:func:`weekly_report` answers, for the tasks created in a window (default: the last 7 days):
spend per UTC day; average cost per session and per accepted task; the tier mix by calls and by
money; escalation per kind against the red line; money spent on attempts that were thrown away;
latency p50/p95 of direct against escalated tasks; spend per gateway key and per session (the
top N); the top kinds by spend with the tier they start on now and any open learning proposal
about them; probe and shadow spend on their own lines; the **routing efficiency ratio** with
its parts; and **estimates** of the same work on the strongest tier and on each single tier.

Every actual figure is a sum of the ledger's stored costs (exact, pico-USD) and every rate
follows the analytics' definitions (:mod:`tierwise.reports.measures`); the figures come from the
kept hourly summary (:mod:`tierwise.ledger.summary_store`), which is exactly what the rows say.

*Sessions* are the ``session_id`` a task carries — ``Task(session=...)`` in the library, the
``x-tierwise-session`` header at the gateway; average cost per session is the spend of tasks
that carry one ÷ the distinct sessions among them. A session's and a gateway key's spend is
their tasks' own, as ``tierwise explain`` shows it: shadow calls are the shadow budget's and
stay on their own line.

The **routing efficiency ratio** is the share of resolved counted tasks (live traffic on the
ladder, accepted or failed on every tier) that were accepted on their first attempt and that
nobody flagged ``needed_frontier``, ``wrong`` or ``cheaper_would_do``.

**Estimates** price the counted tasks' own work — per task, the input buckets of its first own
attempt and the output of its accepted one — on one tier's primary model, once per task, with
the pricing catalog (policy overrides first) as of the window's end. They assume every call on
that tier would have passed; they are estimates, and say so.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from tierwise.analytics import Rate, Settings, Totals, window_bounds
from tierwise.ledger.rollups import pruned_before
from tierwise.ledger.schema import from_pico, policy_changes, to_pico
from tierwise.reports import measures as m

if TYPE_CHECKING:
    from tierwise.ledger import Ledger
    from tierwise.ledger.summary_store import SummaryProgress, WindowSummary
    from tierwise.policy import Policy
    from tierwise.pricing import Usage

__all__ = [
    "DEFAULT_REPORT_WINDOW",
    "DaySpend",
    "Efficiency",
    "Estimate",
    "Proposal",
    "Spender",
    "TopKind",
    "WeeklyReport",
    "open_proposals",
    "weekly_report",
]

#: The window ``tierwise report`` covers when none is given.
DEFAULT_REPORT_WINDOW = timedelta(days=7)


def _usd(pico: int) -> str:
    return str(from_pico(pico))


@dataclass(frozen=True, slots=True)
class Proposal:
    """An open learning proposal (a ``policy_changes`` row with ``status = 'proposed'``).

    The learner writes ``change_json`` as a JSON object with at least ``floor_before`` and
    ``floor_after`` (tier names or null); other keys are kept in ``change`` as they are.
    """

    id: int
    kind: str | None
    floor_before: str | None
    floor_after: str | None
    reason: str | None
    created_at: datetime
    change: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "floor_before": self.floor_before,
            "floor_after": self.floor_after,
            "reason": self.reason,
            "created_at": self.created_at.isoformat(),
        }


def open_proposals(conn: sa.Connection) -> tuple[Proposal, ...]:
    """Every open learning proposal, oldest first (a row whose change is not a JSON object is
    shown with unknown floors rather than dropped)."""
    c = policy_changes.c
    out = []
    for pid, kind, raw, reason, created in conn.execute(
        sa.select(c.id, c.kind, c.change_json, c.reason, c.created_at)
        .where(c.status == "proposed")
        .order_by(c.created_at, c.id)
    ):
        try:
            change = json.loads(raw)
        except ValueError:
            change = None
        change = change if isinstance(change, dict) else {}
        out.append(
            Proposal(
                id=int(pid),
                kind=kind,
                floor_before=_tier_name(change.get("floor_before")),
                floor_after=_tier_name(change.get("floor_after")),
                reason=reason,
                created_at=created,
                change=change,
            )
        )
    return tuple(out)


def _tier_name(value: object) -> str | None:
    return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class DaySpend:
    """One UTC day: tasks created, their spend; ``partial`` when the window cuts the day."""

    day: date
    tasks: int
    spend_usd: Decimal
    partial: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "tasks": self.tasks,
            "spend_usd": str(self.spend_usd),
            "partial": self.partial,
        }


@dataclass(frozen=True, slots=True)
class Spender:
    """A gateway key or a session: its tasks and what they cost."""

    id: str | None
    name: str | None
    tasks: int
    spend_usd: Decimal

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "tasks": self.tasks,
            "spend_usd": str(self.spend_usd),
        }


@dataclass(frozen=True, slots=True)
class TopKind:
    """A kind among the dearest: its spend, where its tasks started, where it starts now."""

    kind: str
    tasks: int
    spend_usd: Decimal
    share: float | None
    start_tiers: dict[str, int]
    current_tier: str | None
    floor: str | None
    floor_source: str | None
    proposals: tuple[Proposal, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "tasks": self.tasks,
            "spend_usd": str(self.spend_usd),
            "share": self.share,
            "start_tiers": dict(self.start_tiers),
            "current_tier": self.current_tier,
            "floor": self.floor,
            "floor_source": self.floor_source,
            "proposals": [p.as_dict() for p in self.proposals],
        }


@dataclass(frozen=True, slots=True)
class Efficiency:
    """The routing efficiency ratio and its parts (see the module docstring)."""

    resolved: int
    first_try: int
    flagged: dict[str, int]
    flagged_any: int

    @property
    def efficient(self) -> int:
        return self.first_try - self.flagged_any

    @property
    def ratio(self) -> Rate:
        return Rate(self.efficient, self.resolved)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ratio": self.ratio.as_dict(),
            "resolved": self.resolved,
            "first_try": self.first_try,
            "first_try_flagged": dict(self.flagged),
            "first_try_flagged_any": self.flagged_any,
            "efficient": self.efficient,
        }


@dataclass(frozen=True, slots=True)
class Estimate:
    """An estimate of the counted tasks on one tier (``cost_usd`` ``None`` when unpriced)."""

    tier: str
    model: str
    cost_usd: Decimal | None
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "tier": self.tier,
            "model": self.model,
            "cost_usd": None if self.cost_usd is None else str(self.cost_usd),
            "estimate": True,
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class WeeklyReport:
    """The weekly report (see the module docstring); ``as_dict()`` is ``--json``."""

    since: datetime
    until: datetime
    settings: Settings
    lines: m.Lines
    days: tuple[DaySpend, ...]
    fleet: Totals
    kinds: dict[str, Totals]
    tier_mix: tuple[m.TierShare, ...]
    sessions: int
    session_tasks: int
    session_spend_usd: Decimal
    top_sessions: tuple[Spender, ...]
    top_keys: tuple[Spender, ...]
    top_kinds: tuple[TopKind, ...]
    efficiency: Efficiency
    flags: dict[str, Rate]
    work_tasks: int
    work: Usage
    estimates: tuple[Estimate, ...]
    proposals: tuple[Proposal, ...]
    source: dict[str, Any]
    pruned_before: date | None = None

    @property
    def total_usd(self) -> Decimal:
        return from_pico(self.lines.total)

    @property
    def per_session_usd(self) -> Decimal | None:
        """Spend of the tasks that carry a session ÷ sessions (half-even to the pico-dollar)."""
        if not self.sessions:
            return None
        return from_pico(to_pico(self.session_spend_usd / self.sessions))

    @property
    def routed_usd(self) -> Decimal:
        return from_pico(self.lines.routed)

    def above_line(self, totals: Totals) -> bool:
        value = totals.escalation.value
        return value is not None and value > self.settings.red_line

    def as_dict(self) -> dict[str, Any]:
        f = self.fleet
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "spend": self.lines.as_dict(),
            "days": [d.as_dict() for d in self.days],
            "per_session_usd": None if self.per_session_usd is None else str(self.per_session_usd),
            "sessions": self.sessions,
            "session_tasks": self.session_tasks,
            "per_accepted_task_usd": None
            if f.cost_per_accepted_usd is None
            else str(f.cost_per_accepted_usd),
            "tier_mix": [t.as_dict() for t in self.tier_mix],
            "red_line": self.settings.red_line,
            "escalation": {**f.escalation.as_dict(), "above_red_line": self.above_line(f)},
            "kinds": [
                {
                    "kind": kind,
                    "resolved": t.resolved,
                    "escalated": t.escalated,
                    "escalation": t.escalation.as_dict(),
                    "above_red_line": self.above_line(t),
                    "cost_usd": str(t.cost_usd),
                    "wasted_usd": str(t.wasted_usd),
                }
                for kind, t in self.kinds.items()
            ],
            "wasted_usd": str(f.wasted_usd),
            "latency": {
                "direct": f.latency_direct.as_dict(),
                "escalated": f.latency_escalated.as_dict(),
            },
            "fleet": f.as_dict(),
            "top_keys": [k.as_dict() for k in self.top_keys],
            "top_sessions": [s.as_dict() for s in self.top_sessions],
            "top_kinds": [k.as_dict() for k in self.top_kinds],
            "routing_efficiency": self.efficiency.as_dict(),
            "flags": {flag: rate.as_dict() for flag, rate in self.flags.items()},
            "estimates": {
                "estimate": True,
                "basis": "each counted task once on the tier's primary model, its own tokens "
                "(first attempt's input, accepted attempt's output), catalog prices",
                "tasks": self.work_tasks,
                "tokens": self.work.as_dict(),
                "actual_routed_usd": str(self.routed_usd),
                "tiers": [e.as_dict() for e in self.estimates],
            },
            "proposals": [p.as_dict() for p in self.proposals],
            "source": dict(self.source),
            "pruned_before": None if self.pruned_before is None else self.pruned_before.isoformat(),
        }


def weekly_report(
    ledger: Ledger,
    policy: Policy,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    now: datetime | None = None,
    top: int = 5,
    keep: bool = True,
    from_rows: bool = False,
    progress: SummaryProgress | None = None,
) -> WeeklyReport:
    """The weekly report of the tasks created in [since, until) (default: the 7 days before
    *now*), in UTC.

    *keep*: keep the summaries of ended hours for the next report (see
    :meth:`tierwise.ledger.Ledger.report_summary`); *from_rows*: compute everything from the
    rows (slow; the same figures).

    Raises:
        ValueError: an empty window, a naive datetime, or *top* < 1.
        LedgerError: the ledger could not be read.
    """
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    clock = now or datetime.now(UTC)
    start, end = window_bounds(since, until, now=clock, window=DEFAULT_REPORT_WINDOW)
    # Where a kind starts now is the file plus the learner's and people's changes in force.
    from tierwise.learning import effective_policy

    policy, _ = effective_policy(policy, ledger, now=clock)
    window = ledger.report_summary(
        start, end, now=clock, keep=keep, from_rows=from_rows, progress=progress
    )
    with ledger.reading() as conn:
        flags = m.flag_facts(conn, start, end)
        names = m.key_names(conn)
        proposals = open_proposals(conn)
        cut = pruned_before(conn)
    return build_report(window, policy, flags, names, proposals, top=top, pruned=cut)


def build_report(
    window: WindowSummary,
    policy: Policy,
    flags: m.FlagFacts,
    names: dict[int, str],
    proposals: tuple[Proposal, ...],
    *,
    top: int,
    pruned: date | None = None,
) -> WeeklyReport:
    """The report of a window's summary and the facts read beside it."""
    summary = window.summary
    start, end = window.since, window.until
    fleet = m.fleet_totals(summary)
    days = tuple(
        DaySpend(
            day=day,
            tasks=n,
            spend_usd=from_pico(spend),
            partial=_midnight(day) < start or _midnight(day) + timedelta(days=1) > end,
        )
        for day, (n, spend) in m.day_spend(summary).items()
    )
    sessions = m.session_spend(summary)
    keys = m.key_spend(summary)
    by_kind = m.spend_by(summary, 1)
    total = sum(spend for _, spend in by_kind.values())
    tiers_of = m.start_tiers(summary)
    route = _router(policy)
    top_kinds = []
    for kind, (n, spend) in list(by_kind.items())[:top]:
        config = policy.kind(kind)
        top_kinds.append(
            TopKind(
                kind=kind,
                tasks=n,
                spend_usd=from_pico(spend),
                share=spend / total if total else None,
                start_tiers=dict(tiers_of.get(kind, {})),
                current_tier=route(kind),
                floor=config.floor,
                floor_source=config.floor_source,
                proposals=tuple(p for p in proposals if p.kind == kind),
            )
        )
    n_work, work = m.work_usage(summary)
    return WeeklyReport(
        since=start,
        until=end,
        settings=Settings.from_policy(policy),
        lines=m.lines_of(summary),
        days=days,
        fleet=fleet,
        kinds=m.kind_totals(summary),
        tier_mix=m.tier_mix(summary),
        sessions=len(sessions),
        session_tasks=sum(n for n, _ in sessions.values()),
        session_spend_usd=from_pico(sum(c for _, c in sessions.values())),
        top_sessions=tuple(
            Spender(sid, None, n, from_pico(c)) for sid, (n, c) in list(sessions.items())[:top]
        ),
        top_keys=tuple(
            Spender(
                None if key_id is None else str(key_id),
                None if key_id is None else names.get(int(key_id)),
                n,
                from_pico(c),
            )
            for key_id, (n, c) in list(keys.items())[:top]
        ),
        top_kinds=tuple(top_kinds),
        efficiency=Efficiency(
            resolved=fleet.resolved,
            first_try=fleet.first_try,
            flagged=dict(flags.first_try),
            flagged_any=flags.first_try_any,
        ),
        flags=flags.rates(fleet.accepted),
        work_tasks=n_work,
        work=work,
        estimates=estimates(policy, work, end),
        proposals=proposals,
        source={
            "kept_hours": len(window.kept),
            "summarised_now": len(window.summarised),
            "from_rows": [[a.isoformat(), b.isoformat()] for a, b in window.from_rows],
            "pending_tasks": window.pending,
            "notes": list(window.notes),
        },
        pruned_before=pruned,
    )


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def _router(policy: Policy) -> Callable[[str], str | None]:
    """Where a task of a kind, with nothing else known about it, starts under *policy*."""
    from tierwise.routing import Router
    from tierwise.task import Task

    router = Router(policy)

    def route(kind: str) -> str | None:
        try:
            return router.route(Task.create(kind)).tier
        except (ValueError, TypeError):  # a kind name the Task model refuses
            return None

    return route


def estimates(policy: Policy, work: Usage, at: datetime) -> tuple[Estimate, ...]:
    """*work* priced once on each tier's primary model (catalog as of *at*), bottom tier first."""
    from tierwise.errors import PricingError
    from tierwise.pricing import PriceCatalog, cost_of

    catalog = PriceCatalog(policy.model.prices, at=at)
    out = []
    for name in policy.ladder:
        tier = policy.tier(name)
        try:
            prices = catalog.prices_for(tier.model, tier.provider)
        except PricingError as exc:
            out.append(Estimate(name, tier.model, None, f"not priced: {exc}"))
            continue
        out.append(Estimate(name, tier.model, from_pico(to_pico(cost_of(work, prices)))))
    return tuple(out)
