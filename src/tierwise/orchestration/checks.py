"""The validators the planner's and the reviewer's answers pass through in the cascade.

A planner whose plan is refused (not JSON, cyclic, unknown kinds …) climbs like any task whose
output fails a check: the next tier gets the handoff note with every problem listed. A
reviewer whose answer is not a review climbs the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tierwise.cascade.result import Verdict
from tierwise.cascade.validators import BaseValidator
from tierwise.orchestration.plan import PlanError, parse_plan
from tierwise.orchestration.prompts import parse_review

if TYPE_CHECKING:
    from tierwise.cascade.validators import ValidationContext
    from tierwise.policy import Policy
    from tierwise.routing import Router

__all__ = ["PlanCheck", "ReviewCheck"]


class PlanCheck(BaseValidator):
    """Passes a planner's answer that :func:`parse_plan` accepts."""

    def __init__(self, policy: Policy, router: Router) -> None:
        super().__init__("plan")
        self.policy = policy
        self.router = router

    def _check(self, output: str, ctx: ValidationContext) -> Verdict:
        try:
            plan = parse_plan(output, self.policy, router=self.router)
        except PlanError as exc:
            first = exc.problems[0]
            more = f" (and {len(exc.problems) - 1} more)" if len(exc.problems) > 1 else ""
            return self.fail(first + more, detail="; ".join(exc.problems))
        return self.ok(reason=f"{len(plan)} subtasks")


class ReviewCheck(BaseValidator):
    """Passes a reviewer's answer that is one JSON object matching ``REVIEW_SCHEMA``."""

    def __init__(self) -> None:
        super().__init__("review")

    def _check(self, output: str, ctx: ValidationContext) -> Verdict:
        try:
            review = parse_review(output)
        except ValueError as exc:
            return self.fail(str(exc))
        return self.ok(reason=review.verdict)
