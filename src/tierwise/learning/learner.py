"""One run of the learner: read the evidence, propose moves, and in ``auto`` mode apply them.

:func:`propose` is what ``tierwise learn propose`` runs (from cron, say hourly). For every kind
with live tasks in the window it decides (:func:`tierwise.learning.proposals.decide`) and keeps
the ``proposed`` rows in step with the evidence: a move proposed again refreshes its row (same
id, fresh evidence), a new move is a new row, and a pending proposal the evidence no longer
supports is closed as ``rejected`` with the reason. In ``suggest`` mode (the default) that is
all — routing never changes until a person applies a proposal; in ``auto`` mode each proposal
is applied at once by the actor ``learner (auto)``, through the same audited path.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from tierwise.learning.changes import apply_change
from tierwise.learning.evidence import Evidence, gather
from tierwise.learning.proposals import Hold, Proposal, decide
from tierwise.learning.settings import LearnSettings, Mode
from tierwise.ledger.changes import LEARNER

if TYPE_CHECKING:
    from tierwise.ledger import Ledger, PolicyChange
    from tierwise.policy import Policy

__all__ = ["AUTO_ACTOR", "LearnRun", "Proposed", "propose"]

#: Who applied a change the learner applied itself (``[fleet] mode = "auto"``).
AUTO_ACTOR = f"{LEARNER} (auto)"


@dataclass(frozen=True, slots=True)
class Proposed:
    """A proposal and its row (``None`` on a dry run); ``new`` when the row was written now."""

    proposal: Proposal
    change: PolicyChange | None
    new: bool

    def as_dict(self) -> dict[str, Any]:
        p = self.proposal
        return {
            "id": None if self.change is None else self.change.id,
            "status": "proposed" if self.change is None else self.change.status,
            "new": self.new,
            "kind": p.kind,
            "direction": p.direction,
            "floor_before": p.floor_before,
            "floor_after": p.floor_after,
            "summary": p.summary,
            "reasons": list(p.reasons),
            "money": None if p.money is None else p.money.as_dict(),
            "latency": p.latency,
            "toml": p.toml,
            "evidence": p.evidence,
        }


@dataclass(frozen=True, slots=True)
class LearnRun:
    """What one run found and did."""

    settings: LearnSettings
    evidence: Evidence
    proposed: tuple[Proposed, ...] = ()
    holds: tuple[Hold, ...] = ()
    applied: tuple[PolicyChange, ...] = ()
    withdrawn: tuple[PolicyChange, ...] = ()
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        line = self.evidence.red_line
        return {
            "since": self.evidence.since.isoformat(),
            "until": self.evidence.until.isoformat(),
            "settings": self.settings.as_dict(),
            "dry_run": self.dry_run,
            "proposals": [p.as_dict() for p in self.proposed],
            "applied": [c.as_dict() for c in self.applied],
            "withdrawn": [c.as_dict() for c in self.withdrawn],
            "holds": [h.as_dict() for h in self.holds],
            "red_line": None if line is None else line.as_dict(),
        }


def propose(
    ledger: Ledger,
    policy: Policy,
    *,
    until: datetime | None = None,
    window: timedelta | None = None,
    mode: Mode | None = None,
    dry_run: bool = False,
) -> LearnRun:
    """Judge every kind as of *until* (default now) over *window* (default ``[fleet]
    window_days``) against *policy*'s file plus the changes in force, and record the proposals
    (none with *dry_run*); in ``auto`` *mode* (default ``[fleet] mode``) apply them.

    Rows written are dated *until*: the learner's clock is the end of its window.
    """
    base = policy.base
    now = (until or datetime.now(UTC)).astimezone(UTC)
    settings = LearnSettings.from_policy(base, window=window)
    if mode is not None:
        settings = replace(settings, mode=mode)
    changes = ledger.applied_changes(now)
    ladder = set(base.ladder)
    floors = {k: t for k, t in changes.floors.items() if t in ladder}
    effective = base.with_changes(floors, changes.ids, overridden=changes.overridden)
    evidence = gather(ledger, effective, settings, until=now, changes=changes)
    proposals: list[Proposal] = []
    holds: list[Hold] = []
    for found in evidence.kinds:
        decided = decide(found, settings, base)
        if isinstance(decided, Proposal):
            proposals.append(decided)
        else:
            holds.append(decided)
    if dry_run:
        return LearnRun(
            settings,
            evidence,
            tuple(Proposed(p, None, True) for p in proposals),
            tuple(holds),
            dry_run=True,
        )

    pending: dict[str, list[PolicyChange]] = {}
    for change in ledger.policy_changes(status="proposed"):
        if change.kind is not None:
            pending.setdefault(change.kind, []).append(change)
    why = {h.kind: h.detail for h in holds}
    proposed: list[Proposed] = []
    withdrawn: list[PolicyChange] = []
    for p in proposals:
        same = [c for c in pending.pop(p.kind, []) if p.same_move(c.change)]
        others = [c for c in ledger.policy_changes(status="proposed", kind=p.kind) if c not in same]
        row: PolicyChange | None = None
        if same:
            row = ledger.refresh_proposal(same[0].id, p.change(), p.reason)
        new = row is None
        if row is None:
            row = ledger.propose_change(p.kind, p.change(), p.reason, now=now)
        for stale in [*same[1:], *others]:
            withdrawn.append(
                ledger.reject_change(stale.id, LEARNER, f"superseded by #{row.id}", now=now)
            )
        proposed.append(Proposed(p, row, new))
    for kind, rows in pending.items():
        because = why.get(kind, "the kind had no live tasks in the window")
        for stale in rows:
            withdrawn.append(
                ledger.reject_change(
                    stale.id, LEARNER, f"the evidence no longer holds: {because}", now=now
                )
            )

    applied: list[PolicyChange] = []
    if settings.mode == "auto":
        for i, item in enumerate(proposed):
            assert item.change is not None
            done = apply_change(ledger, base, item.change.id, actor=AUTO_ACTOR, now=now)
            applied.append(done)
            proposed[i] = replace(item, change=done)
    return LearnRun(
        settings,
        evidence,
        tuple(proposed),
        tuple(holds),
        tuple(applied),
        tuple(withdrawn),
    )
