"""Following the effective policy: the team's file plus the applied changes in the ledger.

Learned floors and people's overrides live in the ledger (``policy_changes``), not in the file,
so a cascade serves ``base.with_changes(...)`` (:meth:`tierwise.policy.Policy.with_changes`)
and swaps it when the changes in force change. A cascade given a :class:`ChangeSource` (by
default its ledger, when it is a :class:`tierwise.ledger.Ledger`) reads them when it is built
and again at the start of a run at most every ``changes_poll_s`` seconds (2 by default), so
every library process sharing the ledger serves a change within a few seconds, without a
restart. The gateway reads them off its event loop and hands them over with :meth:`follow`.

A swap replaces the policy and the router between runs; a run keeps the decision it started
with and records the revision it was decided under. Both policies come from the same file, so
they differ only in kinds' floors.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import TYPE_CHECKING

from tierwise.errors import TierwiseError

if TYPE_CHECKING:
    from tierwise.cascade.seams import ChangeSource, FloorChanges, LedgerSink
    from tierwise.policy import Policy
    from tierwise.routing import Router

__all__ = ["PolicyFollower", "changes_source"]

log = logging.getLogger("tierwise.cascade")


def changes_source(policy: Policy) -> str | None:
    """What a revision's ``source`` says for an effective policy: the file and the changes in
    force (``tierwise.toml + changes #3, #7``), so a file's last good revision is never one
    with changes baked in."""
    if not policy.changes:
        return None if policy.source is None else str(policy.source)
    ids = ", ".join(f"#{i}" for i in policy.changes)
    return f"{policy.source or '<policy>'} + changes {ids}"


class PolicyFollower:
    """The effective policy of :class:`~tierwise.cascade.runner.Cascade` (a base of it)."""

    policy: Policy
    router: Router
    ledger: LedgerSink | None
    #: The team's file, without applied changes.
    base_policy: Policy
    _changes: ChangeSource | None
    _changes_poll_s: float
    _next_poll: float
    _own_router: bool
    _follow_lock: threading.Lock

    def _start_following(self, source: ChangeSource | None, poll_s: float) -> None:
        self.base_policy = self.policy.base
        self._changes = source
        self._changes_poll_s = poll_s
        self._next_poll = 0.0
        self._follow_lock = threading.Lock()
        self._poll_changes()

    def follow(self, changes: FloorChanges) -> bool:
        """Serve the file plus *changes* from the next run on; ``True`` when that changed the
        effective policy (its revision). Floors naming a tier the file no longer has are
        skipped, with a warning."""
        base = self.base_policy
        floors = {k: t for k, t in changes.floors.items() if t in base.ladder}
        for kind in sorted(set(changes.floors) - set(floors)):
            log.warning(
                "policy change for kind %r names tier %r, which the policy's ladder lacks; ignored",
                kind,
                changes.floors[kind],
            )
        effective = base.with_changes(floors, changes.ids, overridden=changes.overridden)
        with self._follow_lock:
            if effective.revision == self.policy.revision:
                return False
            self._use(effective)
        log.info(
            "policy changes in force: %s (revision %s)",
            ", ".join(f"#{i}" for i in changes.ids) or "none",
            effective.revision[:12],
        )
        return True

    def _use(self, effective: Policy) -> None:
        from tierwise.routing import Router

        if self.ledger is not None:
            self.ledger.record_policy_revision(
                effective.revision,
                json.dumps(effective.model.model_dump(mode="json")),
                changes_source(effective),
            )
        router = Router(effective) if self._own_router else self.router
        self.policy = effective  # two assignments; a run reads both at its start
        self.router = router

    def _poll_changes(self) -> None:
        """Read the changes in force when the poll interval has passed (a run's first step)."""
        source = self._changes
        if source is None:
            return
        now = time.monotonic()
        if now < self._next_poll:
            return
        self._next_poll = now + self._changes_poll_s
        try:
            self.follow(source.applied_changes())
        except TierwiseError as exc:  # the ledger is down: keep serving what is in force
            log.warning("could not read the policy changes in force: %s", exc)
