"""Exact daily rollups, and pruning old rows into them.

A ledger grows by a few rows per task. ``tierwise ledger prune --before DATE`` deletes old tasks
and attempts but first adds them to ``daily_rollups``: one row per UTC day × kind × tier × role
with integer totals (pico-USD money, token and outcome counts), so spend, waste and escalation
per day stay exact after the rows are gone. The same aggregation (:func:`aggregate`, one SQL
query per measure family, identical on SQLite and Postgres) builds the rollup of a batch being
pruned and the totals of rows still in the ledger, and :func:`daily` sums both: its answer does
not change when rows are pruned, which a test checks against a by-hand count.

Conventions (also in :data:`tierwise.ledger.schema.daily_rollups`):

* Everything of a task counts on the UTC day its task was created (an attempt that started after
  midnight still belongs to its task's day), under the task's role (``live``, ``probe``,
  ``replay``; validator calls count with their task, as in ``ledger stats``).
* Task columns (``tasks``, ``tasks_<outcome>``, ``tasks_escalated``, ``task_cost_pusd``,
  ``task_latency_s_sum`` over ``tasks_timed`` finished tasks) are keyed by the tier the router
  chose; attempt columns (``attempts``, outcomes, costs, tokens, ``validator_*``) by the tier
  the attempt ran on. Escalation follows the one definition (:mod:`tierwise.ledger.escalation`):
  ``tier_tasks`` counts the resolved (accepted or exhausted) tasks that started on the tier,
  ``tier_escalated`` (and ``tasks_escalated``, the same count) those that escalated; their
  ratio over the ``live`` rows is the escalation rate ``tierwise learn status`` shows. (Days
  pruned by a tierwise older than that definition counted "tasks whose attempts tried the tier,
  and of those the ones that climbed higher" in these two columns.)
* Latency percentiles cannot be summed: only the sum and count are kept.

Rows are additive: every pruned batch inserts its own rows in the same transaction as it deletes
the batch, so rollups plus remaining rows are exact at every instant, even if pruning stops half
way; afterwards each day is compacted to one row per group. Adding a dimension later (a gateway
key) is one migration adding the column and one more term in :data:`_DIMENSIONS`' GROUP BYs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from tierwise.ledger.escalation import task_facts
from tierwise.ledger.schema import (
    TOKEN_COLUMNS,
    attempts,
    budget_counters,
    daily_rollups,
    feedback,
    from_pico,
    reservations,
    sessions,
    tasks,
)
from tierwise.records import SIDE_ROLES

if TYPE_CHECKING:
    from tierwise.ledger.core import Tx

__all__ = ["PruneProgress", "PruneResult", "aggregate", "daily", "prune", "pruned_before"]

#: (tasks done, tasks to do), after each batch
PruneProgress = Callable[[int, int], None]

Key = tuple[date, str, str, str]  # day, kind, tier, role

_TASK_OUTCOMES = ("accepted", "exhausted", "budget", "error", "running")
_WASTED = ("rejected", "error")
#: every additive column of daily_rollups
TOTALS: tuple[str, ...] = tuple(
    c.name
    for c in daily_rollups.columns
    if c.name not in ("id", "day", "kind", "tier", "role", "tier_index")
)
_MONEY = tuple(name for name in TOTALS if name.endswith("_pusd"))
_DATED_SCOPE = re.compile(r":(\d{4}-\d{2}-\d{2})$")


def _day(column: sa.ColumnElement[Any]) -> sa.ColumnElement[date]:
    # date() is SQLite's function and Postgres' function-style cast: a UTC day either way,
    # since timestamps are stored as naive UTC.
    return sa.func.date(column, type_=sa.Date)


def _int(value: Any) -> int:
    return int(value or 0)


def aggregate(
    conn: sa.Connection, where: Sequence[sa.ColumnElement[bool]]
) -> dict[Key, dict[str, Any]]:
    """Rollup totals of the tasks matching *where* (conditions on ``tasks``) and their attempts.

    Returns ``{(day, kind, tier, role): {"tier_index": i, column: total, ...}}`` with every
    column of :data:`TOTALS` (money in integer pico-USD).
    """
    t, a = tasks.c, attempts.c
    out: dict[Key, dict[str, Any]] = {}

    def entry(key: tuple[Any, ...], tier_index: Any) -> dict[str, Any]:
        day = key[0] if isinstance(key[0], date) else date.fromisoformat(str(key[0]))
        k: Key = (day, str(key[1]), str(key[2]), str(key[3]))
        found = out.get(k)
        if found is None:
            found = out[k] = {"tier_index": int(tier_index), **dict.fromkeys(TOTALS, 0)}
            found["task_latency_s_sum"] = 0.0
        else:
            found["tier_index"] = min(found["tier_index"], int(tier_index))
        return found

    facts_query = task_facts(where)
    facts = facts_query.c
    day = _day(t.created_at)
    finished = sa.and_(t.outcome != "running", t.latency_s.is_not(None))
    on_ladder = sa.and_(facts.start_index >= 0, facts.resolved == 1)
    task_rows = conn.execute(
        sa.select(
            day,
            t.kind,
            t.decision_tier,
            t.role,
            sa.func.min(t.decision_tier_index),
            sa.func.count(),
            *(sa.func.sum(sa.case((t.outcome == o, 1), else_=0)) for o in _TASK_OUTCOMES),
            sa.func.sum(facts.escalated),
            sa.func.sum(t.cost_pusd),
            sa.func.sum(sa.case((finished, 1), else_=0)),
            sa.func.sum(sa.case((finished, t.latency_s), else_=0.0)),
            sa.func.sum(sa.case((on_ladder, 1), else_=0)),
        )
        .select_from(tasks.join(facts_query, facts.task_id == t.id))
        .where(*where)
        .group_by(day, t.kind, t.decision_tier, t.role)
    ).all()
    for row in task_rows:
        e = entry(row[0:4], row[4])
        e["tasks"] += _int(row[5])
        for i, outcome in enumerate(_TASK_OUTCOMES):
            e[f"tasks_{outcome}"] += _int(row[6 + i])
        e["tasks_escalated"] += _int(row[11])
        e["task_cost_pusd"] += _int(row[12])
        e["tasks_timed"] += _int(row[13])
        e["task_latency_s_sum"] += float(row[14] or 0.0)
        e["tier_tasks"] += _int(row[15])
        e["tier_escalated"] += _int(row[11])

    validator = a.role.in_(sorted(SIDE_ROLES - {"shadow"}))  # validators' and the judge's
    # Shadow calls are rolled up on lines of their own (role "shadow"), not their task's.
    role = sa.case((a.role == "shadow", "shadow"), else_=t.role)
    attempt_rows = conn.execute(
        sa.select(
            day,
            t.kind,
            a.tier,
            role,
            sa.func.min(a.tier_index),
            sa.func.count(),
            sa.func.sum(sa.case((a.outcome == "accepted", 1), else_=0)),
            sa.func.sum(sa.case((a.outcome == "rejected", 1), else_=0)),
            sa.func.sum(sa.case((a.outcome == "error", 1), else_=0)),
            sa.func.sum(a.cost_pusd),
            sa.func.sum(sa.case((a.outcome.in_(_WASTED), a.cost_pusd), else_=0)),
            sa.func.sum(sa.case((validator, 1), else_=0)),
            sa.func.sum(sa.case((validator, a.cost_pusd), else_=0)),
            *(sa.func.sum(a[name]) for name in TOKEN_COLUMNS),
        )
        .select_from(attempts.join(tasks, a.task_id == t.id))
        .where(*where)
        .group_by(day, t.kind, a.tier, role)
    ).all()
    names: tuple[str, ...] = ("attempts", "accepted", "rejected", "errors", "cost_pusd")
    names += ("wasted_pusd", "validator_attempts", "validator_cost_pusd", *TOKEN_COLUMNS)
    for row in attempt_rows:
        e = entry(row[0:4], row[4])
        for i, name in enumerate(names):
            e[name] += _int(row[5 + i])

    return out


def _rolled_up(
    conn: sa.Connection, where: Sequence[sa.ColumnElement[bool]]
) -> dict[Key, dict[str, Any]]:
    r = daily_rollups.c
    rows = conn.execute(
        sa.select(
            r.day,
            r.kind,
            r.tier,
            r.role,
            sa.func.min(r.tier_index),
            *(sa.func.sum(r[name]) for name in TOTALS),
        )
        .where(*where)
        .group_by(r.day, r.kind, r.tier, r.role)
    ).all()
    out: dict[Key, dict[str, Any]] = {}
    for row in rows:
        values: dict[str, Any] = {"tier_index": int(row[4])}
        for i, name in enumerate(TOTALS):
            raw = row[5 + i]
            values[name] = float(raw or 0.0) if name == "task_latency_s_sum" else _int(raw)
        out[(row[0], row[1], row[2], row[3])] = values
    return out


def _merge(into: dict[Key, dict[str, Any]], more: dict[Key, dict[str, Any]]) -> None:
    for key, values in more.items():
        found = into.get(key)
        if found is None:
            into[key] = dict(values)
            continue
        found["tier_index"] = min(found["tier_index"], values["tier_index"])
        for name in TOTALS:
            found[name] += values[name]


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def daily(
    conn: sa.Connection,
    *,
    since: date | None,
    until: date | None,
    kind: str | None,
    role: str | None,
) -> list[dict[str, Any]]:
    """Totals per (day, kind, tier, role) from rollups and live rows, ordered by those keys.

    Shadow calls are on lines of their own (role ``shadow``), with the live traffic they
    shadowed: ``role="live"`` includes them.

    Money comes back as ``Decimal`` USD under ``*_usd`` names (``cost_usd``, ``wasted_usd``,
    ``task_cost_usd``, ``validator_cost_usd``).
    """
    r, t = daily_rollups.c, tasks.c
    rolled_where: list[sa.ColumnElement[bool]] = []
    live_where: list[sa.ColumnElement[bool]] = []
    if since is not None:
        rolled_where.append(r.day >= since)
        live_where.append(t.created_at >= _midnight(since))
    if until is not None:
        rolled_where.append(r.day < until)
        live_where.append(t.created_at < _midnight(until))
    if kind is not None:
        rolled_where.append(r.kind == kind)
        live_where.append(t.kind == kind)
    if role is not None:
        # the shadow calls of a role's tasks come with them, on lines of their own
        rolled_where.append(r.role.in_((role, "shadow")) if role == "live" else r.role == role)
        live_where.append(t.role == role)
    totals = _rolled_up(conn, rolled_where)
    _merge(totals, aggregate(conn, live_where))
    result = []
    for (day, k, tier, role_), values in sorted(totals.items()):
        row: dict[str, Any] = {"day": day, "kind": k, "tier": tier, "role": role_}
        for name, value in values.items():
            if name in _MONEY:
                row[name.removesuffix("_pusd") + "_usd"] = from_pico(value)
            else:
                row[name] = value
        result.append(row)
    return result


def pruned_before(conn: sa.Connection) -> date | None:
    """The day after the newest rolled-up day: rows before it were pruned (``None``: none)."""
    newest = conn.execute(sa.select(sa.func.max(daily_rollups.c.day))).scalar()
    if newest is None:
        return None
    day = newest if isinstance(newest, date) else date.fromisoformat(str(newest))
    return day + timedelta(days=1)


# -- pruning -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What :func:`prune` deleted (or, with ``dry_run``, would delete)."""

    before: date
    dry_run: bool
    tasks: int
    attempts: int
    days: tuple[date, ...]
    reservations: int
    budget_counters: int
    sessions: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "before": self.before.isoformat(),
            "dry_run": self.dry_run,
            "tasks": self.tasks,
            "attempts": self.attempts,
            "days": [d.isoformat() for d in self.days],
            "reservations": self.reservations,
            "budget_counters": self.budget_counters,
            "sessions": self.sessions,
        }


WriteTx = Callable[[], AbstractContextManager["Tx"]]
ReadTx = Callable[[], AbstractContextManager[sa.Connection]]


def prune(
    write: WriteTx,
    read: ReadTx,
    before: date,
    *,
    keep_running_after: datetime,
    batch_size: int,
    dry_run: bool,
    progress: PruneProgress | None,
) -> PruneResult:
    """Roll up and delete tasks created before *before* (see :meth:`Ledger.prune`)."""
    t, a = tasks.c, attempts.c
    cutoff = _midnight(before)
    where = [
        t.created_at < cutoff,
        sa.or_(t.outcome != "running", t.created_at < keep_running_after),
    ]
    with read() as conn:
        total = int(conn.execute(sa.select(sa.func.count()).where(*where)).scalar_one())
        if dry_run:
            n_attempts = conn.execute(
                sa.select(sa.func.count())
                .select_from(attempts.join(tasks, a.task_id == t.id))
                .where(*where)
            ).scalar_one()
            found = conn.execute(sa.select(_day(t.created_at)).where(*where).distinct())
            return PruneResult(
                before,
                True,
                total,
                int(n_attempts),
                tuple(sorted(_as_date(d) for d in found.scalars())),
                _count_reservations(conn, cutoff),
                sum(len(page) for page in _dead_counter_pages(conn, cutoff, before, where)),
                _count_sessions(conn, cutoff),
            )
    done = n_attempts = 0
    touched: set[date] = set()
    if progress is not None:
        progress(0, total)
    while True:
        with write() as tx:
            conn = tx.conn
            ids = list(
                conn.execute(
                    sa.select(t.id).where(*where).order_by(t.created_at, t.id).limit(batch_size)
                ).scalars()
            )
            if not ids:
                break
            groups = aggregate(conn, [t.id.in_(ids)])
            if groups:
                conn.execute(sa.insert(daily_rollups), _rows(groups))
            touched.update(key[0] for key in groups)
            n_attempts += conn.execute(sa.delete(attempts).where(a.task_id.in_(ids))).rowcount
            conn.execute(sa.delete(feedback).where(feedback.c.task_id.in_(ids)))
            conn.execute(sa.delete(tasks).where(t.id.in_(ids)))
        done += len(ids)
        if progress is not None:
            progress(done, max(total, done))
    for day in sorted(touched | _uncompacted_days(read)):
        with write() as tx:
            _compact(tx.conn, day)
    r = reservations.c
    n_reservations = n_counters = 0
    while True:  # closed reservations, a batch per transaction
        with write() as tx:
            closed = sa.select(r.id).where(r.state != "held", r.created_at < cutoff)
            ids = list(tx.conn.execute(closed.order_by(r.id).limit(batch_size)).scalars())
            if ids:
                tx.conn.execute(sa.delete(reservations).where(r.id.in_(ids)))
        n_reservations += len(ids)
        if len(ids) < batch_size:
            break
    with read() as conn:
        pages = list(_dead_counter_pages(conn, cutoff, before, where))
    for page in pages:
        with write() as tx:
            tx.conn.execute(sa.delete(budget_counters).where(budget_counters.c.scope.in_(page)))
        n_counters += len(page)
    with write() as tx:
        n_sessions = tx.conn.execute(sa.delete(sessions).where(*_idle_sessions(cutoff))).rowcount
    return PruneResult(
        before,
        False,
        done,
        n_attempts,
        tuple(sorted(touched)),
        n_reservations,
        n_counters,
        n_sessions,
    )


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _rows(groups: dict[Key, dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"day": day, "kind": kind, "tier": tier, "role": role, **values}
        for (day, kind, tier, role), values in sorted(groups.items())
    ]


def _uncompacted_days(read: ReadTx) -> set[date]:
    """Days with more than one rollup row per group (a prune that stopped half way)."""
    r = daily_rollups.c
    with read() as conn:
        rows = conn.execute(
            sa.select(r.day)
            .group_by(r.day, r.kind, r.tier, r.role)
            .having(sa.func.count() > 1)
            .distinct()
        ).scalars()
        return {_as_date(d) for d in rows}


def _compact(conn: sa.Connection, day: date) -> None:
    """Replace *day*'s rollup rows by one row per group holding their sums."""
    groups = _rolled_up(conn, [daily_rollups.c.day == day])
    conn.execute(sa.delete(daily_rollups).where(daily_rollups.c.day == day))
    if groups:
        conn.execute(sa.insert(daily_rollups), _rows(groups))


def _idle_sessions(cutoff: datetime) -> list[sa.ColumnElement[bool]]:
    s, t = sessions.c, tasks.c
    return [s.last_seen_at < cutoff, ~sa.exists().where(t.session_id == s.id)]


def _count_sessions(conn: sa.Connection, cutoff: datetime) -> int:
    return int(conn.execute(sa.select(sa.func.count()).where(*_idle_sessions(cutoff))).scalar_one())


def _count_reservations(conn: sa.Connection, cutoff: datetime) -> int:
    r = reservations.c
    query = sa.select(sa.func.count()).where(r.state != "held", r.created_at < cutoff)
    return int(conn.execute(query).scalar_one())


def _dead_counter_pages(
    conn: sa.Connection,
    cutoff: datetime,
    before: date,
    pruned: Sequence[sa.ColumnElement[bool]],
    page: int = 500,
) -> Iterator[list[str]]:
    """Budget counters nothing can reserve against again, a page at a time: idle, nothing
    held, and either of a past day (``…:YYYY-MM-DD`` before *before*) or of a task that is (or
    is being) pruned.

    Session counters are kept: a session may go on after a pause, and its budget with it.
    """
    c, t = budget_counters.c, tasks.c
    after = ""
    while True:
        scopes = list(
            conn.execute(
                sa.select(c.scope)
                .where(c.held_pusd == 0, c.updated_at < cutoff, c.scope > after)
                .order_by(c.scope)
                .limit(page)
            ).scalars()
        )
        if not scopes:
            return
        after = scopes[-1]
        dead: list[str] = []
        task_scopes: list[str] = []
        for scope in scopes:
            match = _DATED_SCOPE.search(scope)
            if match is not None:
                try:
                    if date.fromisoformat(match.group(1)) < before:
                        dead.append(scope)
                except ValueError:
                    pass
            elif scope.startswith("task:"):
                task_scopes.append(scope)
        if task_scopes:
            ids = [scope.removeprefix("task:") for scope in task_scopes]
            kept = sa.select(t.id).where(t.id.in_(ids), sa.not_(sa.and_(*pruned)))
            alive = set(conn.execute(kept).scalars())
            dead.extend(s for s, tid in zip(task_scopes, ids, strict=True) if tid not in alive)
        if dead:
            yield dead
