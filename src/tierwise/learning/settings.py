"""What the learner judges by: the policy's ``[fleet]`` settings and ladder."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from tierwise.policy import Policy

__all__ = ["LearnSettings"]

Mode = Literal["suggest", "auto"]


@dataclass(frozen=True, slots=True)
class LearnSettings:
    """The ``[fleet]`` keys the learner reads (see the policy reference), with the ladder.

    ``promotion_threshold``: promote when the lower bound of the 95% interval of a kind's
    failure rate on its floor is at least this; ``demotion_threshold``: demote when the upper
    bound of the failure rate one tier below (probes) is at most this; ``min_sample`` tasks (or
    probes) at least; ``cooldown`` between two moves of one kind; ``window`` of evidence.
    """

    mode: Mode = "suggest"
    promotion_threshold: float = 0.60
    demotion_threshold: float = 0.25
    min_sample: int = 50
    probe_share: float = 0.02
    cooldown: timedelta = timedelta(days=7)
    window: timedelta = timedelta(days=14)
    red_line: float = 0.09
    ladder: tuple[str, ...] = ("cheap", "mid", "strong")
    #: Kinds on the must-stay-frontier list: never probed, never moved.
    frontier_kinds: frozenset[str] = frozenset()

    @classmethod
    def from_policy(cls, policy: Policy, *, window: timedelta | None = None) -> LearnSettings:
        """The settings of *policy*'s ``[fleet]`` table (*window* replaces ``window_days``)."""
        fleet = policy.model.fleet
        settings = cls(
            mode=fleet.mode,
            promotion_threshold=fleet.promotion_threshold,
            demotion_threshold=fleet.demotion_threshold,
            min_sample=fleet.min_sample,
            probe_share=fleet.probe_share,
            cooldown=timedelta(days=fleet.cooldown_days),
            window=timedelta(days=fleet.window_days),
            red_line=fleet.escalation_red_line,
            ladder=tuple(policy.ladder),
            frontier_kinds=frozenset(policy.model.frontier.kinds),
        )
        return settings if window is None else replace(settings, window=window)

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "promotion_threshold": self.promotion_threshold,
            "demotion_threshold": self.demotion_threshold,
            "min_sample": self.min_sample,
            "probe_share": self.probe_share,
            "cooldown_days": self.cooldown.total_seconds() / 86400,
            "window_days": self.window.total_seconds() / 86400,
            "escalation_red_line": self.red_line,
            "ladder": list(self.ladder),
        }
