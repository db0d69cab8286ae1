"""`check_policy`: warnings about valid policies that do not do what their author meant."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tierwise.errors import PolicyIssue
from tierwise.policy import Policy, PolicyModel, check_policy, default_policy, loads_policy
from tierwise.routing import Router
from tierwise.task import Task

HEAD = """\
version = 1
[[tiers]]
name = "cheap"
provider = "anthropic"
model = "claude-haiku-4-5"
[[tiers]]
name = "mid"
provider = "anthropic"
model = "claude-sonnet-4-6"
[[tiers]]
name = "strong"
provider = "anthropic"
model = "claude-opus-4-6"
[defaults]
doubt = "up"
[[rules]]
name = "cheap stuff"
when = { kind = "cheap_kind" }
tier = "cheap"
[[rules]]
name = "hard stuff"
when = { kind = "hard_kind" }
tier = "strong"
"""


def warnings(text: str) -> list[PolicyIssue]:
    issues = check_policy(loads_policy(text))
    assert all(i.severity == "warning" for i in issues), issues
    return issues


def line_containing(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_the_default_policy_has_no_warnings() -> None:
    assert check_policy(default_policy()) == []


def test_a_clean_policy_has_no_warnings() -> None:
    assert warnings(HEAD) == []


def test_rule_shadowed_by_an_earlier_rule_with_a_subset_of_its_conditions() -> None:
    text = (
        HEAD
        + """
[[rules]]
name = "broad"
when = { kind = ["x", "y"], files = { max = 10 } }
tier = "mid"
[[rules]]
name = "narrow"
when = { kind = "x", files = { min = 1, max = 3 }, domain = "docs" }
tier = "cheap"
"""
    )
    (issue,) = warnings(text)
    assert issue.path == "rules[3]"
    assert "rules[3] (narrow) can never match" in issue.message
    assert "rules[2] (broad)" in issue.message
    assert issue.line == line_containing(text, 'name = "narrow"') - 1


def test_a_narrower_earlier_rule_does_not_shadow_a_broader_later_one() -> None:
    text = (
        HEAD
        + """
[[rules]]
when = { kind = "x", files = { max = 2 } }
tier = "mid"
[[rules]]
when = { kind = "x" }
tier = "strong"
[[rules]]
when = { kind = "x", files = { min = 0, max = 5 } }
tier = "cheap"
"""
    )
    issues = warnings(text)
    # rules[3] is broader than the earlier rules[2], so it still matches (files > 2 or unknown);
    # rules[4] is dead: every task it matches is a kind=x task, which rules[3] takes first
    assert [i.path for i in issues] == ["rules[4]"]


def test_rule_that_can_never_match() -> None:
    text = (
        HEAD
        + """
[[rules]]
when = { kind = [] }
tier = "mid"
[[rules]]
when = { kind = "k", files = { min = 2.2, max = 2.8 } }
tier = "mid"
[[rules]]
when = { kind = "k", files = { max = -1 } }
tier = "mid"
"""
    )
    issues = warnings(text)
    assert [i.path for i in issues] == [
        "rules[2].when.kind",
        "rules[3].when.files",
        "rules[4].when.files",
    ]
    assert all("can never match" in i.message for i in issues)


def test_rule_whose_tier_is_always_overridden_by_the_frontier() -> None:
    text = (
        HEAD
        + """
[frontier]
domains = ["security"]
[[rules]]
name = "security docs"
when = { domain = "security", scope = "single-file" }
tier = "cheap"
"""
    )
    (issue,) = warnings(text)
    assert issue.path == "rules[2].tier"
    assert "pinned to 'strong' by must-stay-frontier constraint 'domain=security'" in issue.message


def test_tier_nothing_routes_to() -> None:
    text = HEAD.replace('tier = "strong"', 'tier = "cheap"')
    (issue,) = warnings(text)
    assert issue.path == "tiers[2]"
    assert "nothing routes to tier 'strong'" in issue.message
    assert issue.line == line_containing(text, 'name = "strong"') - 1


def test_floors_doubt_and_frontier_pins_count_as_routing_to_a_tier() -> None:
    text = HEAD.replace('tier = "strong"', 'tier = "cheap"')
    assert warnings(text + '[kinds.k]\nfloor = "strong"\n') == []
    assert warnings(text + '[kinds.k]\ndoubt = "strong"\n') == []
    assert warnings(text + '[kinds.k]\nfloor = "mid"\ndoubt = "up"\n') == []
    assert warnings(text + '[frontier]\ndomains = ["schema"]\n') == []


def test_frontier_pin_at_the_bottom_tier_pins_nothing() -> None:
    text = HEAD + '[frontier]\ntier = "cheap"\ndomains = ["security"]\n'
    issues = warnings(text)
    assert [i.path for i in issues] == ["frontier.tier"]


def test_kind_that_looks_like_a_typo_of_a_listed_kind() -> None:
    text = HEAD + '[[rules]]\nwhen = { kind = "clasify" }\ntier = "mid"\n[kinds.classify]\n'
    (issue,) = warnings(text)
    assert issue.path == "rules[2].when.kind"
    assert issue.message.endswith("did you mean 'classify'?")


def test_prices_no_tier_uses() -> None:
    text = HEAD + '[prices."old-model"]\ninput = 1\noutput = 2\n'
    (issue,) = warnings(text)
    assert issue.path == "prices.old-model"


def test_validator_that_cannot_be_built_is_an_error(tmp_path: Path) -> None:
    text = HEAD + '[validators.invoice]\ntype = "json_schema"\nschema = "missing.json"\n'
    policy = loads_policy(text, base_dir=tmp_path)
    issues = check_policy(policy)
    assert [i.severity for i in issues] == ["error"]
    assert issues[0].path.startswith("validators.invoice")
    (tmp_path / "missing.json").write_text('{"type": "object"}')
    assert check_policy(policy) == []


def test_check_policy_on_a_path_returns_load_errors_instead_of_raising(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(HEAD.replace("kind =", "knd ="))
    issues = check_policy(bad)
    assert issues and all(i.severity == "error" for i in issues)
    good = tmp_path / "good.toml"
    good.write_text(HEAD)
    assert check_policy(str(good)) == []


# -- soundness: a rule called unreachable is never reached -----------------------------------------

_COND = st.fixed_dictionaries(
    {},
    optional={
        "kind": st.sampled_from(["a", "b"]) | st.lists(st.sampled_from(["a", "b"]), max_size=2),
        "files": st.integers(0, 4)
        | st.tuples(st.integers(0, 4), st.integers(0, 4)).map(
            lambda b: {"min": min(b), "max": max(b)}
        ),
        "domain": st.sampled_from(["docs", "tests"]),
        "requires_code": st.booleans(),
    },
)
_TASK = st.builds(
    Task,
    kind=st.sampled_from(["a", "b", "c"]),
    files=st.none() | st.integers(0, 4),
    domain=st.none() | st.sampled_from(["docs", "tests", "feature"]),
    requires_code=st.none() | st.booleans(),
)


@settings(max_examples=150, deadline=None)
@given(
    rules=st.lists(
        st.fixed_dictionaries({"when": _COND, "tier": st.sampled_from(["x", "y"])}), max_size=6
    ),
    tasks=st.lists(_TASK, max_size=25),
)
def test_rules_reported_unreachable_are_never_chosen(
    rules: list[dict[str, Any]], tasks: list[Task]
) -> None:
    tiers = [{"name": n, "provider": "anthropic", "model": "claude-haiku-4-5"} for n in "xy"]
    policy = Policy(PolicyModel.model_validate({"version": 1, "tiers": tiers, "rules": rules}))
    dead = {
        int(i.path.split("[")[1].split("]")[0])
        for i in check_policy(policy)
        if i.path.startswith("rules[") and "never match" in i.message
    }
    router = Router(policy)
    for task in tasks:
        assert router.route(task).rule_index not in dead
