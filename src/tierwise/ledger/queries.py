"""Read queries over the ledger: recent attempts, aggregates, integrity.

Aggregates run in SQL where SQL is portable (sums and counts in integer pico-USD, exact on every
backend); latency percentiles are computed in Python because SQLite has no percentile function.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from tierwise.ledger.escalation import by_start as escalation_by_start
from tierwise.ledger.schema import (
    api_keys,
    attempts,
    budget_counters,
    from_pico,
    policy_revisions,
    reservations,
    tasks,
)
from tierwise.ledger.shadow import shadow_spend
from tierwise.ledger.sql import window_filters

_WASTED = ("rejected", "error")
_USAGE = (
    "input_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
    "output_tokens",
)


# -- rows as dicts ------------------------------------------------------------------------------


def attempt_dict(row: sa.Row[Any]) -> dict[str, Any]:
    """An attempts row as a plain dict (cost in USD, usage grouped, verdicts parsed)."""
    m = row._mapping
    return {
        "id": int(m["id"]),
        "task_id": m["task_id"],
        "attempt_no": m["attempt_no"],
        "kind": m["kind"],
        "session": m["session_id"],
        "role": m["role"],
        "tier": m["tier"],
        "tier_index": m["tier_index"],
        "model": m["model"],
        "provider": m["provider"],
        "outcome": m["outcome"],
        "usage": {k: int(m[k]) for k in _USAGE},
        "cost_usd": from_pico(m["cost_pusd"]),
        "latency_s": m["latency_s"],
        "verdicts": json.loads(m["verdicts_json"]),
        "failure": m["failure"],
        "error_class": m["error_class"],
        "escalated_from": m["escalated_from"],
        "stop_reason": m["stop_reason"],
        "output_sha256": m["output_sha256"],
        "output_chars": m["output_chars"],
        "output": m["output_text"],
        "started_at": m["started_at"],
        "recorded_at": m["recorded_at"],
    }


def task_dict(row: sa.Row[Any]) -> dict[str, Any]:
    """A tasks row as a plain dict (cost in USD, decision parsed)."""
    m = dict(row._mapping)
    m["cost_usd"] = from_pico(m.pop("cost_pusd"))
    m["decision"] = json.loads(m.pop("decision_json"))
    m["session"] = m.pop("session_id")
    m["prompt"] = m.pop("prompt_text")
    m["output"] = m.pop("output_text")
    return m


def _attempt_filters(
    since: datetime | None, until: datetime | None, kind: str | None
) -> list[sa.ColumnElement[bool]]:
    return window_filters(attempts.c.started_at, since, until, attempts.c.kind, kind)


def tail(
    conn: sa.Connection, n: int, *, kind: str | None, since: datetime | None
) -> list[dict[str, Any]]:
    """The latest *n* attempts, oldest first."""
    stmt = (
        sa.select(attempts)
        .where(*_attempt_filters(since, None, kind))
        .order_by(attempts.c.id.desc())
        .limit(max(n, 0))
    )
    return [attempt_dict(r) for r in reversed(conn.execute(stmt).all())]


def attempts_after(
    conn: sa.Connection,
    after_id: int,
    limit: int,
    *,
    since: datetime | None,
    until: datetime | None,
    kind: str | None,
    role: str | None,
) -> list[dict[str, Any]]:
    """Up to *limit* attempts with id > *after_id*, by id (keyset pagination)."""
    where = [attempts.c.id > after_id, *_attempt_filters(since, until, kind)]
    if role is not None:
        where.append(attempts.c.role == role)
    stmt = sa.select(attempts).where(*where).order_by(attempts.c.id).limit(limit)
    return [attempt_dict(r) for r in conn.execute(stmt).all()]


def task(conn: sa.Connection, task_id: str) -> dict[str, Any] | None:
    row = conn.execute(sa.select(tasks).where(tasks.c.id == task_id)).first()
    return None if row is None else task_dict(row)


def task_ids(conn: sa.Connection, prefix: str, limit: int) -> list[str]:
    prefix = prefix.strip()
    if not prefix:
        return []
    if conn.execute(sa.select(tasks.c.id).where(tasks.c.id == prefix)).first() is not None:
        return [prefix]
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    stmt = (
        sa.select(tasks.c.id)
        .where(tasks.c.id.like(f"{escaped}%", escape="\\"))
        .order_by(tasks.c.id)
        .limit(limit)
    )
    return [str(r[0]) for r in conn.execute(stmt).all()]


def policy_revision(conn: sa.Connection, revision: str) -> dict[str, Any] | None:
    c = policy_revisions.c
    row = conn.execute(
        sa.select(c.revision, c.policy_json, c.source, c.created_at).where(c.revision == revision)
    ).first()
    return None if row is None else dict(row._mapping)


def attempts_of(conn: sa.Connection, task_id: str) -> list[dict[str, Any]]:
    stmt = sa.select(attempts).where(attempts.c.task_id == task_id).order_by(attempts.c.attempt_no)
    return [attempt_dict(r) for r in conn.execute(stmt).all()]


# -- stats -------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """The *q*-th percentile (0-100) by linear interpolation; ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def stats(
    conn: sa.Connection,
    *,
    since: datetime | None,
    until: datetime | None,
    kind: str | None,
    role: str | None,
) -> dict[str, Any]:
    """Aggregates over tasks created and attempts started in [since, until).

    Returns a dict with overall ``tasks``, ``attempts``, ``spend_usd``, ``wasted_usd`` (cost of
    rejected and error attempts), ``outcomes``, task ``latency_p50_s``/``latency_p95_s`` and the
    escalation rate by the one definition (:mod:`tierwise.ledger.escalation`, the same figures
    as ``tierwise learn status``): ``resolved_tasks`` (live ladder tasks accepted or exhausted),
    ``escalated_tasks`` and ``escalation_rate``; the same per kind under ``by_kind``; and per
    (kind, tier) under ``by_kind_tier`` and per tier under ``by_tier``, where attempts, spend
    and waste are by the tier the attempts ran on, and ``tasks`` (resolved), ``escalated`` and
    ``escalation_rate`` by the tier the tasks *started* on.
    ``by_key`` lists the spend of tasks per gateway key (``key`` is ``None`` for tasks made
    without one), dearest first.
    ``role`` filters by the task's role (``live``, ``probe``, ``replay``; ``None`` for all);
    validator calls count with the task they were made for.
    """
    a, t = attempts.c, tasks.c
    joined = attempts.join(tasks, a.task_id == t.id)
    where = _attempt_filters(since, until, kind)
    if role is not None:
        where.append(t.role == role)
    wasted = sa.func.sum(sa.case((a.outcome.in_(_WASTED), a.cost_pusd), else_=0))

    # attempts, spend and waste per (kind, tier); shadow calls have their own line (below)
    per_tier_rows = conn.execute(
        sa.select(
            a.kind,
            a.tier,
            sa.func.min(a.tier_index),
            sa.func.count(),
            sa.func.sum(a.cost_pusd),
            wasted,
            sa.func.sum(sa.case((a.outcome == "accepted", 1), else_=0)),
            sa.func.sum(sa.case((a.outcome == "rejected", 1), else_=0)),
            sa.func.sum(sa.case((a.outcome == "error", 1), else_=0)),
        )
        .select_from(joined)
        .where(*where, a.role != "shadow")
        .group_by(a.kind, a.tier)
    ).all()

    # escalation per (kind, starting tier), by the one definition (tierwise.ledger.escalation)
    task_where = window_filters(t.created_at, since, until, t.kind, kind)
    if role is not None:
        task_where.append(t.role == role)
    windowed = since is not None or until is not None
    escalation = escalation_by_start(conn, task_where, by_time=windowed)

    # tasks per kind: counts, outcomes and latencies
    task_rows = conn.execute(sa.select(t.kind, t.outcome, t.latency_s).where(*task_where)).all()

    by_kind: dict[str, dict[str, Any]] = {}
    outcomes: dict[str, int] = defaultdict(int)
    latencies: dict[str, list[float]] = defaultdict(list)

    def kind_entry(k: str) -> dict[str, Any]:
        return by_kind.setdefault(
            k,
            {
                "tasks": 0,
                "attempts": 0,
                "spend_usd": Decimal(0),
                "wasted_usd": Decimal(0),
                "outcomes": defaultdict(int),
                "resolved_tasks": 0,
                "escalated_tasks": 0,
                "escalation_rate": None,
                "latency_p50_s": None,
                "latency_p95_s": None,
            },
        )

    for k, outcome, latency in task_rows:
        entry = kind_entry(k)
        entry["tasks"] += 1
        entry["outcomes"][outcome] += 1
        outcomes[outcome] += 1
        if latency is not None and outcome != "running":
            latencies[k].append(float(latency))

    by_kind_tier: list[dict[str, Any]] = []
    by_tier: dict[str, dict[str, Any]] = {}
    per_tier = {(r[0], r[1]): r for r in per_tier_rows}
    for key in sorted(set(per_tier) | set(escalation)):
        k, tier = key
        start_index, resolved, escalated = escalation.get(key, (0, 0, 0))
        found = per_tier.get(key)
        if found is None:  # tasks started here, but no attempt ran on the tier in the window
            index, n, spend, waste, acc, rej, err = start_index, 0, 0, 0, 0, 0, 0
        else:
            _, _, index, n, spend, waste, acc, rej, err = found
        row = {
            "kind": k,
            "tier": tier,
            "tier_index": int(index),
            "tasks": resolved,
            "attempts": int(n),
            "accepted": int(acc or 0),
            "rejected": int(rej or 0),
            "errors": int(err or 0),
            "escalated": escalated,
            "escalation_rate": _rate(escalated, resolved),
            "spend_usd": from_pico(spend),
            "wasted_usd": from_pico(waste),
        }
        by_kind_tier.append(row)
        entry = kind_entry(k)
        entry["attempts"] += row["attempts"]
        entry["spend_usd"] += row["spend_usd"]
        entry["wasted_usd"] += row["wasted_usd"]
        entry["escalated_tasks"] += escalated
        entry["resolved_tasks"] += resolved
        agg = by_tier.setdefault(
            tier,
            {
                "tier_index": int(index),
                "tasks": 0,
                "attempts": 0,
                "accepted": 0,
                "rejected": 0,
                "errors": 0,
                "escalated": 0,
                "spend_usd": Decimal(0),
                "wasted_usd": Decimal(0),
            },
        )
        for name in ("tasks", "attempts", "accepted", "rejected", "errors", "escalated"):
            agg[name] += row[name]
        agg["spend_usd"] += row["spend_usd"]
        agg["wasted_usd"] += row["wasted_usd"]
    for agg in by_tier.values():
        agg["escalation_rate"] = _rate(agg["escalated"], agg["tasks"])
    by_kind_tier.sort(key=lambda r: (r["kind"], r["tier_index"], r["tier"]))

    all_latencies: list[float] = []
    for k, entry in by_kind.items():
        entry["escalation_rate"] = _rate(entry["escalated_tasks"], entry["resolved_tasks"])
        entry["latency_p50_s"] = percentile(latencies[k], 50)
        entry["latency_p95_s"] = percentile(latencies[k], 95)
        entry["outcomes"] = dict(entry["outcomes"])
        all_latencies.extend(latencies[k])
    escalated_total = sum(e["escalated_tasks"] for e in by_kind.values())
    resolved_total = sum(e["resolved_tasks"] for e in by_kind.values())

    # spend per gateway key: tasks created in the window, by the key that created them
    key_rows = conn.execute(
        sa.select(t.key_id, api_keys.c.name, sa.func.count(), sa.func.sum(t.cost_pusd))
        .select_from(tasks.outerjoin(api_keys, api_keys.c.id == t.key_id))
        .where(*task_where)
        .group_by(t.key_id, api_keys.c.name)
    ).all()
    by_key = sorted(
        (
            {
                "key_id": key_id,
                "key": name if key_id is not None else None,
                "tasks": int(n),
                "spend_usd": from_pico(spend),
            }
            for key_id, name, n, spend in key_rows
        ),
        key=lambda r: (-r["spend_usd"], str(r["key"])),
    )

    return {
        "since": since,
        "until": until,
        "kind": kind,
        "role": role,
        "by_key": by_key,
        "tasks": sum(e["tasks"] for e in by_kind.values()),
        "attempts": sum(e["attempts"] for e in by_kind.values()),
        "spend_usd": sum((e["spend_usd"] for e in by_kind.values()), Decimal(0)),
        "wasted_usd": sum((e["wasted_usd"] for e in by_kind.values()), Decimal(0)),
        "resolved_tasks": resolved_total,
        "escalated_tasks": escalated_total,
        "escalation_rate": _rate(escalated_total, resolved_total),
        "outcomes": dict(outcomes),
        "latency_p50_s": percentile(all_latencies, 50),
        "latency_p95_s": percentile(all_latencies, 95),
        "by_kind": dict(sorted(by_kind.items())),
        "by_tier": dict(sorted(by_tier.items(), key=lambda kv: (kv[1]["tier_index"], kv[0]))),
        "by_kind_tier": by_kind_tier,
        # shadow calls: paid from the shadow budget, in none of the figures above
        "shadow": shadow_spend(conn, since=since, until=until, kind=kind),
        # probes: part of their tasks' spend above, and on a line of their own
        "probes": probe_spend(conn, where),
    }


def probe_spend(conn: sa.Connection, where: list[sa.ColumnElement[bool]]) -> dict[str, Any]:
    """Demotion probes (attempts with role ``probe``) among the attempts matching *where* (on
    attempts joined to their tasks): ``attempts``, ``passed``, ``rejected``, ``errors``,
    ``spend_usd``, and per kind and tier under ``by_kind_tier``."""
    a, t = attempts.c, tasks.c
    rows = conn.execute(
        sa.select(
            a.kind,
            a.tier,
            sa.func.min(a.tier_index),
            sa.func.count(),
            sa.func.sum(sa.case((a.outcome == "accepted", 1), else_=0)),
            sa.func.sum(sa.case((a.outcome == "rejected", 1), else_=0)),
            sa.func.sum(a.cost_pusd),
        )
        .select_from(attempts.join(tasks, a.task_id == t.id))
        .where(*where, a.role == "probe")
        .group_by(a.kind, a.tier)
    ).all()
    by = sorted(
        (
            {
                "kind": k,
                "tier": tier,
                "tier_index": int(index),
                "attempts": int(n),
                "passed": int(ok or 0),
                "rejected": int(bad or 0),
                "errors": int(n) - int(ok or 0) - int(bad or 0),
                "spend_usd": from_pico(spend),
            }
            for k, tier, index, n, ok, bad, spend in rows
        ),
        key=lambda r: (r["kind"], r["tier_index"]),
    )
    return {
        "attempts": sum(r["attempts"] for r in by),
        "passed": sum(r["passed"] for r in by),
        "rejected": sum(r["rejected"] for r in by),
        "errors": sum(r["errors"] for r in by),
        "spend_usd": sum((r["spend_usd"] for r in by), Decimal(0)),
        "by_kind_tier": by,
    }


# -- integrity ---------------------------------------------------------------------------------


def integrity_problems(conn: sa.Connection, *, stale_before: datetime | None = None) -> list[str]:
    """Everything wrong with the ledger, one line each; empty when it is sound.

    Checks storage integrity and foreign keys (SQLite), that each finished task's cost equals
    the sum of its attempts' costs (within one pico-dollar of rounding per attempt) and its
    attempt count the number of attempt rows (shadow calls are not the task's), that
    ``escalated_from`` names an attempt of the same task, that every budget counter's held
    amount equals its open reservations, that no reservation is still held for a task that has
    finished, and (with *stale_before*) that no task created before then is still ``running``.
    """
    problems: list[str] = []
    if conn.dialect.name == "sqlite":
        report = [str(r[0]) for r in conn.exec_driver_sql("PRAGMA integrity_check").all()]
        if report != ["ok"]:
            problems.extend(f"storage: {line}" for line in report)
        for table, rowid, parent, _fk in conn.exec_driver_sql("PRAGMA foreign_key_check").all():
            problems.append(f"foreign key: {table} row {rowid} points to a missing {parent} row")
    a, t = attempts.c, tasks.c
    sums = (
        sa.select(
            a.task_id,
            sa.func.count().label("n"),
            sa.func.sum(a.cost_pusd).label("cost"),
        )
        .where(a.role != "shadow")  # shadow calls join the task's rows, not its cost or count
        .group_by(a.task_id)
        .subquery()
    )
    rows = conn.execute(
        sa.select(t.id, t.cost_pusd, t.attempts, sums.c.n, sums.c.cost)
        .select_from(tasks.outerjoin(sums, sums.c.task_id == t.id))
        .where(t.outcome != "running")
    ).all()
    for task_id, task_cost, n_recorded, n_found, found_cost in rows:
        n_rows = int(n_found or 0)
        rows_cost = int(found_cost or 0)
        if int(n_recorded) != n_rows:
            problems.append(
                f"task {task_id}: {n_recorded} attempt(s) recorded on the task, "
                f"{n_rows} attempt row(s) found"
            )
        if abs(int(task_cost) - rows_cost) > max(n_rows, 1):
            problems.append(
                f"task {task_id}: cost ${from_pico(int(task_cost))} recorded, "
                f"its attempts sum to ${from_pico(rows_cost)}"
            )
    prev = attempts.alias("prev")
    orphans = conn.execute(
        sa.select(a.task_id, a.attempt_no, a.escalated_from)
        .select_from(
            attempts.outerjoin(
                prev,
                sa.and_(prev.c.task_id == a.task_id, prev.c.attempt_no == a.escalated_from),
            )
        )
        .where(a.escalated_from.is_not(None), prev.c.id.is_(None))
    ).all()
    for task_id, attempt_no, escalated_from in orphans:
        problems.append(
            f"task {task_id}: attempt {attempt_no} escalated from attempt {escalated_from}, "
            "which is not recorded"
        )
    held: dict[str, int] = defaultdict(int)
    r = reservations.c
    for scopes_json, amount in conn.execute(
        sa.select(r.scopes_json, r.amount_pusd).where(r.state == "held")
    ).all():
        for scope in json.loads(scopes_json):
            held[scope] += int(amount)
    b = budget_counters.c
    for scope, spent, counter_held in conn.execute(
        sa.select(b.scope, b.spent_pusd, b.held_pusd)
    ).all():
        if int(counter_held) != held.get(scope, 0):
            problems.append(
                f"budget {scope}: ${from_pico(counter_held)} held on the counter, open "
                f"reservations hold ${from_pico(held.get(scope, 0))}"
            )
        if int(spent) < 0 or int(counter_held) < 0:
            problems.append(f"budget {scope}: negative counter")
    for res_id, task_id, amount, outcome in conn.execute(
        sa.select(r.id, r.task_id, r.amount_pusd, t.outcome)
        .select_from(reservations.join(tasks, tasks.c.id == r.task_id))
        .where(r.state == "held", t.outcome != "running")
    ).all():
        problems.append(
            f"reservation {res_id}: ${from_pico(int(amount))} still held for task {task_id}, "
            f"which ended {outcome}"
        )
    if stale_before is not None:
        for task_id, created in conn.execute(
            sa.select(t.id, t.created_at).where(t.outcome == "running", t.created_at < stale_before)
        ).all():
            problems.append(
                f"task {task_id}: still running since {created:%Y-%m-%d %H:%M} UTC; the process "
                "that ran it stopped before recording its end"
            )
    return problems
