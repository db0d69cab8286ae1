"""The router improves itself: each kind's floor promoted and demoted from the ledger's evidence,
every change audited and reversible.

>>> from tierwise.learning import propose, apply_change, revert_change, set_floor
>>> with open_ledger("tierwise-ledger.db") as ledger:  # doctest: +SKIP
...     run = propose(ledger, policy)            # suggest: proposals recorded, nothing applied
...     apply_change(ledger, policy, run.proposed[0].change.id, actor="alice")
...     set_floor(ledger, policy, "tone_check", "mid", reason="brand launch", actor="bob")

* **Evidence** (:mod:`~.evidence`): per kind, over its window since its last move, how its
  tasks did on their floor (escalations and late failures by the one definition), whether the
  next tier passed them, and what probes one tier below found.
* **Proposals** (:mod:`~.proposals`): promote on the lower bound of the failure interval, with
  the money (failed attempts no longer paid for against dearer first attempts) and latency;
  demote on probes passing with confidence; hysteresis, cool-down, overrides and the
  must-stay-frontier list keep kinds from flapping or moving where they must not.
* **The run** (:mod:`~.learner`): :func:`propose` keeps the ``proposed`` rows in step with the
  evidence and, in ``[fleet] mode = "auto"``, applies them.
* **Changes** (:mod:`~.changes`): :func:`apply_change`, :func:`revert_change`,
  :func:`set_floor` (a person's override) and :func:`effective_policy` — the team's file plus
  the changes in force, whose revision is recorded on every task. Processes sharing the ledger
  follow changes within seconds (:mod:`tierwise.cascade.following`).

Probes themselves are a step of the cascade (:mod:`tierwise.cascade.probe`).
"""

from tierwise.learning.changes import (
    apply_change,
    effective_policy,
    history,
    revert_change,
    set_floor,
)
from tierwise.learning.evidence import (
    Counts,
    Evidence,
    FloorEvidence,
    KindEvidence,
    ProbeEvidence,
    gather,
)
from tierwise.learning.learner import AUTO_ACTOR, LearnRun, Proposed, propose
from tierwise.learning.proposals import Hold, Money, Proposal, break_even, decide, toml_patch
from tierwise.learning.settings import LearnSettings

__all__ = [
    "AUTO_ACTOR",
    "Counts",
    "Evidence",
    "FloorEvidence",
    "Hold",
    "KindEvidence",
    "LearnRun",
    "LearnSettings",
    "Money",
    "ProbeEvidence",
    "Proposal",
    "Proposed",
    "apply_change",
    "break_even",
    "decide",
    "effective_policy",
    "gather",
    "history",
    "propose",
    "revert_change",
    "set_floor",
    "toml_patch",
]
