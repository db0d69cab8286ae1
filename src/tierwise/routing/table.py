"""A routing table: where each of a list of tasks goes under a policy, and why."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tierwise.policy import Policy
from tierwise.routing.router import Router
from tierwise.task import ATTRIBUTES, Decision, Task

if TYPE_CHECKING:
    from rich.table import Table


@dataclass(frozen=True, slots=True)
class RouteRow:
    """One task's routing: the decision and the model serving its tier."""

    task: Task
    decision: Decision
    model: str
    provider: str

    @property
    def attributes(self) -> dict[str, object]:
        """The routable attributes the task carries."""
        values = ((name, getattr(self.task, name)) for name in ATTRIBUTES)
        return {name: value for name, value in values if value is not None}

    def as_dict(self) -> dict[str, object]:
        """JSON-ready: the task's kind, prompt and attributes, the decision, model and provider."""
        return {
            "task_id": self.task.id,
            "kind": self.task.kind,
            "prompt": self.task.prompt,
            "attributes": self.attributes,
            "model": self.model,
            "provider": self.provider,
            **self.decision.as_dict(),
        }


def routing_table(
    policy: Policy, tasks: Iterable[Task] | None = None, *, router: Router | None = None
) -> list[RouteRow]:
    """Route each task (default: :data:`~tierwise.routing.examples.EXAMPLE_TASKS`)."""
    if tasks is None:
        from tierwise.routing.examples import EXAMPLE_TASKS

        tasks = EXAMPLE_TASKS
    router = router or Router(policy)
    rows = []
    for task in tasks:
        decision = router.route(task)
        tier = router.policy.tier(decision.tier)
        rows.append(RouteRow(task, decision, tier.model, tier.provider))
    return rows


def render_routing_table(rows: Iterable[RouteRow], *, title: str | None = None) -> Table:
    """A rich table of *rows*: task, kind, tier, model and the reason."""
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    table.add_column("task", overflow="fold", ratio=3)
    table.add_column("kind", no_wrap=True)
    table.add_column("tier", no_wrap=True)
    table.add_column("model", no_wrap=True)
    table.add_column("why", overflow="fold", ratio=2)
    for row in rows:
        table.add_row(
            row.task.prompt, row.task.kind, row.decision.tier, row.model, reason(row.decision)
        )
    return table


def reason(decision: Decision) -> str:
    """A short account of what decided: ``rule 2: intent, routing, spam``, ``frontier: …``."""
    d = decision
    if d.step == "frontier":
        text = f"frontier: {d.constraint_name}"
    elif d.step == "rule":
        text = f"rule {d.rule_index}" + (f": {d.rule_name}" if d.rule_name else "")
    elif d.step == "doubt":
        text = f"no rule; doubt {d.doubt}"
    else:
        text = "explicit start"
    if d.floor:
        text += f"; {d.floor_source or 'policy'} floor {d.floor}"
    return text
