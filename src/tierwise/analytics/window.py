"""Routing analytics over a window of the ledger: per kind and starting tier, and for the fleet.

Everything here is a function of the ledger's rows: stored costs are summed, never recomputed
from tokens, and every task is classified by the one definition
(:func:`tierwise.ledger.escalation.task_facts`). A handful of SQLAlchemy Core queries, identical
on SQLite and PostgreSQL, run in one read transaction over the window's task facts (computed once
into a temporary table on SQLite): the counts and sums grouped in SQL, one latency per resolved
task read for the percentiles, the reasons and flags read for the few tasks that have them.

Windows are half-open, [since, until), in UTC, over the tasks *created* in them (a task and all
its attempts count on the day it was created, as in the daily rollups).
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from tierwise.analytics.redline import red_line
from tierwise.analytics.results import (
    Analytics,
    FlagStats,
    GroupStats,
    KindStats,
    Latency,
    Settings,
    SideLine,
    Totals,
    status_of,
)
from tierwise.ledger.escalation import COUNTED_ROLE, reason_of, task_facts
from tierwise.ledger.queries import percentile
from tierwise.ledger.rollups import pruned_before
from tierwise.ledger.schema import attempts, feedback, from_pico, tasks

if TYPE_CHECKING:
    from tierwise.ledger import Ledger

__all__ = ["DEFAULT_WINDOW", "analyze", "analyze_connection", "facts_of", "window_bounds"]

#: The window the analytics cover when none is given.
DEFAULT_WINDOW = timedelta(days=14)
#: The window the red line is judged over, ending at the analytics' ``until``.
RED_LINE_WINDOW = timedelta(days=1)

_UNRESOLVED = ("budget", "error", "running")
Key = tuple[str, str]  # kind, starting tier


def window_bounds(
    since: datetime | None,
    until: datetime | None,
    *,
    now: datetime | None = None,
    window: timedelta = DEFAULT_WINDOW,
) -> tuple[datetime, datetime]:
    """[since, until) in UTC: *until* defaults to *now*, *since* to *until* − *window*.

    Raises:
        ValueError: a naive datetime, or *since* not before *until*.
    """
    for name, value in (("since", since), ("until", until), ("now", now)):
        if value is not None and value.tzinfo is None:
            raise ValueError(f"{name} must be timezone-aware (UTC), got {value!r}")
    end = (until or now or datetime.now(UTC)).astimezone(UTC)
    start = since.astimezone(UTC) if since is not None else end - window
    if start >= end:
        raise ValueError(
            f"the window is empty: since {start.isoformat()} is not before until {end.isoformat()}"
        )
    return start, end


def analyze(
    ledger: Ledger,
    settings: Settings,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    now: datetime | None = None,
    window: timedelta = DEFAULT_WINDOW,
) -> Analytics:
    """The analytics of the tasks created in [since, until) and the red line over the day
    before *until* (see :func:`window_bounds` for the defaults), in one read transaction.

    Raises:
        ValueError: an empty window or a naive datetime.
        LedgerError: the ledger could not be read.
    """
    start, end = window_bounds(since, until, now=now, window=window)
    with ledger.reading() as conn:
        return analyze_connection(conn, settings, since=start, until=end)


def analyze_connection(
    conn: sa.Connection, settings: Settings, *, since: datetime, until: datetime
) -> Analytics:
    """:func:`analyze` on an open connection (for reports that read more in the same
    transaction); *since* and *until* are required and aware."""
    t = tasks.c
    where = [t.created_at >= since, t.created_at < until]
    with facts_of(conn, where, _USED) as facts:
        groups, side, accepted_by_tier = _groups(conn, facts)
        latency = _latencies(conn, facts)
        reasons = _reasons(conn, facts)
        line_since = until - RED_LINE_WINDOW
        if line_since >= since:  # the red line's day is inside the window: read it from there
            line = red_line(conn, settings.red_line, since=line_since, until=until, facts=facts)
        else:
            line = red_line(conn, settings.red_line, since=line_since, until=until)
    flags, group_flags, late = _flags(conn, where, settings, accepted_by_tier)

    stats: list[GroupStats] = []
    for key, (index, raw) in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[1][0], kv[0][1])):
        direct, escalated = latency.get(key, (Latency(), Latency()))
        full = replace(raw, latency_direct=direct, latency_escalated=escalated)
        stats.append(
            GroupStats(
                kind=key[0],
                start_tier=key[1],
                start_index=index,
                totals=full,
                status=status_of(full, settings),
                reasons=dict(reasons.get(key, Counter()).most_common()),
                flags=dict(sorted(group_flags.get(key, {}).items())),
                late_failures=late.get(key, 0),
            )
        )
    kinds = _kinds(stats, settings)
    direct, escalated = latency.get(None, (Latency(), Latency()))
    fleet = replace(
        _sum(g.totals for g in stats), latency_direct=direct, latency_escalated=escalated
    )
    passthrough = side.pop("passthrough", SideLine())
    return Analytics(
        since=since,
        until=until,
        settings=settings,
        fleet=fleet,
        groups=tuple(stats),
        kinds=kinds,
        flags=flags,
        red_line=line,
        passthrough=passthrough,
        excluded=dict(sorted(side.items())),
        pruned_before=pruned_before(conn),
    )


#: The task facts the analytics read (a temporary table holds only these).
_USED = (
    "task_id",
    "kind",
    "role",
    "start_tier",
    "start_index",
    "outcome",
    "final_tier",
    "latency_s",
    "created_at",
    "accepted_index",
    "counted",
    "resolved",
    "escalated",
    "first_try",
    "checked",
    "fallbacks",
    "attempts",
    *(f"{name}_pusd" for name in ("cost", "wasted", "validator", "probe", "shadow")),
)


@contextmanager
def facts_of(
    conn: sa.Connection,
    where: Sequence[sa.ColumnElement[bool]],
    columns: Sequence[str] | None = None,
) -> Iterator[sa.FromClause]:
    """The :func:`~tierwise.ledger.escalation.task_facts` of a window, to read several times.

    *where* bounds ``tasks.created_at``; *columns* are the facts wanted (default: all). They are
    computed once into a temporary table of this connection, dropped on exit: each further query
    then reads a narrow local table instead of joining the ledger's tasks and attempts again.
    Where a temporary table cannot be made (a PostgreSQL read-only standby) they stay a
    subquery, read each time.
    """
    facts = task_facts(where, by_time=True)
    chosen = [facts.c[name] for name in columns] if columns is not None else list(facts.c)
    table = sa.Table(
        f"tierwise_facts_{uuid.uuid4().hex[:12]}",
        sa.MetaData(),
        *(sa.Column(c.name, c.type) for c in chosen),
        prefixes=["TEMPORARY"],
    )
    if conn.dialect.name == "postgresql":  # sort a window's tasks in memory, this transaction only
        conn.exec_driver_sql("SET LOCAL work_mem = '64MB'")
    try:
        with conn.begin_nested():  # a refused CREATE must not abort the read transaction
            table.create(conn)
    except sa.exc.DBAPIError:
        yield facts
        return
    try:
        conn.execute(table.insert().from_select([c.name for c in chosen], sa.select(*chosen)))
        yield table
    finally:
        table.drop(conn)


# -- the grouped counts and sums ---------------------------------------------------------------

_SUMMED = (
    "resolved",
    "escalated",
    "first_try",
    "checked",
    "fallbacks",
    "cost_pusd",
    "wasted_pusd",
    "validator_pusd",
    "probe_pusd",
    "shadow_pusd",
    "attempts",
)


def _groups(
    conn: sa.Connection, facts: sa.FromClause
) -> tuple[
    dict[Key, tuple[int, Totals]], dict[str, SideLine], dict[tuple[str, str], tuple[int, int]]
]:
    """Counted tasks per (kind, starting tier); the other traffic per role (``passthrough`` for
    concrete-model calls); accepted counted tasks per (kind, accepted tier) as (index, count)."""
    f = facts.c
    outcome_counts = [
        sa.func.sum(sa.case((f.outcome == o, 1), else_=0))
        for o in ("accepted", "exhausted", *_UNRESOLVED)
    ]
    rows = conn.execute(
        sa.select(
            f.role,
            f.counted,
            f.kind,
            f.start_tier,
            f.final_tier,
            sa.func.min(f.start_index),
            sa.func.min(f.accepted_index),
            sa.func.count(),
            *outcome_counts,
            *(sa.func.sum(f[name]) for name in _SUMMED),
        ).group_by(f.role, f.counted, f.kind, f.start_tier, f.final_tier)
    ).all()
    counted: dict[Key, list[Any]] = {}
    side: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    accepted_by_tier: dict[tuple[str, str], tuple[int, int]] = {}
    for row in rows:
        role, is_counted, kind, start_tier, final_tier, start_index, accepted_index, n = row[:8]
        outcomes = [int(v or 0) for v in row[8:13]]
        sums = dict(zip(_SUMMED, (int(v or 0) for v in row[13:]), strict=True))
        if not is_counted:
            line = side["passthrough" if role == COUNTED_ROLE else role]
            line[0] += int(n)
            line[1] += sums["attempts"]
            line[2] += sums["cost_pusd"]
            continue
        entry = counted.setdefault((kind, start_tier), [int(start_index), Counter()])
        bucket: Counter[str] = entry[1]
        bucket["tasks"] += int(n)
        for name, value in zip(("accepted", "exhausted", *_UNRESOLVED), outcomes, strict=True):
            bucket[name] += value
        bucket.update(sums)
        if final_tier is not None and outcomes[0]:
            index = int(accepted_index) if accepted_index is not None else -1
            before = accepted_by_tier.get((kind, final_tier), (index, 0))
            accepted_by_tier[(kind, final_tier)] = (before[0], before[1] + outcomes[0])
    groups = {key: (index, _totals(bucket)) for key, (index, bucket) in counted.items()}
    lines = {
        role: SideLine(tasks=v[0], attempts=v[1], cost_usd=from_pico(v[2]))
        for role, v in side.items()
    }
    return groups, lines, accepted_by_tier


def _totals(c: Counter[str]) -> Totals:
    return Totals(
        tasks=c["tasks"],
        resolved=c["resolved"],
        accepted=c["accepted"],
        exhausted=c["exhausted"],
        unresolved={o: c[o] for o in _UNRESOLVED if c[o]},
        escalated=c["escalated"],
        first_try=c["first_try"],
        checked=c["checked"],
        fallbacks=c["fallbacks"],
        cost_usd=from_pico(c["cost_pusd"]),
        wasted_usd=from_pico(c["wasted_pusd"]),
        validator_usd=from_pico(c["validator_pusd"]),
        probe_usd=from_pico(c["probe_pusd"]),
        shadow_usd=from_pico(c["shadow_pusd"]),
    )


def _sum(items: Iterable[Totals]) -> Totals:
    total = Totals()
    unresolved: Counter[str] = Counter()
    for t in items:
        unresolved.update(t.unresolved)
        total = replace(
            total,
            tasks=total.tasks + t.tasks,
            resolved=total.resolved + t.resolved,
            accepted=total.accepted + t.accepted,
            exhausted=total.exhausted + t.exhausted,
            escalated=total.escalated + t.escalated,
            first_try=total.first_try + t.first_try,
            checked=total.checked + t.checked,
            fallbacks=total.fallbacks + t.fallbacks,
            cost_usd=total.cost_usd + t.cost_usd,
            wasted_usd=total.wasted_usd + t.wasted_usd,
            validator_usd=total.validator_usd + t.validator_usd,
            probe_usd=total.probe_usd + t.probe_usd,
            shadow_usd=total.shadow_usd + t.shadow_usd,
        )
    return replace(total, unresolved=dict(sorted(unresolved.items())))


def _kinds(groups: Sequence[GroupStats], settings: Settings) -> tuple[KindStats, ...]:
    by_kind: dict[str, list[GroupStats]] = defaultdict(list)
    for g in groups:
        by_kind[g.kind].append(g)
    out = []
    for kind, members in sorted(by_kind.items()):
        totals = _sum(g.totals for g in members)
        out.append(
            KindStats(
                kind=kind,
                totals=totals,
                status=status_of(totals, settings),
                start_tiers=tuple(g.start_tier for g in members),
            )
        )
    return tuple(out)


# -- latency percentiles ------------------------------------------------------------------------


def _latencies(
    conn: sa.Connection, facts: sa.FromClause
) -> dict[Key | None, tuple[Latency, Latency]]:
    """p50/p95 of resolved counted tasks, direct and escalated, per group (``None``: fleet).

    Percentiles do not add up, so they are taken over the tasks' latencies themselves, by
    linear interpolation between order statistics (numpy's default): in SQL on PostgreSQL
    (``percentile_cont``, the same interpolation), in Python on SQLite, which has no percentile
    function (the latencies are streamed, one float per task; several times faster than SQLite's
    window functions).
    """
    f = facts.c
    where = (f.counted == 1, f.resolved == 1, f.latency_s.is_not(None))
    out: dict[Key | None, tuple[Latency, Latency]] = {}

    def put(group: Key | None, escalated: int, latency: Latency) -> None:
        pair = out.get(group, (Latency(), Latency()))
        out[group] = (pair[0], latency) if escalated else (latency, pair[1])

    if conn.dialect.name == "postgresql":
        ordered = [
            sa.func.percentile_cont(q / 100).within_group(f.latency_s.asc()) for q in (50, 95)
        ]
        rows = conn.execute(
            sa.select(f.kind, f.start_tier, f.escalated, sa.func.count(), *ordered)
            .where(*where)
            .group_by(
                sa.func.grouping_sets(
                    sa.tuple_(f.kind, f.start_tier, f.escalated), sa.tuple_(f.escalated)
                )
            )
        ).all()
        for kind, start_tier, escalated, n, p50, p95 in rows:
            group = None if kind is None else (kind, start_tier)
            put(group, int(escalated), Latency(int(n), float(p50), float(p95)))
        return out
    values: dict[tuple[Key | None, int], list[float]] = defaultdict(list)
    keys: dict[tuple[str, str], Key] = {}
    # yield_per on the statement (on the connection it would stay set for later statements)
    stmt = sa.select(f.kind, f.start_tier, f.escalated, f.latency_s).where(*where)
    for kind, start_tier, escalated, latency in conn.execute(
        stmt.execution_options(yield_per=20_000)
    ):
        key = keys.setdefault((kind, start_tier), (kind, start_tier))
        values[(key, int(escalated))].append(float(latency))
        values[(None, int(escalated))].append(float(latency))
    for (group, escalated), found in values.items():
        put(group, escalated, Latency(len(found), percentile(found, 50), percentile(found, 95)))
    return out


# -- reasons and flags -------------------------------------------------------------------------


def _reasons(conn: sa.Connection, facts: sa.FromClause) -> dict[Key, Counter[str]]:
    """Why escalated tasks left their starting tier: the last own attempt made there."""
    f, a = facts.c, attempts.c
    rows = conn.execute(
        sa.select(
            f.task_id, f.kind, f.start_tier, a.attempt_no, a.outcome, a.failure, a.error_class
        )
        .select_from(
            facts.join(
                attempts,
                sa.and_(a.task_id == f.task_id, a.tier_index == f.start_index, a.role == f.role),
            )
        )
        .where(f.counted == 1, f.escalated == 1)
    ).all()
    last: dict[str, tuple[int, Key, str]] = {}
    for task_id, kind, start_tier, attempt_no, outcome, failure, error_class in rows:
        if task_id not in last or attempt_no > last[task_id][0]:
            last[task_id] = (
                attempt_no,
                (kind, start_tier),
                reason_of(outcome, failure, error_class),
            )
    out: dict[Key, Counter[str]] = defaultdict(Counter)
    for _, key, reason in last.values():
        out[key][reason] += 1
    return out


def _flags(
    conn: sa.Connection,
    where: Sequence[sa.ColumnElement[bool]],
    settings: Settings,
    accepted_by_tier: dict[tuple[str, str], tuple[int, int]],
) -> tuple[tuple[FlagStats, ...], dict[Key, dict[str, int]], dict[Key, int]]:
    """Flags on accepted counted tasks: per (kind, tier that produced the output), per group,
    and the late failures per group (direct tasks flagged ``wrong``, or ``needed_frontier``
    below the top tier)."""
    t, fb = tasks.c, feedback.c
    flagged = [*where, t.id.in_(sa.select(fb.task_id))]
    facts = task_facts(flagged)
    f = facts.c
    rows = conn.execute(
        sa.select(
            f.task_id, f.kind, f.start_tier, f.final_tier, f.accepted_index, f.direct, fb.flag
        )
        .select_from(facts.join(feedback, fb.task_id == f.task_id))
        .where(f.counted == 1, f.outcome == "accepted")
        .distinct()
    ).all()
    per_tier: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    per_group: dict[Key, Counter[str]] = defaultdict(Counter)
    late: dict[Key, set[str]] = defaultdict(set)
    for task_id, kind, start_tier, final_tier, accepted_index, direct, flag in rows:
        per_group[(kind, start_tier)][flag] += 1
        if final_tier is not None:
            per_tier[(kind, final_tier)][flag] += 1
        top = accepted_index is not None and accepted_index >= settings.top_index
        if direct and (flag == "wrong" or (flag == "needed_frontier" and not top)):
            late[(kind, start_tier)].add(task_id)
    stats = []
    for (kind, tier), counts in sorted(per_tier.items()):
        index, accepted = accepted_by_tier.get((kind, tier), (-1, 0))
        stats.append(
            FlagStats(
                kind=kind,
                tier=tier,
                tier_index=index,
                top=index >= settings.top_index,
                accepted=accepted,
                wrong=counts["wrong"],
                needed_frontier=counts["needed_frontier"],
                cheaper_would_do=counts["cheaper_would_do"],
            )
        )
    return (
        tuple(stats),
        {key: dict(c) for key, c in per_group.items()},
        {key: len(ids) for key, ids in late.items()},
    )
