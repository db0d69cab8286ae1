"""The kept summary: ended hours' :class:`~tierwise.ledger.summary.Summary` in five tables.

A weekly report over a million attempts cannot classify every task again each time it runs (the
analytics take about 20 s for that on SQLite), and it need not: a task that has finished never
changes. :func:`window_summary` answers a window from

* the **kept hours** (``report_hours`` and the rows of ``report_facts``, ``report_tiers``,
  ``report_sessions``, ``report_keys`` for that hour) — read back as a few thousand rows for a
  week: the facts per hour (a report shows spend per day), the tiers, sessions and keys summed
  over the window in SQL;
* the hours that have ended but were **never summarised**: computed from the rows once, kept
  (one write transaction per day of them), then read like the others;
* the tasks of kept hours that were **still running** when their hour was summarised, and the
  **edges** — a window's partial first hour, the hour still going on — computed from the rows
  at every read (they are few).

An hour is summarised only after it has ended, from the tasks *created* in it, in a read
transaction (never holding the write lock while classifying); writing it takes one short write
transaction. The count of its tasks is kept with it and checked at every read (an index-only
count per hour): tasks written late into an hour already summarised — rows a gateway spooled
during a database outage and replayed later — make the hour stale, and it is summarised again.
Hours before ``tierwise ledger prune``'s cut keep their summary (their rows are gone, the sums
stay exact). Keeping is idempotent (an hour's rows are replaced, never added to twice), and a
ledger that cannot be written (a read-only file, a standby) is answered from the rows instead.
"""

from __future__ import annotations

import json
import sys
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from tierwise.errors import LedgerError
from tierwise.ledger.rollups import pruned_before
from tierwise.ledger.schema import (
    REPORT_FACT_SUMS,
    REPORT_TIER_SUMS,
    report_facts,
    report_hours,
    report_keys,
    report_sessions,
    report_tiers,
    tasks,
)
from tierwise.ledger.sql import window_filters
from tierwise.ledger.summary import Summary, compute, hour_of

if TYPE_CHECKING:
    from tierwise.ledger.core import Tx

__all__ = ["SUMMARY_VERSION", "WindowSummary", "load", "store", "window_summary"]

#: The format of the kept rows; hours kept in another format are summarised again.
SUMMARY_VERSION = 1
HOUR = timedelta(hours=1)
#: Ended hours summarised per read and per write transaction.
_HOURS_PER_PASS = 24
_CHUNK = 500  # values per IN (...) list

WriteTx = Callable[[], AbstractContextManager["Tx"]]
ReadTx = Callable[[], AbstractContextManager[sa.Connection]]
#: (hours summarised so far, hours to summarise), after each pass
SummaryProgress = Callable[[int, int], None]


@dataclass(slots=True)
class WindowSummary:
    """A window's summary and where it came from.

    ``kept`` hours were read from the kept summary, ``summarised`` of them were summarised
    during this call; ``from_rows`` are the ranges computed from the rows (edges, hours not
    ended, hours that could not be kept); ``pending`` counts tasks of kept hours that were
    running when their hour was summarised (read from the rows).
    """

    since: datetime
    until: datetime
    summary: Summary
    kept: tuple[datetime, ...] = ()
    summarised: tuple[datetime, ...] = ()
    from_rows: tuple[tuple[datetime, datetime], ...] = ()
    pending: int = 0
    notes: list[str] = field(default_factory=list)


def _chunks(values: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _blob(run: array[float] | None) -> bytes:
    values = array("d", run if run is not None else ())
    if sys.byteorder == "big":  # kept little-endian, whatever the machine
        values.byteswap()
    return values.tobytes()


def _run(blob: bytes | memoryview | None) -> array[float]:
    values = array("d")
    values.frombytes(bytes(blob or b""))
    if sys.byteorder == "big":
        values.byteswap()
    return values


def store(conn: sa.Connection, summary: Summary, hours: Iterable[datetime], now: datetime) -> None:
    """Keep *summary*'s sums of *hours*, replacing whatever was kept for them."""
    chosen = sorted(set(hours))
    wanted = set(chosen)
    for chunk in _chunks(chosen):
        for table in (report_facts, report_tiers, report_sessions, report_keys, report_hours):
            conn.execute(sa.delete(table).where(table.c.hour.in_(chunk)))
    if not chosen:
        return
    conn.execute(
        sa.insert(report_hours),
        [
            {
                "hour": hour,
                "version": SUMMARY_VERSION,
                "tasks": summary.counts.get(hour, 0),
                "pending_json": json.dumps(summary.pending.get(hour, [])),
                "direct_n": len(summary.latency.get((hour, False), ())),
                "direct_latency": _blob(summary.latency.get((hour, False))),
                "escalated_n": len(summary.latency.get((hour, True), ())),
                "escalated_latency": _blob(summary.latency.get((hour, True))),
                "summarised_at": now,
            }
            for hour in chosen
        ],
    )
    facts = [
        {
            "hour": key[0],
            "kind": key[1],
            "role": key[2],
            "start_tier": key[3],
            "start_index": key[4],
            **dict(zip(REPORT_FACT_SUMS, values, strict=True)),
        }
        for key, values in summary.groups.items()
        if key[0] in wanted
    ]
    tiers = [
        {
            "hour": key[0],
            "kind": key[1],
            "task_role": key[2],
            "role": key[3],
            "tier": key[4],
            "tier_index": key[5],
            **dict(zip(REPORT_TIER_SUMS, values, strict=True)),
        }
        for key, values in summary.tiers.items()
        if key[0] in wanted
    ]
    sessions = [
        {"hour": key[0], "session_id": key[1], "tasks": values[0], "cost_pusd": values[1]}
        for key, values in summary.sessions.items()
        if key[0] in wanted
    ]
    keys = [
        {"hour": key[0], "key_id": key[1], "tasks": values[0], "cost_pusd": values[1]}
        for key, values in summary.keys.items()
        if key[0] in wanted
    ]
    for table, rows in (
        (report_facts, facts),
        (report_tiers, tiers),
        (report_sessions, sessions),
        (report_keys, keys),
    ):
        for chunk in _chunks(rows, 5000):
            conn.execute(sa.insert(table), list(chunk))


def load(conn: sa.Connection, hours: Sequence[datetime]) -> Summary:
    """The kept summary of *hours*: facts and latencies per hour; tiers, sessions and keys
    summed over them all (under hour ``None``)."""
    out = Summary()
    chosen = sorted(set(hours))
    h, f, r = report_hours.c, report_facts.c, report_tiers.c
    s, k = report_sessions.c, report_keys.c
    for chunk in _chunks(chosen):
        for row in conn.execute(
            sa.select(h.hour, h.tasks, h.pending_json, h.direct_latency, h.escalated_latency).where(
                h.hour.in_(chunk)
            )
        ):
            hour = row[0]
            out.counts[hour] = int(row[1])
            pending = json.loads(row[2])
            if pending:
                out.pending[hour] = list(pending)
            for escalated, blob in ((False, row[3]), (True, row[4])):
                run = _run(blob)
                if run:
                    out.latency[(hour, escalated)] = run
        dims = (f.hour, f.kind, f.role, f.start_tier, f.start_index)
        for row in conn.execute(
            sa.select(*dims, *(f[n] for n in REPORT_FACT_SUMS)).where(f.hour.in_(chunk))
        ):
            values = tuple(row)
            _add(
                out.groups, (values[0], values[1], values[2], values[3], int(values[4])), values[5:]
            )
        dims = (r.kind, r.task_role, r.role, r.tier, r.tier_index)
        for row in conn.execute(
            sa.select(*dims, *(sa.func.sum(r[n]) for n in REPORT_TIER_SUMS))
            .where(r.hour.in_(chunk))
            .group_by(*dims)
        ):
            values = tuple(row)
            key = (None, values[0], values[1], values[2], values[3], int(values[4]))
            _add(out.tiers, key, values[5:])
        for sid, n, cost in conn.execute(
            sa.select(s.session_id, sa.func.sum(s.tasks), sa.func.sum(s.cost_pusd))
            .where(s.hour.in_(chunk))
            .group_by(s.session_id)
        ):
            _add(out.sessions, (None, sid), (n, cost))
        for key_id, n, cost in conn.execute(
            sa.select(k.key_id, sa.func.sum(k.tasks), sa.func.sum(k.cost_pusd))
            .where(k.hour.in_(chunk))
            .group_by(k.key_id)
        ):
            _add(out.keys, (None, key_id), (n, cost))
    return out


def _add(into: dict[Any, list[int]], key: Any, values: Sequence[Any]) -> None:
    found = into.get(key)
    if found is None:
        into[key] = [int(v or 0) for v in values]
    else:
        for i, v in enumerate(values):
            found[i] += int(v or 0)


def _kept(conn: sa.Connection, hours: Sequence[datetime]) -> dict[datetime, int]:
    """The kept hours among *hours* in this format, with the task count kept for each."""
    h = report_hours.c
    out: dict[datetime, int] = {}
    for chunk in _chunks(hours):
        for hour, n in conn.execute(
            sa.select(h.hour, h.tasks).where(h.hour.in_(chunk), h.version == SUMMARY_VERSION)
        ):
            out[hour] = int(n)
    return out


def _stale(conn: sa.Connection, kept: dict[datetime, int]) -> set[datetime]:
    """Kept hours whose task count no longer matches the rows (never those pruned since)."""
    cut = pruned_before(conn)
    pruned = datetime.combine(cut, time(), UTC) if cut is not None else None
    t = tasks.c
    stmt = sa.select(sa.func.count()).where(
        t.created_at >= sa.bindparam("a", type_=t.created_at.type),
        t.created_at < sa.bindparam("b", type_=t.created_at.type),
    )
    stale = set()
    for hour, n in kept.items():
        if pruned is not None and hour < pruned:
            continue
        if conn.execute(stmt, {"a": hour, "b": hour + HOUR}).scalar_one() != n:
            stale.add(hour)
    return stale


def _runs(hours: Sequence[datetime]) -> list[list[datetime]]:
    """*hours* (sorted) cut into runs of consecutive hours, at most a day each."""
    out: list[list[datetime]] = []
    for hour in hours:
        if out and out[-1][-1] + HOUR == hour and len(out[-1]) < _HOURS_PER_PASS:
            out[-1].append(hour)
        else:
            out.append([hour])
    return out


def window_summary(
    read: ReadTx,
    write: WriteTx,
    since: datetime,
    until: datetime,
    *,
    now: datetime,
    keep: bool = True,
    from_rows: bool = False,
    progress: SummaryProgress | None = None,
) -> WindowSummary:
    """The summary of the tasks created in [since, until) (see the module docstring).

    *now* decides which hours have ended. With *keep* ``False`` nothing is written: hours not
    kept yet are computed from the rows. *from_rows* ignores the kept summary altogether (the
    slow, obvious reference the tests hold the fast path to).
    """
    if from_rows:
        with read() as conn:
            summary = compute(conn, window_filters(tasks.c.created_at, since, until), by_time=True)
        return WindowSummary(since, until, summary, from_rows=((since, until),))
    first = hour_of(since) + (HOUR if hour_of(since) < since else timedelta(0))
    hours: list[datetime] = []  # the whole hours of the window that have ended
    at, limit = first, min(until, now)
    while at + HOUR <= limit:
        hours.append(at)
        at += HOUR
    edges: list[tuple[datetime, datetime]] = []
    if not hours:
        edges.append((since, until))
    else:
        if since < hours[0]:
            edges.append((since, hours[0]))
        if hours[-1] + HOUR < until:
            edges.append((hours[-1] + HOUR, until))
    with read() as conn:
        kept = _kept(conn, hours)
        valid = set(kept) - _stale(conn, kept)
    missing = [hour for hour in hours if hour not in valid]
    result = WindowSummary(since, until, Summary())
    fresh = Summary()
    summarised: list[datetime] = []
    done = 0
    for run in _runs(missing):
        start, stop = run[0], run[-1] + HOUR
        with read() as conn:
            part = compute(
                conn,
                window_filters(tasks.c.created_at, start, stop),
                by_time=True,
                defer_running=True,
            )
        if keep:
            try:
                with write() as tx:
                    store(tx.conn, part, run, now)
                summarised.extend(run)
            except LedgerError as exc:  # read-only, a standby, or a concurrent keeper won
                keep = False
                result.notes.append(f"the summary could not be kept ({exc}); read from the rows")
        fresh.merge(part)
        done += len(run)
        if progress is not None:
            progress(done, len(missing))
    with read() as conn:
        summary = load(conn, sorted(valid))
        summary.merge(fresh)
        ids = [i for found in summary.pending.values() for i in found]
        for chunk in _chunks(ids):
            part = compute(conn, [tasks.c.id.in_(chunk)])
            part.counts.clear()  # counted already, with their hour
            summary.merge(part)
        for start, stop in edges:
            summary.merge(
                compute(conn, window_filters(tasks.c.created_at, start, stop), by_time=True)
            )
    result.summary = summary
    result.kept = tuple(sorted(valid | set(summarised)))
    result.summarised = tuple(summarised)
    result.from_rows = tuple(edges) + tuple(
        (run[0], run[-1] + HOUR) for run in _runs([h for h in missing if h not in summarised])
    )
    result.pending = len(ids)
    return result
