"""Shadow mode in the ledger: agreement verdicts, agreement rates, shadow spend, flags.

Shadow calls are ordinary attempts on their task with role ``shadow``; what this module adds is
the table of verdicts (:data:`~tierwise.ledger.schema.shadow_agreements`, one row per pair of
tiers that answered a shadowed task) and the reads over it:

* :func:`agreement` — per kind and pair of tiers: how often both passed their validators, how
  often the answers agreed, and where a validator decided (the answers differ and exactly one
  passed) or people flagged the task ``wrong`` (the delivered answer is wrong; a differing
  answer that passed its validators is then counted right) which tier was right; every rate
  with a 95% Wilson interval. ``low_as_good`` — the cheaper tier passed and agreed with the
  dearer one, or passed where the dearer one failed — is the shadow-proven bound a learner may
  take as evidence that the kind could start lower;
* :func:`shadow_spend` — what shadow calls cost, on its own line;
* :func:`wrong_flags` — the tasks people flagged ``wrong`` (``tierwise feedback``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from tierwise.ledger.rows import Row
from tierwise.ledger.schema import attempts, feedback, from_pico, shadow_agreements, tasks
from tierwise.ledger.sql import insert_ignore, window_filters

if TYPE_CHECKING:
    from tierwise.ledger.core import Tx
    from tierwise.records import AgreementRecord, TierAnswer

__all__ = ["ShadowBook", "agreement", "shadow_spend", "wilson", "wrong_flags"]

#: z for a two-sided 95% interval.
Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> dict[str, Any]:
    """``{"count": k, "of": n, "rate", "low", "high"}``: the share k/n with its Wilson score
    interval (``None`` rate and bounds when n is 0)."""
    if n <= 0:
        return {"count": k, "of": n, "rate": None, "low": None, "high": None}
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return {
        "count": k,
        "of": n,
        "rate": p,
        "low": max(0.0, centre - half),
        "high": min(1.0, centre + half),
    }


def _side(prefix: str, answer: TierAnswer) -> dict[str, Any]:
    return {
        f"{prefix}_tier": answer.tier,
        f"{prefix}_tier_index": answer.tier_index,
        f"{prefix}_model": answer.model[:255],
        f"{prefix}_attempt_no": answer.attempt_no,
        f"{prefix}_role": answer.role,
        f"{prefix}_passed": answer.passed,
    }


def agreement_values(r: AgreementRecord) -> dict[str, Any]:
    """The ``shadow_agreements`` row of one verdict (no answer text)."""
    return {
        "task_id": r.task_id,
        "kind": r.kind,
        **_side("low", r.low),
        **_side("high", r.high),
        "agree": r.agree,
        "method": r.method,
        "similarity": r.similarity,
        "created_at": r.created_at,
    }


#: What makes a verdict the same one again (a spooled row replayed after a crash).
_UNIQUE = ("task_id", "low_attempt_no", "high_attempt_no")


def insert_agreement(conn: sa.Connection, values: dict[str, Any], *, replay: bool) -> None:
    """Write one verdict; with *replay* one already written is left as it is."""
    if replay:
        insert_ignore(conn, shadow_agreements, _UNIQUE, values)
    else:
        conn.execute(sa.insert(shadow_agreements), [values])


def wrong_flags(conn: sa.Connection, task_ids: Iterable[str] | None = None) -> set[str]:
    """The ids of tasks someone flagged ``wrong`` (of *task_ids*, or all): the latest flag of
    any author (``tierwise feedback``) says the answer the caller got was wrong."""
    f = feedback.c
    stmt = sa.select(f.task_id).where(f.flag == "wrong").distinct()
    if task_ids is None:
        return {str(r[0]) for r in conn.execute(stmt)}
    wanted = list(dict.fromkeys(task_ids))
    found: set[str] = set()
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        found.update(str(r[0]) for r in conn.execute(stmt.where(f.task_id.in_(chunk))))
    return found


def shadow_answer_numbers(
    conn: sa.Connection, *, since: datetime | None = None, kind: str | None = None
) -> set[tuple[str, int]]:
    """(task id, attempt number) of every shadow answer compared (validator calls excluded)."""
    s = shadow_agreements.c
    where = window_filters(s.created_at, since, None, s.kind, kind)
    found: set[tuple[str, int]] = set()
    for side in ("low", "high"):
        stmt = sa.select(s.task_id, s[f"{side}_attempt_no"]).where(
            s[f"{side}_role"] == "shadow", *where
        )
        found.update((str(t), int(n)) for t, n in conn.execute(stmt))
    return found


def agreement(
    conn: sa.Connection,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    kind: str | None = None,
) -> list[dict[str, Any]]:
    """Agreement per (kind, cheaper tier, dearer tier), over pairs compared in [since, until).

    Each entry: ``kind``, ``low_tier``, ``high_tier``, ``methods`` (how answers were compared),
    ``pairs``, and Wilson-interval rates (``count``, ``of``, ``rate``, ``low``, ``high``):
    ``both_passed``, ``low_passed``, ``high_passed``, ``agree`` (of pairs with a comparable
    answer), ``low_as_good``; then ``decided`` (pairs where a validator or a flag says which was
    right), ``low_right``/``high_right`` (of ``decided``) and ``flagged``.
    """
    s = shadow_agreements.c
    where = window_filters(s.created_at, since, until, s.kind, kind)
    rows = conn.execute(
        sa.select(
            s.task_id,
            s.kind,
            s.low_tier,
            s.low_tier_index,
            s.high_tier,
            s.high_tier_index,
            s.low_passed,
            s.high_passed,
            s.low_role,
            s.high_role,
            s.low_attempt_no,
            s.high_attempt_no,
            s.agree,
            s.method,
        )
        .where(*where)
        .order_by(s.id)
    ).all()
    flagged = wrong_flags(conn, (r.task_id for r in rows)) if rows else set()
    delivered = _delivered(conn, {r.task_id for r in rows if r.task_id in flagged})
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in rows:
        key = (str(r.kind), str(r.low_tier), str(r.high_tier))
        g = groups.get(key)
        if g is None:
            g = groups[key] = {
                "order": (int(r.low_tier_index), int(r.high_tier_index)),
                "methods": {},
                "pairs": 0,
                "both": 0,
                "low_ok": 0,
                "high_ok": 0,
                "compared": 0,
                "agree": 0,
                "as_good": 0,
                "decided": 0,
                "low_right": 0,
                "high_right": 0,
                "flagged": 0,
            }
        low_ok, high_ok = bool(r.low_passed), bool(r.high_passed)
        g["methods"][str(r.method)] = g["methods"].get(str(r.method), 0) + 1
        g["pairs"] += 1
        g["both"] += low_ok and high_ok
        g["low_ok"] += low_ok
        g["high_ok"] += high_ok
        if r.agree is not None:
            g["compared"] += 1
            g["agree"] += bool(r.agree)
        g["as_good"] += low_ok and (bool(r.agree) or not high_ok)
        right = _who_was_right(r, delivered.get(str(r.task_id)))
        if right is not None:
            g["decided"] += 1
            g[f"{right}_right"] += 1
            g["flagged"] += str(r.task_id) in flagged
    out = []
    for (k, low, high), g in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[1]["order"])):
        out.append(
            {
                "kind": k,
                "low_tier": low,
                "high_tier": high,
                "methods": g["methods"],
                "pairs": g["pairs"],
                "both_passed": wilson(g["both"], g["pairs"]),
                "low_passed": wilson(g["low_ok"], g["pairs"]),
                "high_passed": wilson(g["high_ok"], g["pairs"]),
                "agree": wilson(g["agree"], g["compared"]),
                "low_as_good": wilson(g["as_good"], g["pairs"]),
                "decided": g["decided"],
                "low_right": wilson(g["low_right"], g["decided"]),
                "high_right": wilson(g["high_right"], g["decided"]),
                "flagged": g["flagged"],
            }
        )
    return out


def _delivered(conn: sa.Connection, task_ids: set[str]) -> dict[str, int]:
    """Task id → the attempt number of its delivered answer (its live accepted attempt)."""
    if not task_ids:
        return {}
    a = attempts.c
    t = tasks.c
    stmt = (
        sa.select(a.task_id, a.attempt_no)
        .select_from(attempts.join(tasks, t.id == a.task_id))
        .where(a.task_id.in_(sorted(task_ids)), a.outcome == "accepted", a.role == t.role)
    )
    return {str(tid): int(no) for tid, no in conn.execute(stmt)}


def _who_was_right(row: Any, delivered_no: int | None) -> str | None:
    """``low``/``high`` when the pair's answers differ and a validator or a flag tells them apart.

    A validator decides when exactly one passed. A ``wrong`` flag makes the delivered answer
    wrong; the other side is then right when it passed its validators.
    """
    if row.agree is not False:
        return None
    if delivered_no is not None:
        if row.low_role == "live" and row.low_attempt_no == delivered_no and row.high_passed:
            return "high"
        if row.high_role == "live" and row.high_attempt_no == delivered_no and row.low_passed:
            return "low"
    if bool(row.low_passed) != bool(row.high_passed):
        return "low" if row.low_passed else "high"
    return None


def shadow_spend(
    conn: sa.Connection,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    kind: str | None = None,
) -> dict[str, Any]:
    """Shadow calls in [since, until): ``attempts``, ``spend_usd``, and both per kind and tier
    under ``by_kind_tier`` — spend that no caller's budget paid and no escalation counts."""
    a = attempts.c
    where = [a.role == "shadow", *window_filters(a.started_at, since, until, a.kind, kind)]
    rows = conn.execute(
        sa.select(
            a.kind,
            a.tier,
            sa.func.min(a.tier_index),
            sa.func.count(),
            sa.func.sum(a.cost_pusd),
            sa.func.count(sa.distinct(a.task_id)),
        )
        .where(*where)
        .group_by(a.kind, a.tier)
    ).all()
    by = [
        {
            "kind": k,
            "tier": tier,
            "tier_index": int(index),
            "attempts": int(n),
            "tasks": int(shadowed),
            "spend_usd": from_pico(spend),
        }
        for k, tier, index, n, spend, shadowed in rows
    ]
    by.sort(key=lambda r: (r["kind"], r["tier_index"], r["tier"]))
    return {
        "attempts": sum(r["attempts"] for r in by),
        "spend_usd": sum((r["spend_usd"] for r in by), Decimal(0)),
        "by_kind_tier": by,
    }


class ShadowBook:
    """The shadow-mode reads and writes of :class:`~tierwise.ledger.Ledger` (a base of it,
    beside :class:`~tierwise.ledger.core.LedgerCore`, whose transactions it uses)."""

    _write: Callable[..., AbstractContextManager[Tx]]
    _read: Callable[[], AbstractContextManager[sa.Connection]]

    def record_agreements(self, agreements: Sequence[AgreementRecord]) -> None:
        """Write agreement verdicts of a shadowed task (committed before returning)."""
        if not agreements:
            return
        with self._write() as tx:
            for record in agreements:
                insert_agreement(tx.conn, agreement_values(record), replay=False)

    @staticmethod
    def row_of_agreement(agreement: AgreementRecord) -> Row:
        """What :meth:`record_agreements` writes for one verdict, as a :class:`Row` (group
        commits and spool files)."""
        return Row("agreement", agreement.task_id, agreement_values(agreement))

    def _insert_agreement(self, values: dict[str, Any], *, replay: bool) -> None:
        with self._write(single=True) as tx:
            insert_agreement(tx.conn, values, replay=replay)

    def agreement(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        kind: str | None = None,
    ) -> list[dict[str, Any]]:
        """Agreement rates per kind and pair of tiers (see :func:`agreement`)."""
        with self._read() as conn:
            return agreement(conn, since=since, until=until, kind=kind)

    def shadow_spend(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        kind: str | None = None,
    ) -> dict[str, Any]:
        """Shadow calls and their cost (see :func:`shadow_spend`)."""
        with self._read() as conn:
            return shadow_spend(conn, since=since, until=until, kind=kind)

    def shadow_answers(
        self, *, since: datetime | None = None, kind: str | None = None
    ) -> set[tuple[str, int]]:
        """(task id, attempt number) of every compared shadow answer."""
        with self._read() as conn:
            return shadow_answer_numbers(conn, since=since, kind=kind)

    def agreements_of(self, task_id: str) -> list[dict[str, Any]]:
        """One task's agreement verdicts, in the order they were compared."""
        s = shadow_agreements.c
        with self._read() as conn:
            rows = conn.execute(
                sa.select(shadow_agreements).where(s.task_id == task_id).order_by(s.id)
            ).all()
        return [{k: v for k, v in r._mapping.items() if k not in ("id", "task_id")} for r in rows]

    def wrong_flags(self, task_ids: Iterable[str] | None = None) -> set[str]:
        """Tasks flagged ``wrong`` (see :func:`wrong_flags`)."""
        with self._read() as conn:
            return wrong_flags(conn, task_ids)
