"""The learner's evidence: how each kind does on its floor, and one tier below it (probes).

Everything is read from the ledger by the one definition of escalation
(:func:`tierwise.ledger.escalation.task_facts`), in one read transaction, per kind over its own
window: from the later of the learning window's start and the kind's last move (an applied or
reverted change), to *until* — evidence gathered under an earlier floor says nothing about the
current one, and is never used twice.

**On the floor** (tier *F*): the kind's counted, resolved live tasks that started on *F* and
ran there (a task a probe answered below *F* never ran on *F*). A task *failed on F* when it
escalated (accepted above *F*, or failed on every tier) or was accepted on *F* and then
flagged ``wrong`` or ``needed_frontier`` (a late failure: flags count against the tier that
produced the output). The next tier *F+1* is judged on the tasks that reached it from *F*: it
failed them when it did not accept them, or its accepted output was flagged likewise. Money and
time come from the stored costs and latencies of the tasks' own attempts on *F*, and the token
usage of their accepted attempts there (to price the same work on another tier).

**One tier below** (probes, :mod:`tierwise.cascade.probe`): probe attempts on *F−1* that a
validator judged (provider errors say nothing about quality and are left out); a passing probe
whose output was later flagged ``wrong`` or ``needed_frontier`` counts as a failure, and a task
answered on *F* and flagged ``cheaper_would_do`` counts as one more pass below.

Each count is also split into the two halves of the kind's window, so a proposal can require
the evidence to hold across it rather than in one burst.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from tierwise.analytics import Rate
from tierwise.analytics.redline import red_line
from tierwise.ledger.escalation import task_facts
from tierwise.ledger.schema import TOKEN_COLUMNS, attempts, feedback, from_pico, tasks
from tierwise.pricing import Usage

if TYPE_CHECKING:
    from tierwise.analytics import RedLine
    from tierwise.learning.settings import LearnSettings
    from tierwise.ledger import ChangesInForce, Ledger, PolicyChange
    from tierwise.policy import Policy

__all__ = ["Counts", "Evidence", "FloorEvidence", "KindEvidence", "ProbeEvidence", "gather"]

_LATE = ("wrong", "needed_frontier")
#: The gateway's own kinds that no floor routes: concrete-model calls and plan-execute-review.
_UNMOVABLE = frozenset({"passthrough", "plan-execute"})


@dataclass(frozen=True, slots=True)
class Counts:
    """*failed* of *of*, over the whole window and over each of its halves."""

    failed: int = 0
    of: int = 0
    early: tuple[int, int] = (0, 0)
    late: tuple[int, int] = (0, 0)

    @property
    def rate(self) -> Rate:
        return Rate(self.failed, self.of)

    @property
    def halves(self) -> tuple[Rate, Rate]:
        return Rate(*self.early), Rate(*self.late)

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.rate.as_dict(),
            "halves": [h.as_dict() for h in self.halves],
        }


def _counts(rows: list[tuple[bool, int, int]]) -> Counts:
    """Counts from (late half?, failed, of) rows."""
    early = [0, 0]
    late = [0, 0]
    for is_late, failed, of in rows:
        half = late if is_late else early
        half[0] += failed
        half[1] += of
    return Counts(early[0] + late[0], early[1] + late[1], (early[0], early[1]), (late[0], late[1]))


@dataclass(frozen=True, slots=True)
class FloorEvidence:
    """How a kind's tasks did on its floor tier (see the module docstring)."""

    tier: str
    index: int
    tasks: Counts = Counts()
    escalated: int = 0
    late_failures: int = 0
    next_tier: str | None = None
    next: Counts = Counts()
    cheaper_flags: int = 0
    #: Cost of every own attempt on the floor tier of these tasks, and split by fate.
    floor_cost_usd: Decimal = Decimal(0)
    failed_cost_usd: Decimal = Decimal(0)
    direct_cost_usd: Decimal = Decimal(0)
    #: Tokens of the accepted attempts on the floor tier of tasks accepted there.
    direct_usage: Usage = field(default_factory=Usage)
    direct_tasks: int = 0
    #: Seconds the escalated tasks spent on the floor tier before climbing.
    failed_latency_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "tier": self.tier,
            "tier_index": self.index,
            "failure": self.tasks.as_dict(),
            "escalated": self.escalated,
            "late_failures": self.late_failures,
            "next_tier": self.next_tier,
            "next_tier_failure": self.next.as_dict(),
            "cheaper_would_do": self.cheaper_flags,
            "floor_cost_usd": str(self.floor_cost_usd),
            "failed_cost_usd": str(self.failed_cost_usd),
            "direct_cost_usd": str(self.direct_cost_usd),
            "direct_tasks": self.direct_tasks,
            "failed_latency_s": self.failed_latency_s,
        }


@dataclass(frozen=True, slots=True)
class ProbeEvidence:
    """Probes one tier below a kind's floor (see the module docstring)."""

    tier: str
    index: int
    probes: Counts = Counts()
    passed: int = 0
    rejected: int = 0
    flagged: int = 0
    errors: int = 0
    cheaper_flags: int = 0
    spend_usd: Decimal = Decimal(0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "tier": self.tier,
            "tier_index": self.index,
            "failure": self.probes.as_dict(),
            "passed": self.passed,
            "rejected": self.rejected,
            "flagged_after_passing": self.flagged,
            "errors": self.errors,
            "cheaper_would_do": self.cheaper_flags,
            "spend_usd": str(self.spend_usd),
        }


@dataclass(frozen=True, slots=True)
class KindEvidence:
    """Everything the learner knows about one kind over its window [since, until)."""

    kind: str
    floor: str | None
    floor_index: int
    floor_source: str | None
    since: datetime
    until: datetime
    on_floor: FloorEvidence
    below: ProbeEvidence | None = None
    last_change: PolicyChange | None = None
    override: PolicyChange | None = None
    frontier: bool = False
    #: The kind's escalations beyond the red line's allowance over the window (negative: below).
    red_line_excess: float = 0.0
    #: The fleet's escalation rate over the learning window (``None``: no resolved tasks).
    red_line_rate: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "floor": self.floor,
            "floor_source": self.floor_source,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "on_floor": self.on_floor.as_dict(),
            "below": None if self.below is None else self.below.as_dict(),
            "last_change": None if self.last_change is None else self.last_change.id,
            "override": None if self.override is None else self.override.id,
            "frontier": self.frontier,
            "red_line_excess": self.red_line_excess,
            "fleet_escalation": self.red_line_rate,
        }


@dataclass(frozen=True, slots=True)
class Evidence:
    """The evidence of every kind with tasks in the window, and the fleet against the line."""

    since: datetime
    until: datetime
    kinds: tuple[KindEvidence, ...] = ()
    red_line: RedLine | None = None
    changes: ChangesInForce | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def kind(self, name: str) -> KindEvidence | None:
        return next((k for k in self.kinds if k.kind == name), None)


def gather(
    ledger: Ledger,
    policy: Policy,
    settings: LearnSettings,
    *,
    until: datetime,
    changes: ChangesInForce,
) -> Evidence:
    """The evidence over [until − window, until) of every kind with live tasks there, judged
    against *policy* (the effective one: its floors are the kinds' current floors)."""
    since = until - settings.window
    moves = _last_moves(ledger)
    with ledger.reading() as conn:
        t = tasks.c
        kinds = [
            str(k)
            for (k,) in conn.execute(
                sa.select(t.kind)
                .where(t.created_at >= since, t.created_at < until, t.role == "live")
                .distinct()
                .order_by(t.kind)
            ).all()
        ]
        kinds = [k for k in kinds if k not in _UNMOVABLE]
        line = red_line(conn, settings.red_line, since=since, until=until)
        excess = {c.kind: c.excess for c in line.contributors}
        found = []
        for kind in kinds:
            config = policy.kind(kind)
            floor = config.floor
            index = policy.tier_index(floor) if floor is not None else 0
            last = moves.get(kind)
            start = since
            if last is not None and last.decided_at is not None and last.decided_at > start:
                start = min(last.decided_at, until)
            found.append(
                KindEvidence(
                    kind=kind,
                    floor=floor,
                    floor_index=index,
                    floor_source=config.floor_source,
                    since=start,
                    until=until,
                    on_floor=_on_floor(conn, kind, index, settings.ladder, start, until),
                    below=(
                        _below(conn, kind, index - 1, settings.ladder, start, until)
                        if index >= 1
                        else None
                    ),
                    last_change=last,
                    override=changes.overrides.get(kind),
                    frontier=kind in settings.frontier_kinds,
                    red_line_excess=excess.get(kind, 0.0),
                    red_line_rate=line.rate.value,
                )
            )
    return Evidence(since, until, tuple(found), line, changes)


def _last_moves(ledger: Ledger) -> dict[str, PolicyChange]:
    """Each kind's latest decided change that moved (or un-moved) its floor."""
    out: dict[str, PolicyChange] = {}
    for change in ledger.policy_changes(status=("applied", "reverted")):
        if change.kind is None or change.decided_at is None:
            continue
        seen = out.get(change.kind)
        if seen is None or (seen.decided_at is not None and change.decided_at > seen.decided_at):
            out[change.kind] = change
    return out


def _half(column: Any, since: datetime, until: datetime) -> sa.ColumnElement[int]:
    middle = since + (until - since) / 2
    return sa.case((column >= middle, 1), else_=0)


def _flagged(task_id: Any, flags: tuple[str, ...]) -> sa.ColumnElement[int]:
    fb = feedback.c
    found = sa.exists(sa.select(fb.id).where(fb.task_id == task_id, fb.flag.in_(flags)))
    return sa.case((found, 1), else_=0)


def _on_floor(
    conn: sa.Connection,
    kind: str,
    index: int,
    ladder: tuple[str, ...],
    since: datetime,
    until: datetime,
) -> FloorEvidence:
    t = tasks.c
    facts = task_facts(
        [
            t.kind == kind,
            t.created_at >= since,
            t.created_at < until,
            t.decision_tier_index == index,
        ],
        by_time=True,
    )
    f = facts.c
    ran = (f.counted == 1, f.resolved == 1, f.own_attempts > 0)
    late_half = _half(f.created_at, since, until).label("late_half")
    late_flag = _flagged(f.task_id, _LATE).label("late_flag")
    cheaper = _flagged(f.task_id, ("cheaper_would_do",)).label("cheaper")
    rows = conn.execute(
        sa.select(late_half, f.escalated, f.accepted_index, late_flag, cheaper, sa.func.count())
        .where(*ran)
        .group_by(late_half, f.escalated, f.accepted_index, late_flag, cheaper)
    ).all()
    own: list[tuple[bool, int, int]] = []
    nxt: list[tuple[bool, int, int]] = []
    escalated = late_failures = cheaper_flags = 0
    for half, esc, accepted_index, flagged, cheap, n in rows:
        n = int(n)
        if esc:
            escalated += n
            own.append((bool(half), n, n))
            passed_next = accepted_index == index + 1 and not flagged
            nxt.append((bool(half), 0 if passed_next else n, n))
        else:
            late = n if flagged else 0
            late_failures += late
            cheaper_flags += n if cheap else 0
            own.append((bool(half), late, n))

    a = attempts.c
    on_tier = facts.join(
        attempts, sa.and_(a.task_id == f.task_id, a.role == f.role, a.tier_index == index)
    )
    accepted = a.outcome == "accepted"
    money = conn.execute(
        sa.select(
            f.escalated,
            sa.func.count(sa.distinct(f.task_id)),
            sa.func.sum(a.cost_pusd),
            sa.func.sum(a.latency_s),
            *(sa.func.sum(sa.case((accepted, a[name]), else_=0)) for name in TOKEN_COLUMNS),
        )
        .select_from(on_tier)
        .where(*ran)
        .group_by(f.escalated)
    ).all()
    costs = {0: Decimal(0), 1: Decimal(0)}
    latency = 0.0
    usage = Usage()
    direct_tasks = 0
    for esc, n, cost, seconds, *tokens in money:
        costs[int(esc)] = from_pico(cost)
        if esc:
            latency = float(seconds or 0.0)
        else:
            direct_tasks = int(n)
            usage = Usage(*(int(v or 0) for v in tokens))
    return FloorEvidence(
        tier=ladder[index],
        index=index,
        tasks=_counts(own),
        escalated=escalated,
        late_failures=late_failures,
        next_tier=ladder[index + 1] if index + 1 < len(ladder) else None,
        next=_counts(nxt),
        cheaper_flags=cheaper_flags,
        floor_cost_usd=costs[0] + costs[1],
        failed_cost_usd=costs[1],
        direct_cost_usd=costs[0],
        direct_usage=usage,
        direct_tasks=direct_tasks,
        failed_latency_s=latency,
    )


def _below(
    conn: sa.Connection,
    kind: str,
    index: int,
    ladder: tuple[str, ...],
    since: datetime,
    until: datetime,
) -> ProbeEvidence:
    a, t = attempts.c, tasks.c
    late_half = _half(t.created_at, since, until).label("late_half")
    late_flag = _flagged(t.id, _LATE).label("late_flag")
    rows = conn.execute(
        sa.select(late_half, a.outcome, late_flag, sa.func.count(), sa.func.sum(a.cost_pusd))
        .select_from(attempts.join(tasks, a.task_id == t.id))
        .where(
            t.kind == kind,
            t.created_at >= since,
            t.created_at < until,
            t.role == "live",
            a.role == "probe",
            a.tier_index == index,
        )
        .group_by(late_half, a.outcome, late_flag)
    ).all()
    judged: list[tuple[bool, int, int]] = []
    passed = rejected = flagged = errors = 0
    spend = 0
    for half, outcome, is_flagged, n, cost in rows:
        n = int(n)
        spend += int(cost or 0)
        if outcome == "accepted":
            passed += n
            if is_flagged:
                flagged += n
            judged.append((bool(half), n if is_flagged else 0, n))
        elif outcome == "rejected":
            rejected += n
            judged.append((bool(half), n, n))
        else:
            errors += n
    # a task answered on the floor and flagged "cheaper would do": one more pass below it
    floor = task_facts(
        [
            t.kind == kind,
            t.created_at >= since,
            t.created_at < until,
            t.decision_tier_index == index + 1,
        ],
        by_time=True,
    )
    f = floor.c
    f_half = _half(f.created_at, since, until).label("late_half")
    cheaper_rows = conn.execute(
        sa.select(f_half, sa.func.count())
        .where(
            f.counted == 1,
            f.outcome == "accepted",
            f.accepted_index == index + 1,
            _flagged(f.task_id, ("cheaper_would_do",)) == 1,
        )
        .group_by(f_half)
    ).all()
    cheaper = 0
    for half, n in cheaper_rows:
        cheaper += int(n)
        judged.append((bool(half), 0, int(n)))
    return ProbeEvidence(
        tier=ladder[index],
        index=index,
        probes=_counts(judged),
        passed=passed,
        rejected=rejected,
        flagged=flagged,
        errors=errors,
        cheaper_flags=cheaper,
        spend_usd=from_pico(spend),
    )
