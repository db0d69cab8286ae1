"""Routing: a pure rules router over the policy, and routing tables for people.

```python
from tierwise.policy import default_policy
from tierwise.routing import Router
from tierwise.task import Task

decision = Router(default_policy()).route(Task.create("code_edit", files=1))
decision.tier, decision.explain()     # ("mid", "mid: rule 8 (one-screen code edit)")
```
"""

from __future__ import annotations

from tierwise.routing.examples import EXAMPLE_TASKS
from tierwise.routing.router import Router
from tierwise.routing.table import RouteRow, reason, render_routing_table, routing_table

__all__ = ["EXAMPLE_TASKS", "RouteRow", "Router", "reason", "render_routing_table", "routing_table"]
