"""The planner's, the executors' and the reviewer's prompts (fixed, versioned), and the review's
answer format.

The planner is told the goal, the kinds the policy lists (with their descriptions), the ladder
and the task taxonomy, and — with ``[plan] prompt_failure_rates`` — how often subtasks of each
kind failed on each assigned tier in past plans. An executor sees the goal, its dependencies'
outputs and its own subtask. The reviewer sees one subtask and its output and answers
:data:`REVIEW_SCHEMA`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from tierwise.cascade.judge import TAXONOMY
from tierwise.orchestration.plan import PLAN_SCHEMA, Subtask

if TYPE_CHECKING:
    from tierwise.policy import Policy

__all__ = [
    "PLAN_PROMPT_VERSION",
    "REVIEW_PROMPT_VERSION",
    "REVIEW_SCHEMA",
    "Review",
    "executor_prompt",
    "parse_review",
    "planner_prompt",
    "reviewer_prompt",
]

PLAN_PROMPT_VERSION = "plan-v1"
REVIEW_PROMPT_VERSION = "review-v1"

#: What the reviewer answers: accept the output, or reject it (it then goes one tier up).
REVIEW_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "tierwise review v1",
    "type": "object",
    "required": ["verdict", "reason"],
    "additionalProperties": False,
    "properties": {
        "verdict": {"enum": ["accept", "reject"]},
        "reason": {"type": "string", "maxLength": 500},
    },
}

#: How much of the goal an executor or the reviewer sees (its own step and inputs: all).
_CONTEXT_CHARS = 4000
#: The reviewer judges one step against its own instructions: the goal is only a reminder.
_REVIEW_GOAL_CHARS = 1000


@dataclass(frozen=True, slots=True)
class Review:
    """The reviewer's verdict on one output."""

    verdict: Literal["accept", "reject"]
    reason: str

    @property
    def accepted(self) -> bool:
        return self.verdict == "accept"


def planner_prompt(goal: str, policy: Policy, failure_rates: Sequence[str] = ()) -> tuple[str, str]:
    """The planner's (system, user) prompt for *goal*.

    *failure_rates* are lines like ``extract on cheap: 4 of 20 subtasks failed (20%)``, given
    when ``[plan] prompt_failure_rates`` is on.
    """
    settings = policy.model.plan
    kinds = []
    for name in policy.kinds:
        description = policy.kind(name).description
        kinds.append(f"- {name}" + (f": {description}" if description else ""))
    ladder = policy.ladder
    rungs = [
        f"- {name}" + (" (cheapest)" if i == 0 else " (strongest)" if i == len(ladder) - 1 else "")
        for i, name in enumerate(ladder)
    ]
    system = "\n".join(
        [
            f"You are the planner of tierwise ({PLAN_PROMPT_VERSION}). Break the goal into at "
            f"most {settings.max_subtasks} subtasks that together achieve it. For each, choose "
            "the kind of work, write a self-contained prompt, list the subtasks whose results "
            "it needs, and assign the cheapest tier that will do it well, with a one-line "
            "justification. Subtasks without dependencies on each other run in parallel; a "
            "subtask sees the results of those it depends on. A reviewer checks every result "
            "and sends a wrong one a tier up, which costs more than assigning it right.",
            "",
            "Kinds (use only these):",
            *kinds,
            "",
            "Tiers, cheapest to strongest:",
            *rungs,
            "",
            "Task taxonomy (bands map onto the tiers from the bottom up):",
            TAXONOMY,
            *(
                [
                    "",
                    "Observed in past plans (subtasks that failed, by kind and assigned tier); "
                    "assign higher where a tier fails often:",
                    *failure_rates,
                ]
                if failure_rates
                else []
            ),
            "",
            "Answer with one JSON object and nothing else, matching this JSON schema:",
            json.dumps(PLAN_SCHEMA, separators=(",", ":")),
        ]
    )
    return system, f"Goal:\n{goal}"


def executor_prompt(goal: str, subtask: Subtask, results: Sequence[tuple[str, str]]) -> str:
    """What an executor is asked: the goal, its dependencies' results, then its own step."""
    parts = [
        "You are carrying out one step of a larger plan.",
        f"Overall goal: {_clip(goal)}",
    ]
    if results:
        parts.append("Results of the steps this one builds on:")
        parts += [f"[{sid}]\n{text}" for sid, text in results]
    parts.append(f"Your step ({subtask.id}): {subtask.prompt}")
    return "\n\n".join(parts)


def reviewer_prompt(goal: str, subtask: Subtask, output: str) -> tuple[str, str]:
    """The reviewer's (system, user) prompt for one subtask's output."""
    system = (
        f"You are the reviewer of tierwise ({REVIEW_PROMPT_VERSION}). Check one step's result "
        "against its instructions and the overall goal. Accept it when it does what was asked, "
        "correctly; reject it when it is wrong, incomplete or unusable by later steps, and say "
        "what is wrong in one or two sentences (the next attempt reads your reason). Answer "
        'with one JSON object and nothing else: {"verdict": "accept" or "reject", '
        '"reason": "..."}.'
    )
    user = "\n\n".join(
        [
            f"Overall goal: {_clip(goal, _REVIEW_GOAL_CHARS)}",
            f"Step {subtask.id} ({subtask.kind}): {subtask.prompt}",
            f"Result to review:\n<<<\n{output}\n>>>",
        ]
    )
    return system, user


_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)


def parse_review(text: str) -> Review:
    """The reviewer's answer as a :class:`Review`.

    Raises:
        ValueError: it is not one JSON object matching :data:`REVIEW_SCHEMA`.
    """
    from jsonschema import Draft202012Validator

    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1)
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the review is not JSON ({exc.msg})") from None
    errors = sorted(Draft202012Validator(REVIEW_SCHEMA).iter_errors(data), key=str)
    if errors:
        raise ValueError(f"the review breaks its schema: {errors[0].message}")
    return Review(data["verdict"], " ".join(str(data["reason"]).split()))


def _clip(text: str, limit: int = _CONTEXT_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + " [...]"
