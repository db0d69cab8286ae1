"""The routing policy: the file a team writes, validated, with every lookup precomputed.

```python
from tierwise.policy import load_policy, check_policy

policy = load_policy("tierwise.toml")      # PolicyError lists every problem, with key paths
policy.ladder                               # ("cheap", "mid", "strong")
policy.kind("extract").validators           # resolved validator specs
check_policy(policy)                        # warnings: rules that never match, idle tiers
```
"""

from __future__ import annotations

from tierwise.errors import PolicyError, PolicyIssue
from tierwise.policy.check import check_policy
from tierwise.policy.core import (
    FrontierConstraint,
    KindConfig,
    Policy,
    UnknownTierError,
    changes_revision,
    policy_revision,
)
from tierwise.policy.loader import (
    default_policy,
    default_policy_text,
    load_policy,
    loads_policy,
)
from tierwise.policy.schema import Condition, PolicyModel, Rule, Tier

__all__ = [
    "Condition",
    "FrontierConstraint",
    "KindConfig",
    "Policy",
    "PolicyError",
    "PolicyIssue",
    "PolicyModel",
    "Rule",
    "Tier",
    "UnknownTierError",
    "changes_revision",
    "check_policy",
    "default_policy",
    "default_policy_text",
    "load_policy",
    "loads_policy",
    "policy_revision",
]
