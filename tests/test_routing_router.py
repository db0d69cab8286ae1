"""The rules router: order of decision, explanations, and its properties on generated policies."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tierwise.policy import Policy, PolicyModel, UnknownTierError, default_policy, loads_policy
from tierwise.routing import EXAMPLE_TASKS, Router, routing_table
from tierwise.task import AMBIGUITIES, DOMAINS, SCOPES, Task

# -- the default policy: the articles' taxonomy ---------------------------------------------------


@pytest.fixture(scope="module")
def router() -> Router:
    return Router(default_policy())


@pytest.mark.parametrize(
    ("task", "tier"),
    [
        (Task(kind="classify"), "cheap"),
        (Task(kind="route"), "cheap"),
        (Task(kind="filter_spam"), "cheap"),
        (Task(kind="extract", input_tokens=800), "cheap"),
        (Task(kind="summarize", input_tokens=4000), "cheap"),
        (Task(kind="summarize", input_tokens=4001), "mid"),
        (Task(kind="draft_reply", requires_code=False), "cheap"),
        (Task(kind="draft_reply", requires_code=True), "mid"),
        (Task(kind="code_edit", files=2), "mid"),
        (Task(kind="design_page"), "mid"),
        (Task(kind="classify", ambiguity="medium"), "mid"),
        (Task(kind="build_project"), "strong"),
        (Task(kind="refactor", files=4), "strong"),
        (Task(kind="refactor", files=3), "mid"),  # not over 3 files: doubt "up"
        (Task(kind="debug", severity=4), "strong"),
        (Task(kind="debug", severity=3), "mid"),
        (Task(kind="architecture"), "strong"),
        (Task(kind="review"), "strong"),
        (Task(kind="plan"), "strong"),
        (Task(kind="code_edit", scope="single-file", domain="docs", ambiguity="low"), "cheap"),
        (Task(kind="code_edit", scope="single-file", domain="tests", ambiguity="low"), "cheap"),
        (Task(kind="code_edit", scope="cross-service", files=1), "strong"),
        (Task(kind="classify", domain="security"), "strong"),
        (Task(kind="extract", domain="schema"), "strong"),
        (Task(kind="summarize", ambiguity="high", input_tokens=100), "strong"),
        (Task(kind="tone_check"), "mid"),  # unlisted kind: [defaults] doubt "up"
    ],
)
def test_default_policy_routes_the_articles_taxonomy(router: Router, task: Task, tier: str) -> None:
    assert router.route(task).tier == tier


def test_frontier_decides_even_when_a_cheap_rule_matches(router: Router) -> None:
    task = Task(kind="code_edit", scope="single-file", domain="security", ambiguity="high")
    d = router.route(task)
    assert (d.tier, d.step, d.constraint_name) == ("strong", "frontier", "domain=security")
    assert d.constraint_index == 0
    assert d.explain().startswith("strong: must-stay-frontier constraint domain=security")


def test_the_highest_pin_wins_and_the_first_names_it() -> None:
    policy = loads_policy(
        _HEAD3
        + """
[frontier]
domains = ["security"]
[[frontier.rules]]
name = "docs-mid"
when = { domain = "docs" }
tier = "mid"
[[frontier.rules]]
name = "any-docs-low"
when = { ambiguity = "low" }
tier = "mid"
"""
    )
    d = Router(policy).route(Task(kind="x", domain="docs", ambiguity="low"))
    assert (d.tier, d.step, d.constraint_name, d.constraint_index) == (
        "mid",
        "frontier",
        "docs-mid",
        1,
    )


def test_rule_then_floor_then_doubt(router: Router) -> None:
    rule = router.route(Task(kind="extract"))
    assert (rule.step, rule.rule_index, rule.rule_name, rule.doubt) == (
        "rule",
        3,
        "extraction",
        None,
    )
    doubt = router.route(Task(kind="debug"))
    assert (doubt.step, doubt.rule_index, doubt.doubt, doubt.tier) == ("doubt", None, "up", "mid")
    assert doubt.explain() == "mid: no rule matched; doubt direction 'up'"


def test_floor_raises_a_cheap_rule_and_says_so() -> None:
    policy = default_policy().with_floors({"extract": "mid"})
    d = Router(policy).route(Task(kind="extract"))
    assert (d.tier, d.step, d.rule_index) == ("mid", "rule", 3)
    assert (d.floor, d.floor_source) == ("mid", "learned")
    assert "raised to the learned floor 'mid'" in d.explain()
    same = Router(default_policy(), floors={"extract": "mid"}).route(Task(kind="extract"))
    assert same == d


def test_floor_never_lowers_a_rule(router: Router) -> None:
    d = router.route(Task(kind="review"))  # floor mid, rule strong
    assert (d.tier, d.floor) == ("strong", None)


def test_doubt_up_goes_one_above_the_floor() -> None:
    policy = default_policy().with_floors({"debug": "mid"})
    d = Router(policy).route(Task(kind="debug", severity=2))
    assert (d.tier, d.step, d.doubt, d.floor) == ("strong", "doubt", "up", None)


def test_doubt_cheap_goes_to_the_bottom_and_a_tier_name_goes_there() -> None:
    policy = loads_policy(_HEAD3 + '[kinds.a]\ndoubt = "cheap"\n[kinds.b]\ndoubt = "strong"\n')
    r = Router(policy)
    assert r.route(Task(kind="a")).tier == "cheap"
    assert r.route(Task(kind="b")).tier == "strong"
    assert r.route(Task(kind="c")).tier == "mid"  # [defaults] doubt is "up"


def test_conditions_on_missing_attributes_do_not_match(router: Router) -> None:
    assert router.route(Task(kind="summarize")).step == "doubt"  # no input_tokens
    assert router.route(Task(kind="draft_reply")).step == "doubt"  # requires_code unknown
    assert router.route(Task(kind="code_edit")).step == "doubt"  # no files


def test_ranges_are_inclusive_and_lists_mean_any_of() -> None:
    policy = loads_policy(
        _HEAD3
        + """
[[rules]]
when = { kind = ["a", "b"], files = { min = 2, max = 4 } }
tier = "strong"
"""
    )
    r = Router(policy)
    assert [r.route(Task(kind="b", files=n)).step for n in (1, 2, 4, 5)] == [
        "doubt", "rule", "rule", "doubt",
    ]  # fmt: skip
    assert r.route(Task(kind="c", files=3)).step == "doubt"


def test_unlisted_kind_is_reported(router: Router) -> None:
    d = router.route(Task(kind="tone_check"))
    assert d.kind_known is False
    assert "kind 'tone_check' is not in the policy" in d.explain()
    assert router.route(Task(kind="classify")).kind_known is True


def test_annotations_in_the_task_text_route_the_task(router: Router) -> None:
    task = Task.create(
        "code_edit", "Write tests [scope: single-file] [domain: tests] [ambiguity: low]"
    )
    d = router.route(task)
    assert (d.tier, d.rule_index) == ("cheap", 0)
    security = Task.create("code_edit", "Fix JWT expiry [scope: single-file] [domain: security]")
    assert router.route(security).step == "frontier"


def test_start_at_honours_frontier_pins_but_not_floors(router: Router) -> None:
    secure = Task(kind="classify", domain="security")
    d = router.start_at(secure, "cheap")
    assert (d.tier, d.step, d.constraint_name) == ("strong", "frontier", "domain=security")
    plain = router.start_at(Task(kind="design_page"), "cheap")  # design_page has floor mid
    assert (plain.tier, plain.step) == ("cheap", "start")
    assert router.start_at(Task(kind="classify"), "strong").tier == "strong"
    with pytest.raises(UnknownTierError):
        router.start_at(Task(kind="classify"), "gold")


def test_decision_as_dict_is_complete(router: Router) -> None:
    data = router.route(Task(kind="debug", severity=5)).as_dict()
    assert data["tier"] == "strong"
    assert data["rule_index"] == 12
    assert data["explanation"] == "strong: rule 12 (severe bug)"


def test_example_tasks_cover_every_kind_and_the_annotated_examples() -> None:
    policy = default_policy()
    assert set(policy.kinds) <= {t.kind for t in EXAMPLE_TASKS}
    assert len({t.id for t in EXAMPLE_TASKS}) == len(EXAMPLE_TASKS)
    domains = {t.domain for t in EXAMPLE_TASKS}
    assert {"docs", "config", "tests", "security"} <= domains
    assert any(t.scope == "cross-service" for t in EXAMPLE_TASKS)
    rows = routing_table(policy)
    assert [r.task for r in rows] == list(EXAMPLE_TASKS)
    assert {r.decision.tier for r in rows} == {"cheap", "mid", "strong"}
    assert all(r.model == policy.tier(r.decision.tier).model for r in rows)
    assert rows[0].as_dict()["model"] == "claude-haiku-4-5"


# -- every rule of the default policy is reachable -------------------------------------------------


def _satisfying(when: dict[str, Any]) -> dict[str, Any]:
    """Attribute values meeting every condition of a rule (the first of each list, a range end)."""
    attrs: dict[str, Any] = {}
    for name, want in when.items():
        if isinstance(want, list):
            attrs[name] = want[0]
        elif isinstance(want, dict):
            attrs[name] = int(want["min"] if want.get("min") is not None else want["max"])
        else:
            attrs[name] = want
    return attrs


def test_every_default_rule_is_reachable(router: Router) -> None:
    rules = default_policy().model.rules
    assert len(rules) >= 14
    for i, rule in enumerate(rules):
        attrs = _satisfying(rule.when.model_dump(exclude_none=True))
        attrs.setdefault("kind", "some_unlisted_kind")
        d = router.route(Task(**attrs))
        assert d.rule_index == i, (i, rule.name, d)


@st.composite
def _task_for_rule(draw: st.DrawFn, when: dict[str, Any]) -> Task:
    """A task carrying only the attributes a rule names, with any values that satisfy them."""
    attrs: dict[str, Any] = {}
    for name, want in when.items():
        if isinstance(want, list):
            attrs[name] = draw(st.sampled_from(want))
        elif isinstance(want, dict):
            lo = (
                int(want["min"])
                if want.get("min") is not None
                else (1 if name == "severity" else 0)
            )
            hi = (
                int(want["max"])
                if want.get("max") is not None
                else (5 if name == "severity" else 10**6)
            )
            attrs[name] = draw(st.integers(lo, hi))
        else:
            attrs[name] = want
    attrs.setdefault("kind", draw(st.sampled_from(["x_unlisted", "y_unlisted"])))
    return Task(**attrs)


_DEFAULT_RULES = [r.when.model_dump(exclude_none=True) for r in default_policy().model.rules]


@pytest.mark.parametrize("index", range(len(_DEFAULT_RULES)))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_any_task_meeting_only_a_default_rule_reaches_it(index: int, data: st.DataObject) -> None:
    task = data.draw(_task_for_rule(_DEFAULT_RULES[index]))
    assert Router(default_policy()).route(task).rule_index == index


# -- generated policies: compare with a straightforward reference implementation ------------------

_KINDS = ("a", "b", "c")
_HEAD3 = """\
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
"""


def _int_condition(lo: int, hi: int) -> st.SearchStrategy[Any]:
    bounds = st.tuples(st.integers(lo, hi), st.integers(lo, hi)).map(sorted)
    return st.one_of(
        st.integers(lo, hi),
        bounds.map(lambda b: {"min": b[0], "max": b[1]}),
        st.integers(lo, hi).map(lambda v: {"min": v}),
        st.integers(lo, hi).map(lambda v: {"max": v}),
    )


def _str_condition(values: tuple[str, ...]) -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from(values), st.lists(st.sampled_from(values), max_size=3))


_CONDITION = st.fixed_dictionaries(
    {},
    optional={
        "kind": _str_condition(_KINDS),
        "input_tokens": _int_condition(0, 40),
        "files": _int_condition(0, 6),
        "severity": _int_condition(1, 5),
        "requires_code": st.booleans(),
        "scope": _str_condition(SCOPES),
        "domain": _str_condition(DOMAINS),
        "ambiguity": _str_condition(AMBIGUITIES),
    },
)


@st.composite
def _policies(draw: st.DrawFn, with_floors: bool = True) -> dict[str, Any]:
    names = [f"t{i}" for i in range(draw(st.integers(1, 4)))]
    tier = st.sampled_from(names)
    maybe_tier = st.none() | tier
    doubt = st.sampled_from(["cheap", "up", *names])
    floor = maybe_tier if with_floors else st.none()
    kind_settings = st.fixed_dictionaries({"floor": floor, "doubt": st.none() | doubt})
    return {
        "version": 1,
        "tiers": [{"name": n, "provider": "anthropic", "model": "claude-haiku-4-5"} for n in names],
        "frontier": {
            "tier": draw(maybe_tier),
            "domains": draw(st.lists(st.sampled_from(DOMAINS), max_size=2)),
            "kinds": draw(st.lists(st.sampled_from(_KINDS), max_size=1)),
            "ambiguity": draw(st.lists(st.sampled_from(AMBIGUITIES), max_size=1)),
            "rules": draw(
                st.lists(
                    st.fixed_dictionaries({"when": _CONDITION, "tier": maybe_tier}), max_size=2
                )
            ),
        },
        "rules": draw(
            st.lists(st.fixed_dictionaries({"when": _CONDITION, "tier": tier}), max_size=6)
        ),
        "defaults": {"floor": draw(floor), "doubt": draw(doubt)},
        "kinds": draw(st.dictionaries(st.sampled_from(_KINDS), kind_settings, max_size=3)),
    }


_TASKS = st.builds(
    Task,
    kind=st.sampled_from((*_KINDS, "z")),
    input_tokens=st.none() | st.integers(0, 40),
    files=st.none() | st.integers(0, 6),
    severity=st.none() | st.integers(1, 5),
    requires_code=st.none() | st.booleans(),
    scope=st.none() | st.sampled_from(SCOPES),
    domain=st.none() | st.sampled_from(DOMAINS),
    ambiguity=st.none() | st.sampled_from(AMBIGUITIES),
)


def _build(raw: dict[str, Any]) -> Policy:
    return Policy(PolicyModel.model_validate(raw))


def _matches(when: dict[str, Any], task: Task) -> bool:
    for name, want in when.items():
        value = getattr(task, name)
        if value is None:
            return False
        if isinstance(want, list):
            ok = value in want
        elif isinstance(want, dict):
            ok = want.get("min", value) <= value <= want.get("max", value)
        else:
            ok = value == want
        if not ok:
            return False
    return True


def _pins(raw: dict[str, Any], task: Task) -> list[int]:
    """Tier indexes of every frontier constraint the task meets (reference semantics)."""
    names = [t["name"] for t in raw["tiers"]]
    frontier = raw["frontier"]
    default_pin = names.index(frontier["tier"]) if frontier["tier"] else len(names) - 1
    pins = [default_pin for d in frontier["domains"] if task.domain == d]
    pins += [default_pin for k in frontier["kinds"] if task.kind == k]
    pins += [default_pin for a in frontier["ambiguity"] if task.ambiguity == a]
    for rule in frontier["rules"]:
        if _matches(rule["when"], task):
            pins.append(names.index(rule["tier"]) if rule["tier"] else default_pin)
    return pins


def _reference(
    raw: dict[str, Any], task: Task, floors: dict[str, str] | None = None
) -> tuple[int, int | None]:
    """(tier index, rule index) by the documented order, written as plainly as possible."""
    names = [t["name"] for t in raw["tiers"]]
    settings_ = raw["kinds"].get(task.kind, {})
    floor = (floors or {}).get(task.kind) or settings_.get("floor") or raw["defaults"]["floor"]
    doubt = settings_.get("doubt") or raw["defaults"]["doubt"]
    floor_index = names.index(floor) if floor else -1
    rule_index = next((i for i, r in enumerate(raw["rules"]) if _matches(r["when"], task)), None)
    if rule_index is not None:
        tier = names.index(raw["rules"][rule_index]["tier"])
    elif doubt == "cheap":
        tier = 0
    elif doubt == "up":
        tier = min(max(floor_index, 0) + 1, len(names) - 1)
    else:
        tier = names.index(doubt)
    return max([tier, floor_index, *_pins(raw, task)]), rule_index


_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(raw=_policies(), tasks=st.lists(_TASKS, min_size=1, max_size=8))
def test_router_agrees_with_the_reference_and_never_breaks_a_frontier_pin(
    raw: dict[str, Any], tasks: list[Task]
) -> None:
    router = Router(_build(raw))
    for task in tasks:
        d = router.route(task)
        tier, rule_index = _reference(raw, task)
        assert (d.tier_index, d.rule_index) == (tier, rule_index)
        assert d.tier == router.policy.ladder[d.tier_index]
        pins = _pins(raw, task)
        assert all(d.tier_index >= pin for pin in pins)  # frontier never violated
        if d.step == "frontier":
            assert d.tier_index == max(pins)
            assert d.constraint_index is not None
        else:
            assert d.step == ("rule" if rule_index is not None else "doubt")


@_SETTINGS
@given(raw=_policies(), task=_TASKS)
def test_routing_is_deterministic(raw: dict[str, Any], task: Task) -> None:
    policy = _build(raw)
    first = Router(policy).route(task)
    assert Router(policy).route(task) == first
    assert Router(_build(raw)).route(task.with_(id="another-id", prompt="other text")) == first


@_SETTINGS
@given(
    raw=_policies(with_floors=False),
    floors=st.dictionaries(st.sampled_from((*_KINDS, "z")), st.integers(0, 3), max_size=4),
    tasks=st.lists(_TASKS, min_size=1, max_size=8),
)
def test_floors_only_raise(raw: dict[str, Any], floors: dict[str, int], tasks: list[Task]) -> None:
    policy = _build(raw)
    ladder = policy.ladder
    learned = {k: ladder[min(i, len(ladder) - 1)] for k, i in floors.items()}
    plain, floored = Router(policy), Router(policy, floors=learned)
    for task in tasks:
        before, after = plain.route(task), floored.route(task)
        assert after.tier_index >= before.tier_index
        if task.kind in learned:
            assert after.tier_index >= ladder.index(learned[task.kind])
        assert (after.tier_index, after.rule_index) == _reference(raw, task, learned)


@_SETTINGS
@given(raw=_policies(), task=_TASKS, start=st.integers(0, 3))
def test_start_at_never_goes_below_a_frontier_pin(
    raw: dict[str, Any], task: Task, start: int
) -> None:
    router = Router(_build(raw))
    ladder = router.policy.ladder
    tier = ladder[min(start, len(ladder) - 1)]
    d = router.start_at(task, tier)
    pins = _pins(raw, task)
    assert d.tier_index == max([ladder.index(tier), *pins])
    assert d.step == ("frontier" if pins and max(pins) > ladder.index(tier) else "start")
