"""Applying, reverting and overriding: every change to the effective policy, audited.

The effective policy is the team's file plus the changes in force
(:mod:`tierwise.ledger.changes`); these functions are the only ways they change, each one
audited row in ``policy_changes`` with its actor, time and the effective revisions before and
after. The CLI (``tierwise learn apply | revert | set``) and the gateway's admin routes call
them; the learner in ``auto`` mode applies its own proposals through :func:`apply_change` too.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from tierwise.errors import PolicyChangeError

if TYPE_CHECKING:
    from tierwise.ledger import ChangesInForce, Ledger, PolicyChange
    from tierwise.policy import Policy

__all__ = [
    "apply_change",
    "effective_policy",
    "history",
    "revert_change",
    "set_floor",
]

#: What a kind name may be (as the gateway accepts them).
_KIND = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_MAX_REASON = 2000


def effective_policy(
    policy: Policy, ledger: Ledger, *, now: datetime | None = None
) -> tuple[Policy, ChangesInForce]:
    """The file's policy (*policy*'s base) plus the changes in force at *now*, and those."""
    changes = ledger.applied_changes(now)
    base = policy.base
    ladder = set(base.ladder)
    floors = {k: t for k, t in changes.floors.items() if t in ladder}
    return base.with_changes(floors, changes.ids, overridden=changes.overridden), changes


def _record(ledger: Ledger, policy: Policy, now: datetime | None) -> None:
    """Record the effective revision after a change (``tierwise explain`` looks it up)."""
    from tierwise.cascade.following import changes_source

    effective, _ = effective_policy(policy, ledger, now=now)
    ledger.record_policy_revision(
        effective.revision,
        json.dumps(effective.model.model_dump(mode="json")),
        changes_source(effective),
    )


def _floor_text(floor: str | None) -> str:
    return floor if floor is not None else "no floor"


def apply_change(
    ledger: Ledger,
    policy: Policy,
    change_id: int,
    *,
    actor: str,
    now: datetime | None = None,
) -> PolicyChange:
    """Apply the proposal *change_id* over *policy*'s file, by *actor*.

    Refused when the proposal is stale (the kind's floor is no longer the one it moves from:
    run ``tierwise learn propose`` again), when a person's override holds the kind, or when
    it names a tier the ladder no longer has.

    Raises:
        PolicyChangeError: as above, or no such proposal (``unknown``), or it is not proposed.
    """
    base = policy.base

    def check(found: PolicyChange, current: ChangesInForce) -> None:
        kind, after = found.kind, found.floor_after
        if kind is None or after is None or found.action not in ("promote", "demote"):
            raise PolicyChangeError(f"change #{found.id} is not a proposal to move a floor")
        if after not in base.ladder:
            raise PolicyChangeError(
                f"change #{found.id} moves {kind} to {after!r}, which the ladder "
                f"({', '.join(base.ladder)}) no longer has"
            )
        held = current.overrides.get(kind)
        if held is not None:
            until = f" until {held.until:%Y-%m-%d %H:%M} UTC" if held.until else ""
            raise PolicyChangeError(
                f"kind {kind} is held at {held.floor_after} by override #{held.id} "
                f"({held.actor}){until}; an override beats the learner — lift it first with "
                f"`tierwise learn revert {held.id}`"
            )
        floors = {k: t for k, t in current.floors.items() if t in base.ladder}
        effective = base.with_changes(floors, current.ids, overridden=current.overridden)
        floor = effective.kind(kind).floor
        if floor != found.floor_before:
            raise PolicyChangeError(
                f"change #{found.id} is stale: it moves {kind} from "
                f"{_floor_text(found.floor_before)}, but its floor is now {_floor_text(floor)}; "
                "run `tierwise learn propose` again"
            )

    applied = ledger.apply_change(change_id, actor, base.file_revision, now=now, check=check)
    _record(ledger, policy, now)
    return applied


def revert_change(
    ledger: Ledger,
    policy: Policy,
    change_id: int,
    *,
    actor: str,
    reason: str | None = None,
    now: datetime | None = None,
) -> PolicyChange:
    """Undo the applied change *change_id* (a learner move or an override: reverting an
    override lifts it); returns the ``revert`` row, whose ``revision_after`` is the effective
    revision from before the change when it was the last one applied.

    Raises:
        PolicyChangeError: no such change (``unknown``), not applied, or a later change of its
            kind must be reverted first.
    """
    if reason is not None and len(reason) > _MAX_REASON:
        raise PolicyChangeError(f"the reason is {len(reason)} characters; at most {_MAX_REASON}")
    done = ledger.revert_change(change_id, actor, policy.base.file_revision, reason=reason, now=now)
    _record(ledger, policy, now)
    return done


def set_floor(
    ledger: Ledger,
    policy: Policy,
    kind: str,
    floor: str,
    *,
    reason: str,
    actor: str,
    until: datetime | None = None,
    now: datetime | None = None,
) -> PolicyChange:
    """A person's override: *kind*'s floor is *floor* until it is reverted or *until* passes.

    It beats the learner: no learner change moves the kind while it holds, and it hides any
    learner change of the kind in force underneath (which comes back when the override ends).

    Raises:
        PolicyChangeError: a bad kind name, a tier not on the ladder, an empty reason, or an
            *until* that is not in the future.
    """
    base = policy.base
    at = now or datetime.now(UTC)
    if not _KIND.match(kind):
        raise PolicyChangeError(
            f"kind {kind!r}: expected letters, digits, '_', '.', ':' or '-' (at most 64)"
        )
    if floor not in base.ladder:
        raise PolicyChangeError(f"unknown tier {floor!r}; the ladder is {', '.join(base.ladder)}")
    if not reason.strip():
        raise PolicyChangeError("an override needs a reason (--reason): say why, for the audit")
    if len(reason) > _MAX_REASON:
        raise PolicyChangeError(f"the reason is {len(reason)} characters; at most {_MAX_REASON}")
    if until is not None:
        if until.tzinfo is None:
            raise PolicyChangeError(f"until must be timezone-aware, got {until!r}")
        if until <= at:
            raise PolicyChangeError(
                f"until {until:%Y-%m-%d %H:%M} UTC is not in the future (now "
                f"{at:%Y-%m-%d %H:%M} UTC)"
            )
    effective, _ = effective_policy(policy, ledger, now=at)
    change = {
        "action": "set",
        "floor_before": effective.kind(kind).floor,
        "floor_after": floor,
        "until": None if until is None else until.astimezone(UTC).isoformat(),
    }
    done = ledger.record_override(kind, change, reason.strip(), actor, base.file_revision, now=at)
    _record(ledger, policy, at)
    return done


def history(
    ledger: Ledger, *, kind: str | None = None, limit: int | None = None
) -> list[PolicyChange]:
    """Every change, newest first (proposals, applied, rejected and reverted ones, reverts)."""
    return ledger.policy_changes(kind=kind, limit=limit)
