"""Budget reservations: spend is held atomically before an attempt and settled after it.

Every scope has one ``budget_counters`` row (``spent_pusd``, ``held_pusd``). A reservation
raises ``held`` on each of its scopes with a conditional UPDATE — ``WHERE spent + held + amount
<= limit`` — all inside one write transaction, so two processes can never both pass the check
for the last cents of a budget; when any scope would overrun, the transaction rolls back and
nothing changes. Settling moves the held amount to ``spent`` at the actual cost.

On PostgreSQL the conditional UPDATE is what makes this hold across connections and hosts: at
``READ COMMITTED`` a second writer blocks on the counter's row lock, and once the first commits
it re-evaluates the ``WHERE`` against the committed row, so it sees the first one's hold.
Scopes are always locked in sorted order, so two reservations cannot deadlock.

Settlements change the counters *last*: :func:`close` marks the reservation and returns the
counter changes, and the ledger applies them (summed per scope, in scope order) just before
its transaction commits. A group commit of many requests therefore locks each counter row once,
for the shortest time, and always in the same order as every other writer.

A reservation left held by a process that died is released after a time to live
(:func:`expire`): its state becomes ``expired`` and its hold is dropped. If its owner was alive
after all and settles it later, the actual cost is still added to ``spent`` — a paid call is
never missing from a budget.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import cache
from typing import Any
from weakref import WeakKeyDictionary

import sqlalchemy as sa

from tierwise.errors import BudgetExceededError, LedgerError
from tierwise.ledger.prepared import Prepared, prepare
from tierwise.ledger.schema import (
    UTCDateTime,
    budget_counters,
    from_pico,
    reservations,
    to_pico,
)
from tierwise.ledger.sql import insert_ignore


@dataclass(frozen=True, slots=True)
class Reservation:
    """Spend held against budget scopes until the attempt is settled or released.

    ``id`` is ``None`` when there were no limits to hold against (nothing was written).
    """

    id: int | None
    task_id: str
    scopes: tuple[str, ...]
    amount_usd: Decimal


@dataclass(frozen=True, slots=True)
class BudgetState:
    """One scope's counters: settled spend, spend held by open reservations, last limit."""

    scope: str
    spent_usd: Decimal
    held_usd: Decimal
    limit_usd: Decimal | None

    @property
    def used_usd(self) -> Decimal:
        """Spent plus held: what a new reservation is checked against."""
        return self.spent_usd + self.held_usd


@dataclass(frozen=True, slots=True)
class _Statements:
    hold: Any
    insert_reservation: Any
    close_reservation: Any
    adjust: Any


#: (scope, change to held, change to spent), in pico-USD, waiting for the commit
Delta = tuple[str, int, int]


RESERVATION_COLUMNS = ("task_id", "scopes_json", "amount_pusd", "state", "created_at")


@dataclass(frozen=True, slots=True)
class _Compiled:
    """The hot statements compiled for one dialect (see :mod:`tierwise.ledger.prepared`)."""

    hold: Prepared
    insert_reservation: Prepared
    close_reservation: Prepared
    adjust: Prepared


_compiled: WeakKeyDictionary[sa.Dialect, _Compiled] = WeakKeyDictionary()


def _prepared(conn: sa.Connection) -> _Compiled:
    dialect = conn.dialect
    found = _compiled.get(dialect)
    if found is None:  # a race compiles twice, harmlessly
        sql = core_statements()
        found = _compiled[dialect] = _Compiled(
            hold=prepare(sql.hold, dialect),
            insert_reservation=prepare(sql.insert_reservation, dialect, RESERVATION_COLUMNS),
            close_reservation=prepare(sql.close_reservation, dialect),
            adjust=prepare(sql.adjust, dialect),
        )
    return found


@cache
def core_statements() -> _Statements:
    """The hot statements, built once with bound parameters (building costs more than running)."""
    c, r = budget_counters.c, reservations.c
    amount = sa.bindparam("b_amount", type_=sa.BigInteger)
    limit = sa.bindparam("b_limit", type_=sa.BigInteger)
    now = sa.bindparam("b_now", type_=UTCDateTime())
    return _Statements(
        hold=sa.update(budget_counters)
        .where(c.scope == sa.bindparam("b_scope"), c.spent_pusd + c.held_pusd + amount <= limit)
        .values(held_pusd=c.held_pusd + amount, limit_pusd=limit, updated_at=now),
        insert_reservation=reservations.insert().returning(r.id),
        close_reservation=sa.update(reservations)
        .where(r.id == sa.bindparam("b_id"), r.state == "held")
        .values(
            state=sa.bindparam("b_state"),
            actual_pusd=sa.bindparam("b_actual", type_=sa.BigInteger),
            closed_at=now,
        )
        .returning(r.amount_pusd, r.scopes_json),
        adjust=sa.update(budget_counters)
        .where(c.scope == sa.bindparam("b_scope"))
        .values(
            held_pusd=c.held_pusd + sa.bindparam("b_held", type_=sa.BigInteger),
            spent_pusd=c.spent_pusd + sa.bindparam("b_spent", type_=sa.BigInteger),
            updated_at=now,
        ),
    )


def reserve(
    conn: sa.Connection,
    task_id: str,
    limits: Mapping[str, Decimal],
    amount_usd: Decimal,
    now: datetime,
) -> Reservation:
    """Hold *amount_usd* on every scope of *limits* (caller provides the write transaction)."""
    amount = to_pico(amount_usd)
    if amount < 0:
        raise ValueError(f"a reservation amount must be >= 0, got {amount_usd}")
    scopes = tuple(sorted(limits))  # one lock order for every writer (Postgres row locks)
    if not scopes:
        return Reservation(None, task_id, (), Decimal(amount_usd))
    sql = _prepared(conn)
    cursor = conn.connection.cursor()
    try:
        return _reserve(conn, cursor, sql, task_id, limits, scopes, amount, amount_usd, now)
    finally:
        cursor.close()


def _reserve(
    conn: sa.Connection,
    cursor: Any,
    sql: _Compiled,
    task_id: str,
    limits: Mapping[str, Decimal],
    scopes: tuple[str, ...],
    amount: int,
    amount_usd: Decimal,
    now: datetime,
) -> Reservation:
    for scope in scopes:
        limit = to_pico(limits[scope])
        params = {"b_scope": scope, "b_amount": amount, "b_limit": limit, "b_now": now}
        if sql.hold.run(cursor, params).rowcount == 1:
            continue
        # Either the limit refuses, or this scope had no counter when the hold ran: create it
        # (unless it exists by now) and hold again. Always again: another writer may have
        # created the counter between the hold and this point (the first requests of a new
        # UTC day, all at once), and a hold that found no row says nothing about the limit.
        insert_ignore(
            conn,
            budget_counters,
            ["scope"],
            {"scope": scope, "spent_pusd": 0, "held_pusd": 0, "updated_at": now},
        )
        if sql.hold.run(cursor, params).rowcount == 1:
            continue
        found = state(conn, scope)
        used = found.used_usd if found is not None else Decimal(0)
        raise BudgetExceededError(scope, Decimal(limits[scope]), used, Decimal(amount_usd))
    values = {
        "task_id": task_id,
        "scopes_json": json.dumps(list(scopes)),
        "amount_pusd": amount,
        "state": "held",
        "created_at": now,
    }
    (rid,) = sql.insert_reservation.run(cursor, values).fetchone()
    return Reservation(int(rid), task_id, scopes, Decimal(amount_usd))


def close(
    conn: sa.Connection,
    reservation: Reservation,
    actual_usd: Decimal,
    state: str,
    now: datetime,
    deltas: list[Delta],
    *,
    replay: bool = False,
) -> None:
    """Settle (``state='settled'``) or release a held reservation at *actual_usd*.

    The counter changes are appended to *deltas*, for :func:`apply` before the commit. A
    reservation released meanwhile as expired is settled all the same: its actual cost is
    added to ``spent`` (its hold was already dropped). With *replay* (a spooled settlement
    written again) a reservation already settled or released is left as it is.

    Raises:
        LedgerError: the reservation is unknown, or (without *replay*) was already settled or
            released.
    """
    if reservation.id is None:
        return
    actual = to_pico(actual_usd)
    if actual < 0:
        raise ValueError(f"an actual cost must be >= 0, got {actual_usd}")
    sql = _prepared(conn)
    cursor = conn.connection.cursor()
    try:
        params = {"b_id": reservation.id, "b_state": state, "b_actual": actual, "b_now": now}
        row = sql.close_reservation.run(cursor, params).fetchone()
    finally:
        cursor.close()
    if row is not None:
        amount, scopes_json = row
        deltas.extend((scope, -int(amount), actual) for scope in json.loads(scopes_json))
        return
    r = reservations.c
    found = conn.execute(sa.select(r.state, r.scopes_json).where(r.id == reservation.id)).first()
    if found is None:
        raise LedgerError(f"reservation {reservation.id} is not in the ledger")
    if found.state != "expired":
        if replay:
            return
        raise LedgerError(f"reservation {reservation.id} is already {found.state}")
    reopened = conn.execute(  # the owner was alive after all: record what it spent
        sa.update(reservations)
        .where(r.id == reservation.id, r.state == "expired")
        .values(state=state, actual_pusd=actual, closed_at=now)
    )
    if reopened.rowcount == 1 and actual:
        deltas.extend((scope, 0, actual) for scope in json.loads(found.scopes_json))


def apply(conn: sa.Connection, deltas: list[Delta], now: datetime) -> None:
    """Apply counter changes, summed per scope and in scope order (the lock order)."""
    totals: dict[str, list[int]] = {}
    for scope, held, spent in deltas:
        entry = totals.setdefault(scope, [0, 0])
        entry[0] += held
        entry[1] += spent
    if not totals:
        return
    sql = _prepared(conn)
    cursor = conn.connection.cursor()
    try:
        for scope in sorted(totals):
            held, spent = totals[scope]
            if held or spent:
                params = {"b_scope": scope, "b_held": held, "b_spent": spent, "b_now": now}
                sql.adjust.run(cursor, params)
    finally:
        cursor.close()


def expire(
    conn: sa.Connection, before: datetime, now: datetime, limit: int, deltas: list[Delta]
) -> int:
    """Mark up to *limit* reservations held since before *before* as ``expired``.

    Returns how many; their holds are appended to *deltas*. A reservation settled by its owner
    meanwhile is not touched (the UPDATE re-checks ``state = 'held'``).
    """
    r = reservations.c
    oldest = (
        sa.select(r.id)
        .where(r.state == "held", r.created_at < before)
        .order_by(r.id)
        .limit(limit)
        .scalar_subquery()
    )
    rows = conn.execute(
        sa.update(reservations)
        .where(r.id.in_(oldest), r.state == "held")
        .values(state="expired", actual_pusd=0, closed_at=now)
        .returning(r.amount_pusd, r.scopes_json)
    ).all()
    for amount, scopes_json in rows:
        deltas.extend((scope, -int(amount), 0) for scope in json.loads(scopes_json))
    return len(rows)


def state(conn: sa.Connection, scope: str) -> BudgetState | None:
    """The counters of *scope*, ``None`` when nothing was ever reserved against it."""
    c = budget_counters.c
    row = conn.execute(
        sa.select(c.spent_pusd, c.held_pusd, c.limit_pusd).where(c.scope == scope)
    ).first()
    if row is None:
        return None
    limit = None if row.limit_pusd is None else from_pico(row.limit_pusd)
    return BudgetState(scope, from_pico(row.spent_pusd), from_pico(row.held_pusd), limit)


def any_held_before(conn: sa.Connection, before: datetime) -> bool:
    """Whether any reservation made before *before* is still held."""
    r = reservations.c
    query = sa.select(r.id).where(r.state == "held", r.created_at < before).limit(1)
    return conn.execute(query).first() is not None


def held_summary(conn: sa.Connection, expired_before: datetime) -> dict[str, Any]:
    """Money held by open reservations now: in total, past their time to live, and per scope."""
    r, c = reservations.c, budget_counters.c
    total = conn.execute(
        sa.select(sa.func.count(), sa.func.sum(r.amount_pusd), sa.func.min(r.created_at)).where(
            r.state == "held"
        )
    ).one()
    expired = conn.execute(
        sa.select(sa.func.count(), sa.func.sum(r.amount_pusd)).where(
            r.state == "held", r.created_at < expired_before
        )
    ).one()
    scopes = conn.execute(
        sa.select(c.scope, c.spent_pusd, c.held_pusd, c.limit_pusd)
        .where(c.held_pusd != 0)
        .order_by(c.held_pusd.desc(), c.scope)
        .limit(20)
    ).all()
    return {
        "reservations": int(total[0]),
        "held_usd": from_pico(total[1]),
        "oldest_at": total[2],
        "expired": int(expired[0]),
        "expired_usd": from_pico(expired[1]),
        "by_scope": [
            {
                "scope": scope,
                "held_usd": from_pico(held),
                "spent_usd": from_pico(spent),
                "limit_usd": None if limit is None else from_pico(limit),
            }
            for scope, spent, held, limit in scopes
        ],
    }
