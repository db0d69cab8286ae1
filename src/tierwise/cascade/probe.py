"""Demotion probes: a share of a floored kind's tasks first tried one tier below the floor.

A kind whose floor was raised by the learner, or pinned above the bottom tier by a person (in
the file or with ``tierwise learn set``), may since have become doable one tier lower — models
change underneath a policy. To find out, ``[fleet] probe_share`` of its tasks (default 2%),
chosen from the task id alone (:func:`~tierwise.cascade.shadow.sampled` on ``probe:<id>``, so
every process picks the same tasks, and not the same ones shadow mode picks), make their first
attempt one tier below the floor, recorded with role ``probe``. It is a step of the live run:

* its output is validated like any other; when it passes, it *is* the answer (cheaper);
* when it fails — or the call errors — the run goes on at the floor as if nothing had happened
  (no handoff note, no escalation counted), so a failed probe costs money but never quality.

Only where a failure can still be undone and judged: never on a live-relayed stream (bytes
reach the caller as they arrive, so a bad probe could not be taken back), never for a kind no
validator checks (a probe would always "pass"), never for a must-stay-frontier kind, a task a
frontier pin or a rule (not the floor) put where it is, an explicit start tier, a concrete model,
a side run (shadow) or traffic other than ``live``, and never under a ``[budgets] climb`` mode
that reserves a whole climb up front (the reservation would not cover the probe).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tierwise.cascade.shadow import sampled

if TYPE_CHECKING:
    from tierwise.cascade.steps import Run
    from tierwise.policy import Policy
    from tierwise.records import Role

__all__ = ["probe_due", "probe_tier"]


def probe_due(task_id: str, share: float) -> bool:
    """Whether the task with *task_id* is in a *share* of tasks probed (by its id alone)."""
    return sampled(f"probe:{task_id}", share)


def probe_tier(
    policy: Policy, role: Role, run: Run, *, relay: bool, checked: bool, explicit: bool
) -> tuple[str, int] | None:
    """The (tier, index) *run* probes before its routed tier, or ``None`` (module docstring).

    *relay*: the answer is relayed live; *checked*: validators judge the kind's outputs;
    *explicit*: the caller named the start tier.
    """
    share = policy.model.fleet.probe_share
    if share <= 0 or role != "live" or relay or not checked or explicit:
        return None
    decision = run.decision
    if decision.floor is None or decision.step == "frontier" or decision.tier_index < 1:
        return None  # only a floor that raised the task is probed
    if run.task.kind in policy.model.frontier.kinds:
        return None
    if run.limits and policy.model.budgets.climb != "per_attempt":
        return None
    if not probe_due(run.task.id, share):
        return None
    index = decision.tier_index - 1
    return policy.ladder[index], index
