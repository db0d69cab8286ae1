"""tierwise: send each LLM task to the cheapest model tier that does it well.

Route by task, prove each output with validators, climb one tier on failure, count every cent.

```python
from tierwise import Cascade, Task, load_policy, open_ledger

policy = load_policy("tierwise.toml")
with open_ledger("tierwise-ledger.db") as ledger, Cascade(policy, ledger=ledger) as cascade:
    result = cascade.run(Task.create("extract", "Invoice 42 from ACME, total 10 EUR"))
```

The names below that pull in heavier dependencies (the SDKs, SQLAlchemy) are imported on first
use, so ``import tierwise`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tierwise.errors import (
    BudgetExceededError,
    EscalationExhaustedError,
    PolicyError,
    ProviderError,
    TierwiseError,
)
from tierwise.task import Decision, Message, Task, parse_annotations

if TYPE_CHECKING:
    from tierwise.cascade import Cascade, CascadeResult
    from tierwise.ledger import Ledger, open_ledger
    from tierwise.policy import Policy, default_policy, load_policy, loads_policy
    from tierwise.routing import Router

_LAZY = {
    "Cascade": "tierwise.cascade",
    "CascadeResult": "tierwise.cascade",
    "Ledger": "tierwise.ledger",
    "open_ledger": "tierwise.ledger",
    "Policy": "tierwise.policy",
    "default_policy": "tierwise.policy",
    "load_policy": "tierwise.policy",
    "loads_policy": "tierwise.policy",
    "Router": "tierwise.routing",
}

__all__ = [
    "BudgetExceededError",
    "Cascade",
    "CascadeResult",
    "Decision",
    "EscalationExhaustedError",
    "Ledger",
    "Message",
    "Policy",
    "PolicyError",
    "ProviderError",
    "Router",
    "Task",
    "TierwiseError",
    "default_policy",
    "load_policy",
    "loads_policy",
    "open_ledger",
    "parse_annotations",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tierwise' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
