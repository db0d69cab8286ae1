"""Plans without a model: the published schema's checks, tier assignment, and planner
calibration counted against a hand-built ledger (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from tierwise.ledger import Ledger, open_ledger
from tierwise.ledger.fixtures import POLICY_REVISION, make_attempt, make_decision
from tierwise.ledger.plans import PlannedSubtask, SubtaskEnd
from tierwise.orchestration import PLAN_SCHEMA, PlanError, parse_plan, planner_calibration
from tierwise.orchestration.calibration import failure_rate_lines
from tierwise.policy import Policy, loads_policy
from tierwise.records import PlanRef
from tierwise.task import Task

POLICY = """
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

[frontier]
kinds = ["security_review"]

[kinds.extract]
[kinds.draft]
floor = "mid"
[kinds.security_review]

[plan]
max_subtasks = 4
"""


@pytest.fixture(scope="module")
def policy() -> Policy:
    return loads_policy(POLICY)


def item(sid: str, kind: str = "extract", deps: list[str] | None = None, tier: str = "cheap",
         **extra: Any) -> dict[str, Any]:  # fmt: skip
    return {"id": sid, "kind": kind, "prompt": f"do {sid}", "depends_on": deps or [],
            "tier": tier, "justification": "because", **extra}  # fmt: skip


def refused(policy: Policy, text: str) -> PlanError:
    with pytest.raises(PlanError) as info:
        parse_plan(text, policy)
    return info.value


def test_a_valid_plan_is_put_in_dependency_order_and_raised_never_lowered(policy: Policy) -> None:
    text = json.dumps(
        {
            "subtasks": [
                item("c", "draft", ["b"], "cheap"),  # floor mid
                item("b", "security_review", ["a"], "mid"),  # frontier: strong
                item("a", "extract", [], "strong"),  # above everything: kept
            ]
        }
    )
    plan = parse_plan(f"```json\n{text}\n```", policy)
    assert [s.id for s in plan] == ["a", "b", "c"]
    tiers = {s.id: (s.planned_tier, s.tier) for s in plan}
    assert tiers == {"a": ("strong", "strong"), "b": ("mid", "strong"), "c": ("cheap", "mid")}
    assert plan.get("a").raised is None
    assert "frontier" in (plan.get("b").raised or "") and "floor 'mid'" in (
        plan.get("c").raised or ""
    )
    assert [s.id for s in plan.sinks] == ["c"]
    assert plan.as_json()["subtasks"][1]["tier"] == "strong"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("not json", "the plan is not JSON"),
        ({"steps": []}, "plan: 'subtasks' is a required property"),
        ({"subtasks": [{**item("a"), "tier": 3}]}, "plan.subtasks[0].tier: 3 is not of type"),
        ({"subtasks": [item("a", colour="red")]}, "Additional properties are not allowed"),
        ({"subtasks": [item("a"), item("a")]}, "subtasks[1].id: 'a' is used by an earlier"),
        ({"subtasks": [item("a", deps=["a"])]}, "cannot depend on itself"),
        ({"subtasks": [item("a", deps=["x"])]}, "unknown subtask 'x'"),
        ({"subtasks": [item("a", "poetry")]}, "unknown kind 'poetry'; the policy lists draft"),
        ({"subtasks": [item("a", tier="huge")]}, "unknown tier 'huge'; the ladder is cheap"),
        ({"subtasks": [item(s) for s in "abcde"]}, "5 subtasks; at most 4 are allowed"),
        (
            {"subtasks": [item("a", deps=["c"]), item("b", deps=["a"]), item("c", deps=["b"])]},
            "dependency cycle: a → c → b → a",
        ),
    ],
    ids=[
        "not-json",
        "no-subtasks",
        "wrong-type",
        "extra-key",
        "duplicate-id",
        "self-dependency",
        "unknown-dependency",
        "unknown-kind",
        "unknown-tier",
        "too-long",
        "cycle",
    ],
)
def test_a_bad_plan_is_refused_saying_what_is_wrong(
    policy: Policy, data: Any, expected: str
) -> None:
    text = data if isinstance(data, str) else json.dumps(data)
    error = refused(policy, text)
    assert any(expected in p for p in error.problems), error.problems
    assert str(error).startswith("the plan was refused: ")


def test_every_problem_is_listed_not_just_the_first(policy: Policy) -> None:
    error = refused(policy, json.dumps({"subtasks": [item("a", "poetry", tier="huge")]}))
    assert len(error.problems) == 2


def test_the_published_schema_is_a_valid_json_schema() -> None:
    from jsonschema import Draft202012Validator

    Draft202012Validator.check_schema(PLAN_SCHEMA)


# -- calibration against a hand-built ledger ------------------------------------------------------


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    with open_ledger(ledger_url) as book:
        yield book


_TIERS = {"cheap": 0, "mid": 1, "strong": 2}

#: subtask id → (assigned tier, outcome, final tier, validator climbs, reviewer climbs, flagged)
HAND = {
    "a": ("cheap", "accepted", "cheap", 0, 0, False),  # accepted as assigned
    "b": ("cheap", "accepted", "mid", 1, 0, False),  # a validator sent it up
    "c": ("cheap", "accepted", "mid", 0, 1, False),  # the reviewer sent it up
    "d": ("cheap", "failed", None, 2, 0, False),  # nothing passed
    "e": ("mid", "accepted", "mid", 0, 0, True),  # flagged wrong downstream
    "f": ("mid", "accepted", "mid", 0, 0, False),  # and a cheap probe passed
    "g": ("mid", "skipped", None, 0, 0, False),  # not counted
    "h": ("strong", "accepted", "strong", 0, 0, False),  # a mid probe failed
    "i": ("mid", "accepted", "mid", 0, 0, False),  # accepted, in two plans (p1 and p2)
}


def _probe(ledger: Ledger, plan_id: str, subtask: str, tier: int, outcome: Any) -> None:
    task = Task.create("extract", "probe", plan=PlanRef(plan_id, "executor", subtask))
    ledger.begin_task(
        task, make_decision("extract", tier), policy_revision=POLICY_REVISION, role="probe",
        store_content=False,
    )  # fmt: skip
    attempt = make_attempt(
        task, 0, tier_index=tier, outcome=outcome, role="probe",
        plan_id=plan_id, subtask_id=subtask, plan_role="executor",
    )  # fmt: skip
    ledger.record_attempt(attempt, store_content=False)


def _hand_built(ledger: Ledger) -> None:
    ledger.record_policy_revision(POLICY_REVISION, "{}", None)
    for plan_id in ("p1", "p2"):
        ledger.record_plan(
            plan_id, "goal", prompt_version="plan-v1", policy_revision=None,
            planner_tier="strong", reviewer_tier="strong", store_content=False,
        )  # fmt: skip
    planned = [
        PlannedSubtask(sid, i, "extract", f"do {sid}", (), tier, tier, _TIERS[tier], "why")
        for i, (sid, (tier, *_)) in enumerate(HAND.items())
    ]
    ledger.record_subtasks(
        "p1", planned, planner_model="m", planner_provider="anthropic", store_content=False
    )
    ledger.record_subtasks(
        "p2", [PlannedSubtask("i", 0, "extract", "x", (), "mid", "mid", 1, "why")],
        planner_model="m", planner_provider="anthropic", store_content=False,
    )  # fmt: skip
    for sid, (_, outcome, final, by_validators, by_reviewer, flagged) in HAND.items():
        ledger.finish_subtask(
            "p1", sid,
            SubtaskEnd(outcome, final, None if final is None else _TIERS[final],
                       by_validators, by_reviewer, "accepted"),
        )  # fmt: skip
        if flagged:
            assert ledger.flag_subtask("p1", sid, "the totals were wrong")
    ledger.finish_subtask("p2", "i", SubtaskEnd("accepted", "mid", 1))
    _probe(ledger, "p1", "f", 0, "accepted")
    _probe(ledger, "p1", "h", 1, "rejected")
    _probe(ledger, "p2", "f", 0, "accepted")  # same subtask id, other plan: not p1's f


def test_calibration_counts_match_a_hand_built_ledger(ledger: Ledger) -> None:
    _hand_built(ledger)
    assert not ledger.flag_subtask("p1", "nope", "x")  # an unknown subtask is refused
    calibration = planner_calibration(ledger.calibration_rows(), ("cheap", "mid", "strong"))
    got = {t.tier: t for t in calibration.tiers}
    expected = {
        # tier: (subtasks, as assigned, by validators, by reviewer, not accepted, flagged,
        #        passed cheaper when probed, failed)
        "cheap": (4, 1, 2, 1, 1, 0, 0, 3),
        "mid": (4, 4, 0, 0, 0, 1, 1, 1),
        "strong": (1, 1, 0, 0, 0, 0, 0, 0),
    }
    for tier, counts in expected.items():
        t = got[tier]
        assert (
            t.subtasks,
            t.accepted_as_assigned,
            t.escalated_by_validators,
            t.escalated_by_reviewer,
            t.not_accepted,
            t.flagged_wrong,
            t.passed_cheaper_when_probed,
            t.failed,
        ) == counts, tier
    assert got["cheap"].failure_rate == 0.75
    assert calibration.findings == ()  # four subtasks prove nothing (min_sample 20)
    lines = failure_rate_lines(ledger.calibration_rows())
    assert lines == [
        "extract on cheap: 3 of 4 subtasks failed (75%)",
        "extract on mid: 1 of 4 subtasks failed (25%)",
        "extract on strong: 0 of 1 subtasks failed (0%)",
    ]


def _rows(tier: str, index: int, n: int, failed: int) -> list[dict[str, Any]]:
    return [
        {"kind": "extract", "assigned_tier": tier, "assigned_tier_index": index,
         "outcome": "accepted", "validator_climbs": int(i < failed), "reviewer_climbs": 0,
         "flagged_at": None, "probe_passed_below": False}
        for i in range(n)
    ]  # fmt: skip


def test_a_tier_failing_significantly_more_is_reported() -> None:
    rows = _rows("cheap", 0, 40, 16) + _rows("mid", 1, 40, 3)
    calibration = planner_calibration(rows)
    [finding] = calibration.findings
    assert (finding.worse, finding.better) == ("cheap", "mid")
    assert finding.p_value < 0.001
    assert "under-assigns cheap" in finding.text()
    data = calibration.as_dict()
    assert data["tiers"][0]["failure_rate"] == 0.4 and data["findings"][0]["worse"] == "cheap"


def test_no_finding_without_a_sample_or_a_difference() -> None:
    assert planner_calibration(_rows("cheap", 0, 10, 8) + _rows("mid", 1, 10, 0)).findings == ()
    same = _rows("cheap", 0, 50, 10) + _rows("mid", 1, 50, 10)
    assert planner_calibration(same).findings == ()
    assert planner_calibration([], ("cheap",)).tiers[0].failure_rate is None


def test_plan_costs_sum_in_sql_exactly(ledger: Ledger) -> None:
    _hand_built(ledger)
    assert ledger.plan_cost("p1") == Decimal("0.002")  # the two probes' fixture costs
    assert sorted(ledger.plan_ids("p")) == ["p1", "p2"] and ledger.plan_ids("p2") == ["p2"]
    assert ledger.plan_ids("p_") == []  # the prefix is matched literally
