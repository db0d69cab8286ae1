"""The one definition of escalation: as SQL over the ledger's rows, and as plain Python beside it.

A task **escalated** when its accepted output came from a tier above the one it started on, or
when it failed on every tier (outcome ``exhausted``). The **escalation rate** is escalated ÷
resolved over the tasks it *counts*:

* live traffic only: tasks whose role is ``probe``, ``shadow`` or ``replay`` are not counted;
* on the ladder only: a concrete-model call (a ``Pin``, recorded under tier ``passthrough`` with
  tier index -1) has no tier to climb from and is reported on its own line;
* resolved only: ``accepted`` or ``exhausted``. A task stopped by a budget, by an error (a broken
  stream, a crash) or still running says nothing about its tier; it is *unresolved*, reported
  beside the rate and outside it.

Inside a task only its *own* attempts — those made in the task's role (``live`` for live
traffic) — decide anything:

* a validator's own model call (role ``validator``) is never the accepted attempt nor a failure;
* a probe or shadow call made inside a live task (roles ``probe``, ``shadow``) is neither: a
  probe that failed before the routed tier answered does not make the task escalated;
* an **alternate-model fallback** is recognised by its place, not by its model name (the model an
  upstream reports may be a dated alias of the one configured): the cascade tries a tier's
  primary model first and then its alternates, each recorded under the same tier, so every live
  attempt on a tier after the task's first one there is a fallback (or a billed retry). Since
  only the *tier* of the accepted attempt is compared with the starting tier, a fallback never
  makes a task escalated; it costs the task its first-try pass, and the reason a task climbed is
  the failure of the *last* attempt on its starting tier, so a primary's error that an alternate
  then answered is no reason.

The starting tier is the router's decision as recorded on the task (``decision_tier_index``; a
budget that made the task start higher is recorded there too). The accepted tier is that of the
task's one own attempt with outcome ``accepted``.

:func:`task_facts` is that definition as one SQLAlchemy Core subquery (one row per task, 0/1
integer columns that sum in SQL, identical on SQLite and PostgreSQL); :func:`classify` is the
same definition over plain values, the slow obvious version the tests hold the SQL to and what
code with attempt records in hand (the demo) uses. ``ledger stats``, the daily rollups and
:mod:`tierwise.analytics` (``tierwise learn status``, the reports, the learner, ``/metrics``)
all read these two, so they agree by construction. It lives on the ledger's layer because the
ledger's own rollups need it; :mod:`tierwise.analytics` is where callers find it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal

from tierwise.ledger.schema import attempts, tasks

__all__ = [
    "COUNTED_ROLE",
    "FAILED",
    "RESOLVED",
    "WASTED",
    "AttemptFacts",
    "TaskClass",
    "by_start",
    "classify",
    "reason_of",
    "task_facts",
]

#: The one task role the escalation rate counts; every other role is excluded.
COUNTED_ROLE = "live"
#: Task outcomes that decide a task: accepted somewhere, or failed on every tier.
RESOLVED = ("accepted", "exhausted")
#: Attempt outcomes that are failures (a broken stream's ``partial`` included).
FAILED = ("rejected", "error", "partial")
#: Attempt outcomes whose cost was thrown away (as ``ledger stats`` has always counted waste).
WASTED = ("rejected", "error")


@dataclass(frozen=True, slots=True)
class AttemptFacts:
    """What :func:`classify` needs of one attempt."""

    role: str
    tier_index: int
    outcome: str
    checked: bool = False  # a validator passed judgement on its output


@dataclass(frozen=True, slots=True)
class TaskClass:
    """One task under the definition (the columns of :func:`task_facts`, as Python values)."""

    counted: bool  # live traffic on the ladder
    resolved: bool  # accepted or exhausted
    escalated: bool  # accepted above its starting tier, or exhausted (ladder tasks only)
    direct: bool  # accepted on (or, by a probe, below) its starting tier
    first_try: bool  # accepted with none of its own attempts failed
    accepted_index: int | None  # tier index of its own accepted attempt
    own_attempts: int  # attempts made in the task's role (not validator, probe, shadow calls)
    fallbacks: int  # own attempts beyond one per tier tried (lowest to highest, never skipping)
    checked: bool  # a validator judged one of its own outputs


def classify(
    *, role: str, start_index: int, outcome: str, attempts: Iterable[AttemptFacts]
) -> TaskClass:
    """Classify one task by the definition in this module's docstring.

    Args:
        role: the task's role (``live``, ``probe``, ``shadow``, ``replay``).
        start_index: the tier index the router chose (-1 for a concrete-model call).
        outcome: the task's outcome (``accepted``, ``exhausted``, ``budget``, ``error``,
            ``running``).
        attempts: every attempt of the task, any role, any order.
    """
    own = [a for a in attempts if a.role == role]  # the task's own attempts
    tiers = [a.tier_index for a in own]
    span = max(tiers) - min(tiers) + 1 if tiers else 0  # tiers tried: the cascade never skips
    accepted = [a.tier_index for a in own if a.outcome == "accepted"]
    accepted_index = max(accepted) if accepted else None
    failed = sum(1 for a in own if a.outcome in FAILED)
    ladder = start_index >= 0
    resolved = outcome in RESOLVED
    escalated = ladder and (
        outcome == "exhausted"
        or (outcome == "accepted" and accepted_index is not None and accepted_index > start_index)
    )
    direct = ladder and outcome == "accepted" and not escalated
    return TaskClass(
        counted=role == COUNTED_ROLE and ladder,
        resolved=resolved,
        escalated=escalated,
        direct=direct,
        first_try=outcome == "accepted" and failed == 0 and not escalated,
        accepted_index=accepted_index,
        own_attempts=len(own),
        fallbacks=len(own) - span,
        checked=any(a.checked and a.outcome in ("accepted", "rejected") for a in own),
    )


def reason_of(outcome: str, failure: str | None, error_class: str | None) -> str:
    """Why an attempt failed, as a short label: the failing validator's name, the error class."""
    if outcome == "rejected":
        return (failure or "rejected").split(":", 1)[0].strip() or "rejected"
    if outcome == "error":
        return error_class or "error"
    return outcome


class _Unindexed(ColumnElement[Any]):
    """A column no SQLite index may serve (``+column``); the column itself elsewhere."""

    inherit_cache = True
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement)]  # noqa: RUF012

    def __init__(self, column: ColumnElement[Any]) -> None:
        self.column = column
        self.type = column.type


@compiles(_Unindexed)
def _plain(element: _Unindexed, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.column, **kw))


@compiles(_Unindexed, "sqlite")
def _unary_plus(element: _Unindexed, compiler: Any, **kw: Any) -> str:
    return "+" + str(compiler.process(element.column, **kw))


def _flag(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
    return sa.case((condition, 1), else_=0)


def task_facts(
    where: Sequence[sa.ColumnElement[bool]] = (), *, by_time: bool = False
) -> sa.Subquery:
    """One row per task matching *where* (conditions on ``tasks``), classified.

    Columns: ``task_id``, ``kind``, ``role``, ``start_tier``, ``start_index``, ``outcome``,
    ``final_tier``, ``latency_s``, ``created_at``, ``session_id``, ``key_id``; money in integer
    pico-USD read from the stored costs — ``cost_pusd`` (every attempt of the task, validator,
    probe and shadow calls included), ``wasted_pusd`` (its own rejected and errored attempts),
    ``validator_pusd``, ``probe_pusd``, ``shadow_pusd`` (calls of those roles made for a task of
    another role); counts ``attempts``, ``own_attempts`` (made in the task's role),
    ``fallbacks``, ``validator_attempts``; ``accepted_index``; and the 0/1 integers
    ``counted``, ``resolved``, ``escalated``, ``direct``, ``first_try``, ``checked`` — exactly
    :func:`classify`'s fields, so ``SUM(escalated)`` over counted rows counts escalated tasks.

    One pass: tasks joined to their attempts, grouped by task (PostgreSQL accepts the task's
    other columns in a query grouped by its primary key). Fallbacks are the own attempts beyond
    one per tier tried, the tiers tried being the span from the lowest to the highest (the
    cascade climbs one tier at a time, never skipping one; a plain MIN and MAX, unlike a
    COUNT(DISTINCT), lets PostgreSQL hash the grouping instead of sorting a million rows).

    *by_time* says *where* bounds ``created_at`` (a window): SQLite then reads the tasks
    through their ``created_at`` index. Without statistics (a ledger nobody ran ``ANALYZE`` on)
    its planner would rather scan every task in id order to spare the grouping a sort, which
    costs a whole ledger's read for a day's window; grouping by ``+id`` (SQLite's no-op unary
    plus, which no index can serve) takes that choice away. PostgreSQL groups by ``id``.
    """
    t, a = tasks.c, attempts.c
    own = a.role == t.role  # the task's own attempts (live ones for live traffic)
    own_tier = sa.case((own, a.tier_index))
    grouped = (
        sa.select(
            t.id.label("task_id"),
            t.kind,
            t.role,
            t.decision_tier.label("start_tier"),
            t.decision_tier_index.label("start_index"),
            t.outcome,
            t.final_tier,
            t.latency_s,
            t.created_at,
            t.session_id,
            t.key_id,
            sa.func.count(a.id).label("attempts"),
            sa.func.sum(_flag(own)).label("own_attempts"),
            (sa.func.max(own_tier) - sa.func.min(own_tier) + 1).label("own_tiers"),
            sa.func.max(sa.case((sa.and_(own, a.outcome == "accepted"), a.tier_index))).label(
                "accepted_index"
            ),
            sa.func.sum(_flag(sa.and_(own, a.outcome.in_(FAILED)))).label("failed"),
            sa.func.max(
                _flag(
                    sa.and_(own, a.outcome.in_(("accepted", "rejected")), a.verdicts_json != "[]")
                )
            ).label("checked"),
            sa.func.sum(a.cost_pusd).label("cost_pusd"),
            sa.func.sum(sa.case((sa.and_(own, a.outcome.in_(WASTED)), a.cost_pusd), else_=0)).label(
                "wasted_pusd"
            ),
            *(
                sa.func.sum(
                    sa.case((sa.and_(a.role == role, t.role != role), a.cost_pusd), else_=0)
                ).label(f"{role}_pusd")
                for role in ("validator", "probe", "shadow")
            ),
            sa.func.sum(_flag(a.role == "validator")).label("validator_attempts"),
        )
        .select_from(tasks.outerjoin(attempts, a.task_id == t.id))
        .where(*where)
    )
    per_task = grouped.group_by(_Unindexed(t.id) if by_time else t.id).subquery("per_task")
    p = per_task.c
    ladder = p.start_index >= 0
    accepted = p.outcome == "accepted"
    above = sa.and_(accepted, p.accepted_index.is_not(None), p.accepted_index > p.start_index)
    escalated = sa.and_(ladder, sa.or_(p.outcome == "exhausted", above))
    zero = sa.literal(0)
    return sa.select(
        p.task_id,
        p.kind,
        p.role,
        p.start_tier,
        p.start_index,
        p.outcome,
        p.final_tier,
        p.latency_s,
        p.created_at,
        p.session_id,
        p.key_id,
        sa.func.coalesce(p.cost_pusd, zero).label("cost_pusd"),
        sa.func.coalesce(p.wasted_pusd, zero).label("wasted_pusd"),
        sa.func.coalesce(p.validator_pusd, zero).label("validator_pusd"),
        sa.func.coalesce(p.probe_pusd, zero).label("probe_pusd"),
        sa.func.coalesce(p.shadow_pusd, zero).label("shadow_pusd"),
        p.attempts,
        sa.func.coalesce(p.own_attempts, zero).label("own_attempts"),
        sa.func.coalesce(p.own_attempts - p.own_tiers, zero).label("fallbacks"),
        sa.func.coalesce(p.validator_attempts, zero).label("validator_attempts"),
        p.accepted_index,
        _flag(sa.and_(p.role == COUNTED_ROLE, ladder)).label("counted"),
        _flag(p.outcome.in_(RESOLVED)).label("resolved"),
        _flag(escalated).label("escalated"),
        _flag(sa.and_(ladder, accepted, sa.not_(escalated))).label("direct"),
        _flag(sa.and_(accepted, sa.func.coalesce(p.failed, zero) == 0, sa.not_(escalated))).label(
            "first_try"
        ),
        sa.func.coalesce(p.checked, zero).label("checked"),
    ).subquery("facts")


def by_start(
    conn: sa.Connection, where: Sequence[sa.ColumnElement[bool]] = (), *, by_time: bool = False
) -> dict[tuple[str, str], tuple[int, int, int]]:
    """``{(kind, starting tier): (tier index, resolved, escalated)}`` over the counted tasks
    matching *where* (conditions on ``tasks``; *by_time* as in :func:`task_facts`) — the
    escalation rate's parts per kind and tier."""
    f = task_facts(where, by_time=by_time).c
    rows = conn.execute(
        sa.select(
            f.kind,
            f.start_tier,
            sa.func.min(f.start_index),
            sa.func.sum(f.resolved),
            sa.func.sum(f.escalated),
        )
        .where(f.counted == 1, f.resolved == 1)
        .group_by(f.kind, f.start_tier)
    ).all()
    return {(r[0], r[1]): (int(r[2]), int(r[3] or 0), int(r[4] or 0)) for r in rows}
