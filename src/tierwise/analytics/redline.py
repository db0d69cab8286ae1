"""The fleet's escalation rate against the policy's red line, and the kinds that push it over.

The articles hold the fleet's escalation rate under 9% "as a hard line". Over a window (the last
day for the alarm: ``tierwise learn status`` exits 1, ``/metrics`` shows it), the fleet's rate is
escalated ÷ resolved over every counted task (:mod:`tierwise.ledger.escalation`). Each kind's
*excess* is what it escalated beyond the line's allowance for its volume (escalated − line ×
resolved); the kinds are listed by excess, largest first, with their share of the fleet's excess
(the shares add up to 1, kinds below the line taking a negative share) — the kinds to look at
first.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa

from tierwise.analytics.results import Contribution, RedLine
from tierwise.ledger.escalation import task_facts
from tierwise.ledger.schema import tasks

if TYPE_CHECKING:
    from tierwise.ledger import Ledger

__all__ = ["fleet_escalation", "red_line"]


def _per_kind(
    conn: sa.Connection, since: datetime, until: datetime, facts: sa.FromClause | None
) -> list[tuple[str, int, int]]:
    t = tasks.c
    if facts is None:
        facts = task_facts([t.created_at >= since, t.created_at < until], by_time=True)
    f = facts.c
    rows = conn.execute(
        sa.select(f.kind, sa.func.sum(f.resolved), sa.func.sum(f.escalated))
        .where(f.counted == 1, f.resolved == 1, f.created_at >= since, f.created_at < until)
        .group_by(f.kind)
    ).all()
    return [(str(k), int(r or 0), int(e or 0)) for k, r, e in rows]


def red_line(
    conn: sa.Connection,
    threshold: float,
    *,
    since: datetime,
    until: datetime,
    facts: sa.FromClause | None = None,
) -> RedLine:
    """The fleet's escalation over tasks created in [since, until) against *threshold*.

    *facts*: task facts already computed over a window that holds [since, until) (read instead
    of the ledger's rows).
    """
    kinds = _per_kind(conn, since, until, facts)
    resolved = sum(r for _, r, _ in kinds)
    escalated = sum(e for _, _, e in kinds)
    excess = escalated - threshold * resolved
    contributors = []
    for kind, r, e in kinds:
        own = e - threshold * r
        contributors.append(
            Contribution(
                kind=kind,
                resolved=r,
                escalated=e,
                excess=own,
                share=own / excess if excess else None,
                points=e / resolved if resolved else None,
            )
        )
    contributors.sort(key=lambda c: (-c.excess, c.kind))
    return RedLine(
        threshold=threshold,
        since=since,
        until=until,
        resolved=resolved,
        escalated=escalated,
        contributors=tuple(contributors),
    )


def fleet_escalation(
    ledger: Ledger, threshold: float, *, since: datetime, until: datetime
) -> RedLine:
    """:func:`red_line` in a read transaction of its own (what ``/metrics`` reads)."""
    with ledger.reading() as conn:
        return red_line(conn, threshold, since=since, until=until)
