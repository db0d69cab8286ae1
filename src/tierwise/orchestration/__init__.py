"""Plan-execute-review: a capable tier plans once, cheap tiers execute, a reviewer gates.

>>> from tierwise.cascade import Cascade
>>> from tierwise.orchestration import PlanRunner
>>> with Cascade(policy, ledger=ledger) as cascade:  # doctest: +SKIP
...     result = PlanRunner(cascade).run("Research and summarise the market for product X")
...     result.status, result.output, result.cost_usd

- :class:`PlanRunner` runs a goal (:mod:`tierwise.orchestration.runner` tells how);
- :data:`PLAN_SCHEMA` is the task graph a planner must return and :func:`parse_plan` checks it
  (:class:`PlanError` lists what is wrong: not JSON, off-schema, cyclic, unknown kinds or tiers);
- :func:`plan_tree` reads a plan's cost tree back from the ledger (``tierwise plan show``);
- :func:`planner_calibration` counts how each planner-assigned tier turned out
  (``tierwise plan calibration``).
"""

from __future__ import annotations

from tierwise.orchestration.calibration import (
    Calibration,
    TierCalibration,
    failure_rate_lines,
    planner_calibration,
)
from tierwise.orchestration.plan import PLAN_SCHEMA, Plan, PlanError, Subtask, parse_plan
from tierwise.orchestration.prompts import (
    PLAN_PROMPT_VERSION,
    REVIEW_PROMPT_VERSION,
    REVIEW_SCHEMA,
    Review,
)
from tierwise.orchestration.result import PlanResult, PlanStore, SubtaskResult
from tierwise.orchestration.runner import PLAN_KIND, PlanRunner
from tierwise.orchestration.tree import PlanNode, PlanTree, plan_tree

__all__ = [
    "PLAN_KIND",
    "PLAN_PROMPT_VERSION",
    "PLAN_SCHEMA",
    "REVIEW_PROMPT_VERSION",
    "REVIEW_SCHEMA",
    "Calibration",
    "Plan",
    "PlanError",
    "PlanNode",
    "PlanResult",
    "PlanRunner",
    "PlanStore",
    "PlanTree",
    "Review",
    "Subtask",
    "SubtaskResult",
    "TierCalibration",
    "failure_rate_lines",
    "parse_plan",
    "plan_tree",
    "planner_calibration",
]
