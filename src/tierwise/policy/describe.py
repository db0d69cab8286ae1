"""Policies for people: conditions as short text, and a JSON-ready summary of a whole policy."""

from __future__ import annotations

from typing import Any

from tierwise.policy.core import Policy
from tierwise.policy.schema import Condition, Range


def describe_condition(when: Condition) -> str:
    """A condition as compact text, e.g. ``kind=code_edit, files<=2, domain in {docs, tests}``."""
    parts: list[str] = []
    for name, value in when.fields_set().items():
        if isinstance(value, bool):
            parts.append(f"{name}={'true' if value else 'false'}")
        elif isinstance(value, str):
            parts.append(f"{name}={value}")
        elif isinstance(value, list):
            parts.append(f"{name} in {{{', '.join(value)}}}")
        elif isinstance(value, Range):
            lo, hi = _num(value.min), _num(value.max)
            if lo is not None and hi is not None:
                parts.append(f"{lo}<={name}<={hi}")
            elif hi is not None:
                parts.append(f"{name}<={hi}")
            else:
                parts.append(f"{name}>={lo}")
        else:
            parts.append(f"{name}={value}")
    return ", ".join(parts) or "always"


def _num(value: float | None) -> str | None:
    if value is None:
        return None
    return str(int(value)) if float(value).is_integer() else str(value)


def policy_summary(policy: Policy) -> dict[str, Any]:
    """The effective policy as plain data: ladder, frontier, rules, kinds, defaults, fleet."""
    model = policy.model
    kinds: dict[str, Any] = {}
    for name in (*policy.kinds, None):
        config = policy.kind(name or "")
        key = name if name is not None else "[defaults]"
        kinds[key] = {
            "floor": config.floor,
            "floor_source": config.floor_source,
            "doubt": config.doubt,
            "doubt_tier": policy.doubt_tier(config.doubt, config.floor, config.judge_fallback),
            "validators": [
                n if n is not None else spec.type
                for n, spec in zip(config.validator_names, config.validators, strict=True)
            ],
            "stream": config.stream,
            "budget_usd_day": str(config.budget_usd_day) if config.budget_usd_day else None,
            "description": config.description,
        }
    return {
        "source": str(policy.source) if policy.source else None,
        "revision": policy.revision,
        "store_content": model.store_content,
        "ladder": [
            {
                "tier": t.name,
                "index": i,
                "provider": t.provider,
                "model": t.model,
                "base_url": t.base_url,
                "api_key_env": t.api_key_env,
                "alternates": [a.model for a in t.alternate_specs()],
            }
            for i, t in enumerate(model.tiers)
        ],
        "frontier": [
            {
                "index": c.index,
                "name": c.name,
                "when": describe_condition(c.when),
                "tier": c.tier,
            }
            for c in policy.frontier_constraints
        ],
        "rules": [
            {
                "index": i,
                "name": r.name,
                "when": describe_condition(r.when),
                "tier": r.tier,
            }
            for i, r in enumerate(model.rules)
        ],
        "kinds": kinds,
        "fleet": model.fleet.model_dump(mode="json"),
    }
