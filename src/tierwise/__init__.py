"""tierwise: send each LLM task to the cheapest model tier that does it well.

Route by task, prove each output with validators, climb one tier on failure, count every cent.
"""

from __future__ import annotations

from tierwise.errors import (
    BudgetExceededError,
    EscalationExhaustedError,
    PolicyError,
    ProviderError,
    TierwiseError,
)
from tierwise.task import Decision, Message, Task, parse_annotations

__all__ = [
    "BudgetExceededError",
    "Decision",
    "EscalationExhaustedError",
    "Message",
    "PolicyError",
    "ProviderError",
    "Task",
    "TierwiseError",
    "parse_annotations",
]

__version__ = "0.1.0"
