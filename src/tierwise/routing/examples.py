"""The articles' example tasks, as :class:`~tierwise.task.Task` values for routing tables and demos.

Every kind of the default policy appears, plus the annotated coding subtasks of one agent session
(docs, config, tests on a single file; a cross-service auth refactor) written in the one-line
``[scope: …] [domain: …] [ambiguity: …]`` form.
"""

from __future__ import annotations

from typing import Any

from tierwise.task import Task


def _task(n: int, kind: str, prompt: str, **attrs: Any) -> Task:
    return Task.create(kind, prompt, id=f"example-{n:02d}", **attrs)


EXAMPLE_TASKS: tuple[Task, ...] = (
    _task(1, "classify", "Is this inbound WhatsApp message support or sales?", input_tokens=120),
    _task(
        2,
        "classify",
        "Assign a category to this ticket; several categories overlap [ambiguity: medium]",
        input_tokens=600,
    ),
    _task(3, "route", "Is this a new build or a continuation of an existing project?"),
    _task(4, "filter_spam", "Spam or not: 'You won a free cruise, click here'", input_tokens=40),
    _task(
        5, "extract", "Extract vendor, date and total from this invoice as JSON", input_tokens=900
    ),
    _task(6, "summarize", "Summarise this code block for the handoff note", input_tokens=1500),
    _task(7, "summarize", "Summarise this 40-page contract", input_tokens=30000),
    _task(
        8,
        "draft_reply",
        "Draft a reply to a customer asking about delivery times",
        requires_code=False,
    ),
    _task(9, "code_edit", "Fix the bug in the date parser in utils/dates.py", files=1),
    _task(10, "design_page", "Design the landing page for the spring campaign"),
    _task(
        11,
        "code_edit",
        "Update the API docs for the new /v2/orders endpoint "
        "[scope: single-file] [domain: docs] [ambiguity: low]",
        files=1,
    ),
    _task(
        12,
        "code_edit",
        "Scaffold the staging Dockerfile [scope: single-file] [domain: config] [ambiguity: low]",
        files=1,
    ),
    _task(
        13,
        "code_edit",
        "Write unit tests for slugify() [scope: single-file] [domain: tests] [ambiguity: low]",
        files=1,
    ),
    _task(
        14,
        "refactor",
        "Refactor the authentication flow across the API gateway and the user service "
        "[scope: cross-service] [domain: security] [ambiguity: medium]",
        files=4,
    ),
    _task(
        15,
        "code_edit",
        "Fix the JWT expiry check in src/middleware/auth.ts:47 "
        "[scope: single-file] [domain: security] [ambiguity: low]",
        files=1,
    ),
    _task(
        16,
        "debug",
        "Orders stop syncing between billing and inventory "
        "[scope: cross-service] [domain: feature] [ambiguity: medium]",
        severity=3,
    ),
    _task(17, "build_project", "Build the booking app end to end (plan, then 10+ files)", files=12),
    _task(18, "refactor", "Rename the Order model across the codebase", files=10),
    _task(19, "debug", "Checkout fails for every user in production", severity=5),
    _task(20, "debug", "Tooltip is misaligned on the settings page", severity=2),
    _task(21, "architecture", "Event sourcing or CRUD for the billing service? Weigh trade-offs"),
    _task(22, "review", "Does this contract clause create indemnification risk?"),
    _task(23, "plan", "Break the competitive-landscape research into subtasks and assign tiers"),
)
