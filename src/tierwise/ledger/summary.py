"""A window's tasks summed per hour and group: what the weekly report reads, computed from rows.

A :class:`Summary` holds, per UTC hour of creation, exact integer sums (money in pico-USD) of

* **groups** — tasks per (hour, kind, task role, starting tier), classified by the
  one definition of escalation (:func:`tierwise.ledger.escalation.task_facts`): outcomes,
  resolved, escalated, direct, first try, checked, fallbacks, attempts, stored costs (all
  attempts, the own failed ones, validator, probe and shadow calls) and each task's own *work*
  in tokens (the input buckets of its first own attempt, the output of its accepted one, else of
  that first attempt) — what an estimate on another tier prices;
* **tiers** — attempts per (hour, kind, task role, attempt role, the tier they ran on): calls,
  outcomes, cost, waste and tokens, the tier mix;
* **sessions** and **keys** — tasks and cost per (hour, session id) and per (hour, gateway key
  id): the tasks' own cost, as ``explain`` shows it — shadow calls are the shadow budget's, on
  their own line — replayed tasks left out (they were never spent);
* **latency** — the latencies of resolved counted tasks, direct and escalated apart, sorted, per
  hour: percentiles cannot be summed, but they can be selected exactly from sorted runs
  (:func:`percentile_of`).

:func:`compute` builds one from the rows (two streamed queries: the tasks' facts and their
attempts); :mod:`tierwise.ledger.summary_store` keeps the summaries of ended hours in five
tables and reads them back (the hour of sessions, keys and tiers summed over the window in SQL:
a window's report needs their totals, not their hours). Both give the same sums for the same
tasks, which the tests hold them to.
"""

from __future__ import annotations

import struct
from array import array
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from tierwise.ledger.escalation import WASTED, task_facts
from tierwise.ledger.schema import (
    REPORT_FACT_SUMS,
    REPORT_TIER_SUMS,
    TOKEN_COLUMNS,
    attempts,
    tasks,
)

__all__ = [
    "FACT",
    "TIER",
    "GroupKey",
    "KeyKey",
    "SessionKey",
    "Summary",
    "TierKey",
    "compute",
    "hour_of",
    "percentile_of",
]

#: Position of each summed column in a group's values (``values[FACT["cost_pusd"]]``).
FACT = {name: i for i, name in enumerate(REPORT_FACT_SUMS)}
#: Position of each summed column in a tier row's values.
TIER = {name: i for i, name in enumerate(REPORT_TIER_SUMS)}

#: (hour, kind, task role, starting tier, starting tier index)
GroupKey = tuple[datetime, str, str, str, int]
#: (hour, kind, task role, attempt role, tier, tier index); the hour is ``None`` in sums read
#: back over a whole window (and so below)
TierKey = tuple[datetime | None, str, str, str, str, int]
#: (hour, session id)
SessionKey = tuple[datetime | None, str]
#: (hour, gateway key id; ``None`` for tasks made without a key)
KeyKey = tuple[datetime | None, int | None]

_OUTCOMES = ("accepted", "exhausted", "budget", "error", "running")
_FLAGS = ("resolved", "escalated", "direct", "first_try", "checked")
_COUNTS = ("fallbacks", "attempts", "own_attempts", "validator_attempts")
_MONEY = ("cost_pusd", "wasted_pusd", "validator_pusd", "probe_pusd", "shadow_pusd")


def hour_of(when: datetime) -> datetime:
    """The start of the UTC hour *when* falls in."""
    return when.replace(minute=0, second=0, microsecond=0)


@dataclass(slots=True)
class Summary:
    """Sums of a set of tasks per hour and group (see the module docstring).

    ``counts`` is the number of tasks created in each hour that the summary read, running ones
    included; ``pending`` the ids of those that were still running and are left out of every
    sum (only when computed with ``defer_running``).
    """

    groups: dict[GroupKey, list[int]] = field(default_factory=dict)
    tiers: dict[TierKey, list[int]] = field(default_factory=dict)
    sessions: dict[SessionKey, list[int]] = field(default_factory=dict)
    keys: dict[KeyKey, list[int]] = field(default_factory=dict)
    latency: dict[tuple[datetime, bool], array[float]] = field(default_factory=dict)
    counts: dict[datetime, int] = field(default_factory=dict)
    pending: dict[datetime, list[str]] = field(default_factory=dict)

    def merge(self, other: Summary) -> None:
        """Add *other*'s sums to this one (disjoint tasks are assumed: nothing is de-duplicated)."""
        _add_all(self.groups, other.groups)
        _add_all(self.tiers, other.tiers)
        _add_all(self.sessions, other.sessions)
        _add_all(self.keys, other.keys)
        for lkey, run in other.latency.items():
            found_run = self.latency.get(lkey)
            if found_run is None:
                self.latency[lkey] = run
            else:
                self.latency[lkey] = array("d", sorted([*found_run, *run]))
        for hour, n in other.counts.items():
            self.counts[hour] = self.counts.get(hour, 0) + n
        for hour, ids in other.pending.items():
            self.pending.setdefault(hour, []).extend(ids)

    def only(self, hours: set[datetime]) -> Summary:
        """The part of this summary in *hours* (sums over a whole window are dropped)."""
        return Summary(
            groups={k: v for k, v in self.groups.items() if k[0] in hours},
            tiers={k: v for k, v in self.tiers.items() if k[0] in hours},
            sessions={k: v for k, v in self.sessions.items() if k[0] in hours},
            keys={k: v for k, v in self.keys.items() if k[0] in hours},
            latency={k: v for k, v in self.latency.items() if k[0] in hours},
            counts={h: n for h, n in self.counts.items() if h in hours},
            pending={h: ids for h, ids in self.pending.items() if h in hours},
        )

    def latencies(self, escalated: bool) -> list[array[float]]:
        """The sorted latency runs of direct (or escalated) resolved counted tasks."""
        return [run for (_, esc), run in self.latency.items() if esc == escalated and run]


def _add_all(mine: dict[Any, list[int]], theirs: dict[Any, list[int]]) -> None:
    for key, values in theirs.items():
        found = mine.get(key)
        if found is None:
            mine[key] = list(values)
        else:
            for i, v in enumerate(values):
                found[i] += v


def compute(
    conn: sa.Connection,
    where: Sequence[sa.ColumnElement[bool]],
    *,
    by_time: bool = False,
    defer_running: bool = False,
) -> Summary:
    """The summary of the tasks matching *where* (conditions on ``tasks``), from the rows.

    *by_time*: *where* bounds ``created_at`` (see :func:`~tierwise.ledger.escalation.task_facts`).
    *defer_running*: leave tasks still running out of every sum and list their ids in
    ``pending`` (what a summary kept for later must do: those tasks are not finished); otherwise
    they count as unresolved ``running`` tasks, as everywhere else.
    """
    summary = Summary()
    owner = _read_tasks(conn, where, by_time, defer_running, summary)
    _read_attempts(conn, where, owner, summary)
    return summary


def _read_tasks(
    conn: sa.Connection,
    where: Sequence[sa.ColumnElement[bool]],
    by_time: bool,
    defer_running: bool,
    summary: Summary,
) -> dict[str, tuple[GroupKey, str]]:
    """Stream the tasks' facts into *summary*; return each summed task's group and role."""
    f = task_facts(where, by_time=by_time).c
    stmt = sa.select(
        f.task_id,
        f.created_at,
        f.kind,
        f.role,
        f.start_tier,
        f.start_index,
        f.key_id,
        f.session_id,
        f.outcome,
        f.latency_s,
        f.counted,
        *(f[name] for name in (*_FLAGS, *_COUNTS, *_MONEY)),
    )
    owner: dict[str, tuple[GroupKey, str]] = {}
    width = len(REPORT_FACT_SUMS)
    runs: dict[tuple[datetime, bool], list[float]] = defaultdict(list)
    outcome_at = {o: FACT[o] for o in _OUTCOMES}
    summed_at = [FACT[name] for name in (*_FLAGS, *_COUNTS, *_MONEY)]
    flags = 11  # the first column of the summed facts in a row
    resolved_at = flags
    escalated_at = flags + 1
    for row in conn.execute(stmt.execution_options(yield_per=20_000)):
        hour = hour_of(row[1])
        summary.counts[hour] = summary.counts.get(hour, 0) + 1
        task_id, outcome = row[0], row[8]
        if defer_running and outcome == "running":
            summary.pending.setdefault(hour, []).append(task_id)
            continue
        key: GroupKey = (hour, row[2], row[3], row[4], int(row[5]))
        values = summary.groups.get(key)
        if values is None:
            values = summary.groups[key] = [0] * width
        values[0] += 1
        at = outcome_at.get(outcome)
        if at is not None:
            values[at] += 1
        for i, position in enumerate(summed_at):
            values[position] += int(row[flags + i] or 0)
        if row[3] != "replay":  # replayed rows were never spent
            # a session's or key's spend is its tasks' own: shadow calls are the shadow budget's
            money = flags + len(summed_at) - len(_MONEY)
            cost = int(row[money] or 0) - int(row[money + _MONEY.index("shadow_pusd")] or 0)
            session = row[7]
            if session is not None:
                _count_in(summary.sessions, (hour, session), cost)
            _count_in(summary.keys, (hour, row[6]), cost)
        latency = row[9]
        if row[10] and row[resolved_at] and latency is not None:
            runs[(hour, bool(row[escalated_at]))].append(float(latency))
        owner[task_id] = (key, row[3])
    for lkey, found in runs.items():
        found.sort()
        summary.latency[lkey] = array("d", found)
    return owner


def _count_in(into: dict[Any, list[int]], key: Any, cost: int) -> None:
    pair = into.get(key)
    if pair is None:
        pair = into[key] = [0, 0]
    pair[0] += 1
    pair[1] += cost


def _read_attempts(
    conn: sa.Connection,
    where: Sequence[sa.ColumnElement[bool]],
    owner: dict[str, tuple[GroupKey, str]],
    summary: Summary,
) -> None:
    """Stream the attempts of the summed tasks: the tier mix, and each task's own work."""
    a, t = attempts.c, tasks.c
    stmt = (
        sa.select(
            a.task_id,
            a.attempt_no,
            a.role,
            a.tier,
            a.tier_index,
            a.outcome,
            a.cost_pusd,
            *(a[name] for name in TOKEN_COLUMNS),
        )
        .select_from(attempts.join(tasks, a.task_id == t.id))
        .where(*where)
    )
    width = len(REPORT_TIER_SUMS)
    first: dict[str, tuple[int, tuple[int, ...]]] = {}  # task: (attempt_no, tokens)
    answer: dict[str, tuple[int, int]] = {}  # task: (attempt_no, output tokens) of its acceptance
    status_at = {
        "accepted": TIER["accepted"],
        "rejected": TIER["rejected"],
        "error": TIER["errors"],
    }
    for row in conn.execute(stmt.execution_options(yield_per=20_000)):
        task_id = row[0]
        found = owner.get(task_id)
        if found is None:  # a deferred running task, or one created after the tasks were read
            continue
        gkey, task_role = found
        no, role, outcome, cost = int(row[1]), row[2], row[5], int(row[6] or 0)
        tkey: TierKey = (gkey[0], gkey[1], task_role, role, row[3], int(row[4]))
        values = summary.tiers.get(tkey)
        if values is None:
            values = summary.tiers[tkey] = [0] * width
        values[0] += 1
        at = status_at.get(outcome)
        if at is not None:
            values[at] += 1
        values[4] += cost
        if outcome in WASTED:
            values[5] += cost
        tokens = tuple(int(v or 0) for v in row[7:12])
        for i, n in enumerate(tokens):
            values[6 + i] += n
        if role != task_role:
            continue
        if task_id not in first or no < first[task_id][0]:
            first[task_id] = (no, tokens)
        if outcome == "accepted" and (task_id not in answer or no > answer[task_id][0]):
            answer[task_id] = (no, tokens[4])
    work = FACT["work_input_tokens"]
    for task_id, (_, tokens) in first.items():
        values = summary.groups[owner[task_id][0]]
        for i in range(4):
            values[work + i] += tokens[i]
        accepted = answer.get(task_id)
        values[work + 4] += accepted[1] if accepted is not None else tokens[4]


# -- exact percentiles over sorted runs ------------------------------------------------------------

_SIGN = 1 << 63
_MASK = (1 << 64) - 1


def _order_key(x: float) -> int:
    """An unsigned integer that sorts like the float *x* (IEEE 754 bits, sign folded)."""
    bits = int(struct.unpack("<Q", struct.pack("<d", x))[0])
    return bits ^ _MASK if bits & _SIGN else bits | _SIGN


def _from_key(key: int) -> float:
    bits = key ^ _SIGN if key & _SIGN else key ^ _MASK
    (x,) = struct.unpack("<d", struct.pack("<Q", bits))
    return float(x)


def _select(runs: Sequence[Sequence[float]], k: int) -> float:
    """The *k*-th smallest value (0-based) of the union of sorted *runs*, exactly.

    A binary search over the values' order keys: the smallest value with more than *k* values at
    or below it is the answer, and it is one of the values (the count only grows at a value).
    About 64 steps of one ``bisect`` per run, whatever the runs' lengths.
    """
    low = _order_key(min(run[0] for run in runs if run))
    high = _order_key(max(run[-1] for run in runs if run))
    while low < high:
        mid = (low + high) // 2
        value = _from_key(mid)
        if sum(bisect_right(run, value) for run in runs) > k:
            high = mid
        else:
            low = mid + 1
    return _from_key(low)


def percentile_of(runs: Iterable[Sequence[float]], q: float) -> tuple[int, float | None]:
    """(count, *q*-th percentile) of the union of sorted *runs*; ``(0, None)`` when empty.

    Linear interpolation between order statistics, exactly as
    :func:`tierwise.ledger.queries.percentile` (numpy's default) computes it on one sorted list:
    the same two values, the same arithmetic, so the same float.
    """
    chosen = [run for run in runs if len(run)]
    n = sum(len(run) for run in chosen)
    if n == 0:
        return 0, None
    pos = (n - 1) * q / 100
    low = int(pos)
    high = min(low + 1, n - 1)
    below = _select(chosen, low)
    above = below if high == low else _select(chosen, high)
    return n, below + (above - below) * (pos - low)


def runs_of(values: Iterable[Any]) -> array[float]:
    """A sorted run from any floats (for tests and callers holding plain lists)."""
    return array("d", sorted(float(v) for v in values))
