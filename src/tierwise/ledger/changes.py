"""Changes to the effective policy, as audited rows of ``policy_changes``.

The team's policy file is never edited: what the learner and people change lives here, and the
effective policy is the file plus the changes *in force* (:func:`in_force`). Every row is an
audit record — what changed (``change_json``), why (``reason`` and the evidence), who or what
decided (``actor``), when (``decided_at``), and the effective revisions before and after.

Rows and their life:

* a learner **proposal** (``promote`` or ``demote`` a kind's floor) is written ``proposed``; a
  person or the learner in ``auto`` mode makes it ``applied``, or the learner ``rejected`` it
  when its evidence stopped holding;
* a person's **override** (``set``, ``tierwise learn set``) is written ``applied`` at once, with
  an optional ``until``; it always beats learner changes of its kind while in force;
* a **revert** of an applied change turns that row ``reverted`` and writes a ``revert`` row
  (``applied``) saying who undid it and the revisions before and after.

The changes in force are the ``applied`` rows other than reverts, overrides past their
``until`` excepted. For each kind the latest override in force sets the floor, else the latest
learner change; the effective revision is the hash of the file's revision and the ids of every
change in force (:func:`tierwise.policy.core.changes_revision`), so reverting the last change
gives back the revision before it exactly. Processes sharing the ledger poll
:meth:`ChangeBook.applied_changes` (one small query) to follow changes without a restart.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from tierwise.errors import PolicyChangeError
from tierwise.ledger.schema import policy_changes
from tierwise.policy.core import changes_revision

if TYPE_CHECKING:
    from tierwise.ledger.core import Tx

__all__ = [
    "ACTIONS",
    "LEARNER",
    "ChangeBook",
    "ChangesInForce",
    "PolicyChange",
    "in_force",
]

#: What a row does: the learner's two moves, a person's override, and undoing one of these.
ACTIONS = ("promote", "demote", "set", "revert")
#: The actor of rows the learner writes (``learner (auto)`` when it applied them itself).
LEARNER = "learner"


def _aware(value: datetime | None) -> datetime | None:
    from datetime import UTC

    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


@dataclass(frozen=True, slots=True)
class PolicyChange:
    """One ``policy_changes`` row. ``change`` is its parsed ``change_json``: ``action``,
    ``floor_before`` and ``floor_after`` (tier names; ``None`` for no floor), and per action
    more (a proposal's ``evidence``, ``money``, ``latency`` and ``toml``; an override's
    ``until``; a revert's ``reverts``)."""

    id: int
    created_at: datetime
    kind: str | None
    change: Mapping[str, Any]
    reason: str | None
    status: str
    actor: str | None
    revision_before: str | None = None
    revision_after: str | None = None
    decided_at: datetime | None = None

    @property
    def action(self) -> str:
        return str(self.change.get("action") or "unknown")

    @property
    def floor_before(self) -> str | None:
        value = self.change.get("floor_before")
        return None if value is None else str(value)

    @property
    def floor_after(self) -> str | None:
        value = self.change.get("floor_after")
        return None if value is None else str(value)

    @property
    def override(self) -> bool:
        """A person's override (``tierwise learn set``), which beats the learner."""
        return self.action == "set"

    @property
    def until(self) -> datetime | None:
        """When an override stops applying (``None``: until it is reverted)."""
        text = self.change.get("until")
        return None if not text else _aware(datetime.fromisoformat(str(text)))

    @property
    def reverts(self) -> int | None:
        """The id a ``revert`` row undid."""
        value = self.change.get("reverts")
        return None if value is None else int(value)

    def expired(self, now: datetime) -> bool:
        until = self.until
        return until is not None and until <= now

    def in_force(self, now: datetime) -> bool:
        """Whether this row sets a floor of the effective policy at *now*."""
        return (
            self.status == "applied"
            and self.action in ("promote", "demote", "set")
            and self.kind is not None
            and self.floor_after is not None
            and not self.expired(now)
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": self.created_at.isoformat(),
            "kind": self.kind,
            "action": self.action,
            "floor_before": self.floor_before,
            "floor_after": self.floor_after,
            "status": self.status,
            "actor": self.actor,
            "reason": self.reason,
            "revision_before": self.revision_before,
            "revision_after": self.revision_after,
            "decided_at": None if self.decided_at is None else self.decided_at.isoformat(),
            "change": dict(self.change),
        }


@dataclass(frozen=True, slots=True)
class ChangesInForce:
    """The changes that make the effective policy at one moment (see :func:`in_force`).

    ``floors`` is each changed kind's floor; ``ids`` every change in force, ascending (what the
    revision hashes); ``overrides`` and ``learned`` the row that sets or would set each kind's
    floor (an override in force hides the learner's change of its kind, which stays in force
    underneath); ``next_expiry`` when the next override runs out.
    """

    floors: Mapping[str, str] = field(default_factory=dict)
    ids: tuple[int, ...] = ()
    overrides: Mapping[str, PolicyChange] = field(default_factory=dict)
    learned: Mapping[str, PolicyChange] = field(default_factory=dict)
    next_expiry: datetime | None = None

    @property
    def overridden(self) -> frozenset[str]:
        """Kinds whose floor a person's override sets."""
        return frozenset(self.overrides)

    def revision(self, file_revision: str) -> str:
        """The effective revision over a file of revision *file_revision*."""
        return changes_revision(file_revision, self.ids) if self.ids else file_revision


def in_force(changes: Iterable[PolicyChange], now: datetime) -> ChangesInForce:
    """Which of *changes* are in force at *now*, and the floors they set (module docstring)."""
    live = sorted((c for c in changes if c.in_force(now)), key=lambda c: c.id)
    learned: dict[str, PolicyChange] = {}
    overrides: dict[str, PolicyChange] = {}
    for change in live:
        assert change.kind is not None
        (overrides if change.override else learned)[change.kind] = change  # the latest wins
    floors = {kind: str(c.floor_after) for kind, c in learned.items()}
    floors.update({kind: str(c.floor_after) for kind, c in overrides.items()})
    expiries = [u for c in live if (u := c.until) is not None]
    return ChangesInForce(
        floors=dict(sorted(floors.items())),
        ids=tuple(c.id for c in live),
        overrides=overrides,
        learned=learned,
        next_expiry=min(expiries, default=None),
    )


def _row(r: Any) -> PolicyChange:
    try:
        change = json.loads(r.change_json)
    except ValueError:
        change = {}
    return PolicyChange(
        id=int(r.id),
        created_at=r.created_at,
        kind=r.kind,
        change=change if isinstance(change, dict) else {},
        reason=r.reason,
        status=str(r.status),
        actor=r.actor,
        revision_before=r.policy_revision_before,
        revision_after=r.policy_revision_after,
        decided_at=r.decided_at,
    )


def _dump(change: Mapping[str, Any]) -> str:
    return json.dumps(change, sort_keys=True, default=str)


class ChangeBook:
    """The ``policy_changes`` reads and writes of :class:`~tierwise.ledger.Ledger` (a base of it,
    beside :class:`~tierwise.ledger.core.LedgerCore`, whose transactions it uses).

    Writes that move a row from one status to another do so with a conditional update inside
    one transaction, so two people applying the same proposal at once apply it once; the
    revisions before and after are computed in that transaction from the rows in force.
    """

    _write: Callable[..., AbstractContextManager[Tx]]
    _read: Callable[[], AbstractContextManager[sa.Connection]]
    _now: Callable[[], datetime]

    # -- reads -----------------------------------------------------------------------------

    def policy_change(self, change_id: int) -> PolicyChange | None:
        """The change with *change_id*, if there is one."""
        c = policy_changes.c
        with self._read() as conn:
            row = conn.execute(sa.select(policy_changes).where(c.id == change_id)).first()
        return None if row is None else _row(row)

    def policy_changes(
        self,
        *,
        status: str | Sequence[str] | None = None,
        kind: str | None = None,
        limit: int | None = None,
    ) -> list[PolicyChange]:
        """Changes newest first, optionally only of *status* (one or several) and *kind*."""
        c = policy_changes.c
        stmt = sa.select(policy_changes).order_by(c.id.desc())
        if status is not None:
            stmt = stmt.where(c.status.in_([status] if isinstance(status, str) else status))
        if kind is not None:
            stmt = stmt.where(c.kind == kind)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._read() as conn:
            return [_row(r) for r in conn.execute(stmt).all()]

    def applied_changes(self, now: datetime | None = None) -> ChangesInForce:
        """The changes in force at *now* (default: the ledger's clock) — what every process
        sharing the ledger polls to follow the effective policy. One query over the
        ``applied`` rows."""
        with self._read() as conn:
            rows = _applied(conn)
        return in_force(rows, now or self._now())

    # -- writes ----------------------------------------------------------------------------

    def propose_change(
        self,
        kind: str,
        change: Mapping[str, Any],
        reason: str,
        *,
        now: datetime | None = None,
        actor: str = LEARNER,
    ) -> PolicyChange:
        """Write a proposal (status ``proposed``); returns it with its id."""
        return self._insert(kind, change, reason, "proposed", actor, now=now)

    def refresh_proposal(
        self, change_id: int, change: Mapping[str, Any], reason: str
    ) -> PolicyChange | None:
        """Replace a still-proposed row's evidence and reason (the learner saw more); ``None``
        when the row is no longer ``proposed``."""
        c = policy_changes.c
        with self._write() as tx:
            done = tx.conn.execute(
                sa.update(policy_changes)
                .where(c.id == change_id, c.status == "proposed")
                .values(change_json=_dump(change), reason=reason)
            )
            if not done.rowcount:
                return None
            row = tx.conn.execute(sa.select(policy_changes).where(c.id == change_id)).one()
        return _row(row)

    def reject_change(
        self, change_id: int, actor: str, reason: str, *, now: datetime | None = None
    ) -> PolicyChange:
        """Close a proposal without applying it (``rejected``), saying why.

        Raises:
            PolicyChangeError: no such change, or it is not ``proposed``.
        """
        c = policy_changes.c
        at = now or self._now()
        with self._write() as tx:
            found = self._locked(tx.conn, change_id)
            if found.status != "proposed":
                raise PolicyChangeError(f"change #{change_id} is {found.status}, not proposed")
            note = f"{found.reason}; rejected: {reason}" if found.reason else f"rejected: {reason}"
            tx.conn.execute(
                sa.update(policy_changes)
                .where(c.id == change_id, c.status == "proposed")
                .values(status="rejected", actor=actor, decided_at=at, reason=note)
            )
            row = tx.conn.execute(sa.select(policy_changes).where(c.id == change_id)).one()
        return _row(row)

    def apply_change(
        self,
        change_id: int,
        actor: str,
        file_revision: str,
        *,
        now: datetime | None = None,
        check: Callable[[PolicyChange, ChangesInForce], None] | None = None,
    ) -> PolicyChange:
        """Apply a proposal: ``applied``, with *actor*, the time and the effective revisions
        (over a file of *file_revision*) before and after. *check* may refuse it (raise) after
        seeing it and the changes in force, inside the same transaction.

        Raises:
            PolicyChangeError: no such change, it is not ``proposed``, or *check* refused it.
        """
        c = policy_changes.c
        at = now or self._now()
        with self._write() as tx:
            found = self._locked(tx.conn, change_id)
            if found.status != "proposed":
                raise PolicyChangeError(
                    f"change #{change_id} is {found.status}; only a proposed change can be applied"
                )
            current = in_force(_applied(tx.conn), at)
            if check is not None:
                check(found, current)
            before = current.revision(file_revision)
            after = changes_revision(file_revision, (*current.ids, change_id))
            tx.conn.execute(
                sa.update(policy_changes)
                .where(c.id == change_id, c.status == "proposed")
                .values(
                    status="applied",
                    actor=actor,
                    decided_at=at,
                    policy_revision_before=before,
                    policy_revision_after=after,
                )
            )
            row = tx.conn.execute(sa.select(policy_changes).where(c.id == change_id)).one()
        return _row(row)

    def record_override(
        self,
        kind: str,
        change: Mapping[str, Any],
        reason: str,
        actor: str,
        file_revision: str,
        *,
        now: datetime | None = None,
    ) -> PolicyChange:
        """Write a person's override (action ``set``) applied at once, with the revisions."""
        at = now or self._now()
        with self._write() as tx:
            current = in_force(_applied(tx.conn), at)
            before = current.revision(file_revision)
            new_id = self._insert_in(tx.conn, kind, change, reason, "applied", actor, at)
            after = changes_revision(file_revision, (*current.ids, new_id))
            row = self._decided(tx.conn, new_id, at, before, after)
        return _row(row)

    def revert_change(
        self,
        change_id: int,
        actor: str,
        file_revision: str,
        *,
        reason: str | None = None,
        now: datetime | None = None,
    ) -> PolicyChange:
        """Undo an applied change: it becomes ``reverted`` and a ``revert`` row records who,
        when and the revisions before and after (returned).

        A change followed by a later one of the same sort (learner or override) for its kind,
        still in force, must wait for that one to be reverted first: undoing them in order is
        what gives back each earlier revision exactly.

        Raises:
            PolicyChangeError: no such change, it is not ``applied`` (or is itself a revert),
                or a later change of its kind is in the way.
        """
        c = policy_changes.c
        at = now or self._now()
        with self._write() as tx:
            found = self._locked(tx.conn, change_id)
            if found.status != "applied" or found.action == "revert":
                what = "a revert" if found.action == "revert" else found.status
                raise PolicyChangeError(
                    f"change #{change_id} is {what}; only an applied change can be reverted"
                )
            rows = _applied(tx.conn)
            current = in_force(rows, at)
            later = [
                r.id
                for r in rows
                if r.id > change_id
                and r.kind == found.kind
                and r.override == found.override
                and r.in_force(at)
            ]
            if later:
                raise PolicyChangeError(
                    f"change #{change_id} ({found.kind}) was followed by #{later[-1]}, still in "
                    f"force; revert #{later[-1]} first"
                )
            before = current.revision(file_revision)
            remaining = tuple(i for i in current.ids if i != change_id)
            after = changes_revision(file_revision, remaining) if remaining else file_revision
            tx.conn.execute(
                sa.update(policy_changes)
                .where(c.id == change_id, c.status == "applied")
                .values(status="reverted")
            )
            undo = {
                "action": "revert",
                "reverts": change_id,
                "floor_before": found.floor_after,
                "floor_after": found.floor_before,
                "was": found.action,
            }
            note = reason or f"revert #{change_id}"
            new_id = self._insert_in(tx.conn, found.kind, undo, note, "applied", actor, at)
            row = self._decided(tx.conn, new_id, at, before, after)
        return _row(row)

    # -- helpers ---------------------------------------------------------------------------

    def _insert(
        self,
        kind: str | None,
        change: Mapping[str, Any],
        reason: str,
        status: str,
        actor: str,
        *,
        now: datetime | None,
    ) -> PolicyChange:
        with self._write() as tx:
            new_id = self._insert_in(
                tx.conn, kind, change, reason, status, actor, now or self._now()
            )
            row = tx.conn.execute(
                sa.select(policy_changes).where(policy_changes.c.id == new_id)
            ).one()
        return _row(row)

    @staticmethod
    def _insert_in(
        conn: sa.Connection,
        kind: str | None,
        change: Mapping[str, Any],
        reason: str,
        status: str,
        actor: str,
        at: datetime,
    ) -> int:
        result = conn.execute(
            sa.insert(policy_changes).values(
                created_at=at,
                kind=kind,
                change_json=_dump(change),
                reason=reason,
                status=status,
                actor=actor,
            )
        )
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])

    @staticmethod
    def _decided(
        conn: sa.Connection, change_id: int, at: datetime, before: str, after: str
    ) -> sa.Row[Any]:
        """Stamp an applied change with its time and the revisions around it; the row."""
        c = policy_changes.c
        conn.execute(
            sa.update(policy_changes)
            .where(c.id == change_id)
            .values(decided_at=at, policy_revision_before=before, policy_revision_after=after)
        )
        return conn.execute(sa.select(policy_changes).where(c.id == change_id)).one()

    @staticmethod
    def _locked(conn: sa.Connection, change_id: int) -> PolicyChange:
        """The row, locked for this transaction on PostgreSQL (SQLite's writer lock is held)."""
        c = policy_changes.c
        stmt = sa.select(policy_changes).where(c.id == change_id)
        if conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update()
        row = conn.execute(stmt).first()
        if row is None:
            raise PolicyChangeError(f"no policy change #{change_id}", unknown=True)
        return _row(row)


def _applied(conn: sa.Connection) -> list[PolicyChange]:
    c = policy_changes.c
    rows = conn.execute(sa.select(policy_changes).where(c.status == "applied").order_by(c.id)).all()
    return [_row(r) for r in rows]
