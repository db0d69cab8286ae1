"""The measures every report shares, read off a window's :class:`~tierwise.ledger.summary.Summary`.

One place decides what each figure means, so the weekly report, ``report compare`` and the
advisor cannot disagree:

* **spend** is the stored cost of every attempt of the tasks created in the window, replayed
  rows (``tierwise eval``) left out — they were never paid for. It splits into lines that add up
  to it exactly: routed live traffic, concrete-model calls, probes and shadow calls (probe and
  shadow tasks, and the probe or shadow calls made inside other tasks);
* the **tier mix** counts the calls of live tasks by the tier they ran on (validators' and the
  judge's calls included, probe and shadow calls not): its money is the routed and
  concrete-model lines together;
* **escalation**, first try, waste, cost per accepted output and the latency split are the
  analytics' own (:class:`tierwise.analytics.Totals`) over the counted tasks — live traffic on
  the ladder — computed from the same sums;
* **flags** are read live (people flag tasks after the fact): the distinct counted tasks carrying
  each flag, classified by :func:`tierwise.ledger.escalation.task_facts`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from tierwise.analytics import Latency, Rate, Totals
from tierwise.ledger.escalation import COUNTED_ROLE, task_facts
from tierwise.ledger.feedback import FLAGS
from tierwise.ledger.schema import api_keys, feedback, from_pico, tasks
from tierwise.ledger.summary import FACT, TIER, GroupKey, Summary, percentile_of
from tierwise.pricing import Usage

__all__ = [
    "FlagFacts",
    "Lines",
    "TierShare",
    "answer_tiers",
    "by_start",
    "counted",
    "day_spend",
    "flag_facts",
    "key_names",
    "key_spend",
    "kind_totals",
    "lines_of",
    "session_spend",
    "spend_by",
    "tier_mix",
    "totals_of",
    "work_usage",
]

_SIDE = ("probe", "shadow")
_UNRESOLVED = ("budget", "error", "running")


def counted(key: GroupKey) -> bool:
    """Live traffic on the ladder: the tasks the escalation rate counts."""
    return key[2] == COUNTED_ROLE and key[4] >= 0


def _spent(key: GroupKey) -> bool:
    return key[2] != "replay"


def totals_of(
    groups: Iterable[list[int]], latency: tuple[Latency, Latency] | None = None
) -> Totals:
    """The analytics' :class:`~tierwise.analytics.Totals` of summed groups (exact, pico-USD)."""
    n = [0] * len(FACT)
    for values in groups:
        for i, v in enumerate(values):
            n[i] += v
    direct, escalated = latency or (Latency(), Latency())
    return Totals(
        tasks=n[FACT["tasks"]],
        resolved=n[FACT["resolved"]],
        accepted=n[FACT["accepted"]],
        exhausted=n[FACT["exhausted"]],
        unresolved={o: n[FACT[o]] for o in _UNRESOLVED if n[FACT[o]]},
        escalated=n[FACT["escalated"]],
        first_try=n[FACT["first_try"]],
        checked=n[FACT["checked"]],
        fallbacks=n[FACT["fallbacks"]],
        cost_usd=from_pico(n[FACT["cost_pusd"]]),
        wasted_usd=from_pico(n[FACT["wasted_pusd"]]),
        validator_usd=from_pico(n[FACT["validator_pusd"]]),
        probe_usd=from_pico(n[FACT["probe_pusd"]]),
        shadow_usd=from_pico(n[FACT["shadow_pusd"]]),
        latency_direct=direct,
        latency_escalated=escalated,
    )


def fleet_totals(summary: Summary) -> Totals:
    """Every counted task, with the latency of direct and escalated tasks (p50, p95)."""
    latency = []
    for escalated in (False, True):
        runs = summary.latencies(escalated)
        n, p50 = percentile_of(runs, 50)
        _, p95 = percentile_of(runs, 95)
        latency.append(Latency(n, p50, p95))
    groups = (v for k, v in summary.groups.items() if counted(k))
    return totals_of(groups, (latency[0], latency[1]))


def kind_totals(summary: Summary) -> dict[str, Totals]:
    """Counted tasks per kind (latency percentiles are the fleet's only)."""
    by_kind: dict[str, list[list[int]]] = defaultdict(list)
    for key, values in summary.groups.items():
        if counted(key):
            by_kind[key[1]].append(values)
    return {kind: totals_of(members) for kind, members in sorted(by_kind.items())}


@dataclass(frozen=True, slots=True)
class Lines:
    """Spend by line, in pico-USD; the four spent lines add up to ``total``."""

    routed: int = 0  # live tasks on the ladder, less their probe and shadow calls
    passthrough: int = 0  # concrete-model calls, less their probe and shadow calls
    probe: int = 0
    shadow: int = 0
    replay: int = 0  # replayed rows: priced, never spent, outside the total

    @property
    def total(self) -> int:
        return self.routed + self.passthrough + self.probe + self.shadow

    def as_dict(self) -> dict[str, Any]:
        return {
            "total_usd": str(from_pico(self.total)),
            "routed_usd": str(from_pico(self.routed)),
            "passthrough_usd": str(from_pico(self.passthrough)),
            "probe_usd": str(from_pico(self.probe)),
            "shadow_usd": str(from_pico(self.shadow)),
            "replay_usd_not_spent": str(from_pico(self.replay)),
        }


def lines_of(summary: Summary) -> Lines:
    """The window's spend by line (see the module docstring)."""
    routed = passthrough = probe = shadow = replay = 0
    for key, v in summary.groups.items():
        role, cost = key[2], v[FACT["cost_pusd"]]
        inner_probe, inner_shadow = v[FACT["probe_pusd"]], v[FACT["shadow_pusd"]]
        if role == "replay":
            replay += cost
        elif role == "shadow":
            shadow += cost
        elif role == "probe":
            probe += cost - inner_shadow
            shadow += inner_shadow
        else:
            probe += inner_probe
            shadow += inner_shadow
            if key[4] >= 0:
                routed += cost - inner_probe - inner_shadow
            else:
                passthrough += cost - inner_probe - inner_shadow
    return Lines(routed, passthrough, probe, shadow, replay)


@dataclass(frozen=True, slots=True)
class TierShare:
    """One tier's part of the live traffic's calls and money."""

    tier: str
    tier_index: int
    calls: int
    cost_pusd: int
    calls_share: float | None
    cost_share: float | None

    @property
    def cost_usd(self) -> Decimal:
        return from_pico(self.cost_pusd)

    def as_dict(self) -> dict[str, Any]:
        return {
            "tier": self.tier,
            "tier_index": self.tier_index,
            "calls": self.calls,
            "calls_share": self.calls_share,
            "cost_usd": str(self.cost_usd),
            "cost_share": self.cost_share,
        }


def tier_mix(summary: Summary, kind: str | None = None) -> tuple[TierShare, ...]:
    """Calls and money of live tasks per tier they ran on (probe and shadow calls left out),
    bottom tier first, concrete-model calls (``passthrough``, index -1) first of all."""
    found: dict[str, list[int]] = {}
    for key, v in summary.tiers.items():
        if key[2] != COUNTED_ROLE or key[3] in _SIDE or (kind is not None and key[1] != kind):
            continue
        entry = found.setdefault(key[4], [key[5], 0, 0])
        entry[0] = min(entry[0], key[5])
        entry[1] += v[TIER["calls"]]
        entry[2] += v[TIER["cost_pusd"]]
    calls = sum(e[1] for e in found.values())
    money = sum(e[2] for e in found.values())
    return tuple(
        TierShare(
            tier=tier,
            tier_index=e[0],
            calls=e[1],
            cost_pusd=e[2],
            calls_share=e[1] / calls if calls else None,
            cost_share=e[2] / money if money else None,
        )
        for tier, e in sorted(found.items(), key=lambda kv: (kv[1][0], kv[0]))
    )


def day_spend(summary: Summary) -> dict[date, tuple[int, int]]:
    """(tasks, pico-USD spent) per UTC day of creation, replayed rows left out."""
    out: dict[date, list[int]] = defaultdict(lambda: [0, 0])
    for key, v in summary.groups.items():
        if _spent(key):
            entry = out[key[0].date()]
            entry[0] += v[FACT["tasks"]]
            entry[1] += v[FACT["cost_pusd"]]
    return {day: (e[0], e[1]) for day, e in sorted(out.items())}


def spend_by(summary: Summary, position: int) -> dict[Any, tuple[int, int]]:
    """(tasks, pico-USD) per value of one group dimension (1 kind, 3 starting tier), dearest
    first; replayed rows left out."""
    out: dict[Any, list[int]] = defaultdict(lambda: [0, 0])
    for key, v in summary.groups.items():
        if _spent(key):
            entry = out[key[position]]
            entry[0] += v[FACT["tasks"]]
            entry[1] += v[FACT["cost_pusd"]]
    ordered = sorted(out.items(), key=lambda kv: (-kv[1][1], str(kv[0])))
    return {k: (e[0], e[1]) for k, e in ordered}


def session_spend(summary: Summary) -> dict[str, tuple[int, int]]:
    """(tasks, pico-USD) per session, dearest first; replayed rows left out."""
    return _dearest(summary.sessions)


def key_spend(summary: Summary) -> dict[int | None, tuple[int, int]]:
    """(tasks, pico-USD) per gateway key id (``None``: no key), dearest first; replayed rows
    left out."""
    return _dearest(summary.keys)


def _dearest(pairs: dict[Any, list[int]]) -> dict[Any, tuple[int, int]]:
    out: dict[Any, list[int]] = defaultdict(lambda: [0, 0])
    for (_, name), v in pairs.items():
        entry = out[name]
        entry[0] += v[0]
        entry[1] += v[1]
    ordered = sorted(out.items(), key=lambda kv: (-kv[1][1], str(kv[0])))
    return {k: (e[0], e[1]) for k, e in ordered}


def by_start(summary: Summary) -> dict[tuple[str, str], tuple[int, Totals]]:
    """Counted tasks per (kind, starting tier): the tier's index and their totals."""
    members: dict[tuple[str, str], list[list[int]]] = defaultdict(list)
    index: dict[tuple[str, str], int] = {}
    for key, values in summary.groups.items():
        if counted(key):
            members[(key[1], key[3])].append(values)
            index[(key[1], key[3])] = key[4]
    return {k: (index[k], totals_of(v)) for k, v in sorted(members.items())}


def answer_tiers(summary: Summary) -> dict[str, Counter[str]]:
    """Accepted answers of live tasks per kind and the tier that gave them."""
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for key, v in summary.tiers.items():
        if key[2] == COUNTED_ROLE and key[3] == COUNTED_ROLE and v[TIER["accepted"]]:
            out[key[1]][key[4]] += v[TIER["accepted"]]
    return out


def start_tiers(summary: Summary) -> dict[str, Counter[str]]:
    """Counted tasks per kind and the tier they started on."""
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for key, v in summary.groups.items():
        if counted(key):
            out[key[1]][key[3]] += v[FACT["tasks"]]
    return out


def work_usage(
    summary: Summary, kind: str | None = None, start_tier: str | None = None
) -> tuple[int, Usage]:
    """(tasks, their own work as one :class:`Usage`) over the counted tasks (of one kind, and
    of those that started on one tier)."""
    n, buckets = 0, [0] * 5
    start = FACT["work_input_tokens"]
    for key, v in summary.groups.items():
        if (
            counted(key)
            and (kind is None or key[1] == kind)
            and (start_tier is None or key[3] == start_tier)
        ):
            n += v[FACT["tasks"]]
            for i in range(5):
                buckets[i] += v[start + i]
    return n, Usage(*buckets)


def key_names(conn: sa.Connection) -> dict[int, str]:
    """Gateway key ids to their names (revoked keys included)."""
    k = api_keys.c
    return {int(i): str(name) for i, name in conn.execute(sa.select(k.id, k.name))}


@dataclass(frozen=True, slots=True)
class FlagFacts:
    """People's flags on the window's counted tasks: distinct tasks per flag.

    ``accepted`` / ``first_try``: among accepted tasks, and among tasks accepted on their first
    attempt (the routing efficiency ratio's parts), per flag and for any flag.
    """

    accepted: dict[str, int] = field(default_factory=dict)
    accepted_any: int = 0
    first_try: dict[str, int] = field(default_factory=dict)
    first_try_any: int = 0
    by_kind: dict[str, dict[str, int]] = field(default_factory=dict)

    def rates(self, accepted: int, kind: str | None = None) -> dict[str, Rate]:
        """Each flag's share of *accepted* tasks (of the fleet, or of one *kind*)."""
        counts = self.accepted if kind is None else self.by_kind.get(kind, {})
        return {flag: Rate(counts.get(flag, 0), accepted) for flag in FLAGS}


def flag_facts(conn: sa.Connection, since: datetime, until: datetime) -> FlagFacts:
    """The flags on tasks created in [since, until), each task classified by the one definition.

    Driven from the feedback table (small) to its tasks by primary key, never the other way
    round: a join bounded by the tasks' ``created_at`` lets SQLite's planner walk a week of
    tasks by that index to find a few thousand flags (2 s for a million attempts). A flag is
    written after its task, so flags older than the window (less a day for clocks of several
    hosts that disagree) cannot be on its tasks; the window itself is checked on each task.
    """
    fb, t = feedback.c, tasks.c
    rows = conn.execute(
        sa.select(fb.task_id, fb.flag).where(fb.created_at >= since - timedelta(days=1))
    ).all()
    flags: dict[str, set[str]] = defaultdict(set)
    for task_id, flag in rows:
        flags[str(task_id)].add(str(flag))
    ids = sorted(flags)
    accepted: Counter[str] = Counter()
    first: Counter[str] = Counter()
    by_kind: dict[str, Counter[str]] = defaultdict(Counter)
    accepted_any = first_any = 0
    for start in range(0, len(ids), 500):
        f = task_facts([t.id.in_(ids[start : start + 500])]).c
        for task_id, kind, outcome, is_counted, first_try, created in conn.execute(
            sa.select(f.task_id, f.kind, f.outcome, f.counted, f.first_try, f.created_at)
        ):
            if not is_counted or outcome != "accepted" or not since <= created < until:
                continue
            found = flags[str(task_id)] & set(FLAGS)
            accepted.update(found)
            by_kind[str(kind)].update(found)
            accepted_any += bool(found)
            if first_try:
                first.update(found)
                first_any += bool(found)
    return FlagFacts(
        accepted={flag: accepted[flag] for flag in FLAGS},
        accepted_any=accepted_any,
        first_try={flag: first[flag] for flag in FLAGS},
        first_try_any=first_any,
        by_kind={kind: dict(counts) for kind, counts in sorted(by_kind.items())},
    )


def shares(counter: Counter[str] | dict[str, int]) -> dict[str, float]:
    """Each entry's share of the total (empty for none)."""
    total = sum(counter.values())
    return {k: v / total for k, v in counter.items()} if total else {}


def chunks(values: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]
