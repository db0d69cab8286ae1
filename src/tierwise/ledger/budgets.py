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

import sqlalchemy as sa

from tierwise.errors import BudgetExceededError, LedgerError
from tierwise.ledger.schema import budget_counters, from_pico, reservations, to_pico
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
    c = budget_counters.c
    for scope in scopes:
        limit = to_pico(limits[scope])
        insert_ignore(
            conn,
            budget_counters,
            ["scope"],
            {
                "scope": scope,
                "spent_pusd": 0,
                "held_pusd": 0,
                "limit_pusd": limit,
                "updated_at": now,
            },
        )
        result = conn.execute(
            sa.update(budget_counters)
            .where(c.scope == scope, c.spent_pusd + c.held_pusd + amount <= limit)
            .values(held_pusd=c.held_pusd + amount, limit_pusd=limit, updated_at=now)
        )
        if result.rowcount != 1:
            row = conn.execute(sa.select(c.spent_pusd, c.held_pusd).where(c.scope == scope)).one()
            raise BudgetExceededError(
                scope, Decimal(limits[scope]), from_pico(row[0] + row[1]), Decimal(amount_usd)
            )
    rid = conn.execute(
        sa.insert(reservations)
        .values(
            task_id=task_id,
            scopes_json=json.dumps(list(scopes)),
            amount_pusd=amount,
            state="held",
            created_at=now,
        )
        .returning(reservations.c.id)
    ).scalar_one()
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
    r = reservations.c
    row = conn.execute(
        sa.select(r.amount_pusd, r.scopes_json, r.state).where(r.id == reservation.id)
    ).first()
    if row is None:
        raise LedgerError(f"reservation {reservation.id} is not in the ledger")
    if row.state != "held":
        raise LedgerError(f"reservation {reservation.id} is already {row.state}")
    conn.execute(
        sa.update(reservations)
        .where(r.id == reservation.id)
        .values(state=state, actual_pusd=actual, closed_at=now)
    )
    c = budget_counters.c
    for scope in json.loads(row.scopes_json):
        conn.execute(
            sa.update(budget_counters)
            .where(c.scope == scope)
            .values(
                held_pusd=c.held_pusd - row.amount_pusd,
                spent_pusd=c.spent_pusd + actual,
                updated_at=now,
            )
        )


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
