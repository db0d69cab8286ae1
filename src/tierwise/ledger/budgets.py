"""Budget reservations: spend is held atomically before an attempt and settled after it.

Every scope has one ``budget_counters`` row (``spent_pusd``, ``held_pusd``). A reservation
raises ``held`` on each of its scopes with a conditional UPDATE — ``WHERE spent + held + amount
<= limit`` — all inside one write transaction, so two processes can never both pass the check
for the last cents of a budget; when any scope would overrun, the transaction rolls back and
nothing changes. Settling moves the held amount to ``spent`` at the actual cost.
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
    unhold: Any


_RESERVATION_COLUMNS = ("task_id", "scopes_json", "amount_pusd", "state", "created_at")


@dataclass(frozen=True, slots=True)
class _Compiled:
    """The hot statements compiled for one dialect (see :mod:`tierwise.ledger.prepared`)."""

    hold: Prepared
    insert_reservation: Prepared
    close_reservation: Prepared
    unhold: Prepared


_compiled: WeakKeyDictionary[sa.Dialect, _Compiled] = WeakKeyDictionary()


def _prepared(conn: sa.Connection) -> _Compiled:
    dialect = conn.dialect
    found = _compiled.get(dialect)
    if found is None:  # a race compiles twice, harmlessly
        sql = _sql()
        found = _compiled[dialect] = _Compiled(
            hold=prepare(sql.hold, dialect),
            insert_reservation=prepare(sql.insert_reservation, dialect, _RESERVATION_COLUMNS),
            close_reservation=prepare(sql.close_reservation, dialect),
            unhold=prepare(sql.unhold, dialect),
        )
    return found


@cache
def _sql() -> _Statements:
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
        unhold=sa.update(budget_counters)
        .where(c.scope == sa.bindparam("b_scope"))
        .values(
            held_pusd=c.held_pusd - amount,
            spent_pusd=c.spent_pusd + sa.bindparam("b_actual", type_=sa.BigInteger),
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
        found = state(conn, scope)
        if found is None:  # first use of this scope: create its counter, then hold
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
) -> None:
    """Settle (``state='settled'``) or release a held reservation at *actual_usd*."""
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
        if row is not None:
            amount, scopes_json = row
            for scope in json.loads(scopes_json):
                params = {"b_scope": scope, "b_amount": amount, "b_actual": actual, "b_now": now}
                sql.unhold.run(cursor, params)
            return
    finally:
        cursor.close()
    r = reservations.c
    found = conn.execute(sa.select(r.state).where(r.id == reservation.id)).scalar()
    if found is None:
        raise LedgerError(f"reservation {reservation.id} is not in the ledger")
    raise LedgerError(f"reservation {reservation.id} is already {found}")


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


def stale_ids(conn: sa.Connection, before: datetime) -> list[int]:
    """Ids of reservations still held that were made before *before* (abandoned by a crash)."""
    r = reservations.c
    rows = conn.execute(
        sa.select(r.id).where(r.state == "held", r.created_at < before).order_by(r.id)
    )
    return [int(x) for x in rows.scalars()]


def load(conn: sa.Connection, reservation_id: int) -> Reservation:
    """A reservation by id, as :func:`close` expects it."""
    r = reservations.c
    row = conn.execute(
        sa.select(r.task_id, r.scopes_json, r.amount_pusd).where(r.id == reservation_id)
    ).one()
    return Reservation(
        reservation_id, row.task_id, tuple(json.loads(row.scopes_json)), from_pico(row.amount_pusd)
    )
