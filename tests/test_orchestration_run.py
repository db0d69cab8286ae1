"""Plan-execute-review in the library: a scripted planner, executors and reviewer on the fake
upstream, through the real Anthropic SDK, the cascade and a SQLite ledger."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tierwise.cascade import Cascade
from tierwise.ledger import Ledger, open_ledger
from tierwise.orchestration import PlanRunner, plan_tree
from tierwise.policy import Policy
from tierwise.testing import FakeUpstream, ModelScript, Reply, upstream_policy
from tierwise.testing.policies import TEST_KEY_ENV

CHEAP, MID, STRONG, ALT = (
    "claude-haiku-4-5",
    "claude-sonnet-4-6",
    "claude-opus-4-6",
    "claude-opus-alt",
)
ENV = {TEST_KEY_ENV: "test"}

KINDS = f"""
[prices."{ALT}"]
input = 5
output = 25

[kinds.extract]
description = "pull fields or names out of text"
[kinds.classify]
description = "put items in categories"
[kinds.summarize]
[kinds.draft]
floor = "mid"
[kinds.check]
"""

SIX = [
    ("s1", "extract", "Extract the company names from the list", [], "cheap"),
    ("s2", "extract", "Extract each company's product features", ["s1"], "cheap"),
    ("s3", "classify", "Classify each company by market segment", ["s1"], "cheap"),
    ("s4", "summarize", "Identify themes across segments", ["s2", "s3"], "mid"),
    ("s5", "draft", "Draft the executive summary", ["s4"], "cheap"),
    ("s6", "check", "Check the summary against the sources", ["s5"], "strong"),
]


def plan_json(rows: list[tuple[str, str, str, list[str], str]] = SIX) -> str:
    return json.dumps(
        {
            "subtasks": [
                {
                    "id": sid,
                    "kind": kind,
                    "prompt": prompt,
                    "depends_on": deps,
                    "tier": tier,
                    "justification": f"{kind} work",
                }
                for sid, kind, prompt, deps, tier in rows
            ]
        }
    )


def _system(request: dict[str, Any]) -> str:
    system = request.get("system") or ""
    return system if isinstance(system, str) else " ".join(b["text"] for b in system)


def _step(request: dict[str, Any]) -> str:
    found = re.search(r"Your step \((\w+)\)", request["messages"][0]["content"])
    return found.group(1) if found else "?"


def fleet(
    up: FakeUpstream,
    plan: str | list[str],
    *,
    reject: str = "classified by guesswork",
    latency_s: float = 0.0,
) -> None:
    """Script the fleet: the strong models plan and review; every tier executes.

    The planner answers *plan* (or each of a list in turn). The reviewer rejects any output
    containing *reject*; the cheap model writes it for step s3.
    """
    plans = [plan] if isinstance(plan, str) else list(plan)

    def executor(name: str) -> Any:
        def reply(request: dict[str, Any]) -> Reply:
            system = _system(request)
            if "planner of tierwise" in system:
                return Reply(plans.pop(0) if len(plans) > 1 else plans[0])
            if "reviewer of tierwise" in system:
                text = request["messages"][0]["content"]
                bad = reject in text
                verdict = {
                    "verdict": "reject" if bad else "accept",
                    "reason": "segments are wrong" if bad else "fine",
                }
                return Reply(json.dumps(verdict))
            step = _step(request)
            if name == "cheap" and step == "s3":
                return Reply(f"{step}: {reject}")
            return Reply(f"{step} done by {name}")

        return reply

    up.set_script(CHEAP, ModelScript(reply=executor("cheap"), latency_s=latency_s))
    up.set_script(MID, ModelScript(reply=executor("mid")))
    up.set_script(STRONG, ModelScript(reply=executor("strong")))
    up.set_script(ALT, ModelScript(reply=executor("strong-alt")))


def policy_for(up: FakeUpstream, extra: str = "", *, alternate: bool = True) -> Policy:
    policy = upstream_policy(up, extra=KINDS + extra)
    if not alternate:
        return policy
    tiers = [
        t.model_copy(update={"alternates": [ALT]}) if t.name == "strong" else t
        for t in policy.model.tiers
    ]
    return Policy(policy.model.model_copy(update={"tiers": tiers}), base_dir=policy.base_dir)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with open_ledger(tmp_path / "ledger.db") as book:
        yield book


async def test_six_subtasks_run_in_order_and_the_reviewer_sends_one_up(
    fake_upstream: FakeUpstream, ledger: Ledger
) -> None:
    fleet(fake_upstream, plan_json(), latency_s=0.4)
    async with Cascade(policy_for(fake_upstream), ledger=ledger, env=ENV) as cascade:
        result = await PlanRunner(cascade).arun("Research the competitive landscape for X")
    assert result.status == "accepted", result.failure
    by_id = {r.subtask.id: r for r in result.subtasks}
    assert [r.subtask.id for r in result.subtasks] == ["s1", "s2", "s3", "s4", "s5", "s6"]
    assert result.output == "s6 done by strong"  # the one subtask nothing depends on

    # s3: cheap's answer rejected by the reviewer, executed again one tier up, accepted
    s3 = by_id["s3"]
    assert (s3.tier, s3.reviewer_climbs, s3.review) == ("mid", 1, "accepted")
    retry = [r for r in fake_upstream.requests_for(MID) if _step(r.body) == "s3"]
    assert len(retry) == 1
    messages = retry[0].body["messages"]
    assert messages[1] == {"role": "assistant", "content": "s3: classified by guesswork"}
    note = messages[2]["content"]
    assert "rejected by a reviewer" in note and f'("cheap", model {CHEAP})' in note
    assert "Rejected because: reviewer: segments are wrong" in note

    # s5: the planner said cheap, the kind's floor raised it
    s5 = by_id["s5"]
    assert (s5.subtask.planned_tier, s5.tier) == ("cheap", "mid")
    assert s5.subtask.raised is not None and "floor 'mid'" in s5.subtask.raised

    # dependencies' outputs reach their dependents
    s4_prompt = next(r for r in fake_upstream.requests_for(MID) if _step(r.body) == "s4")
    text = s4_prompt.body["messages"][0]["content"]
    assert "[s2]\ns2 done by cheap" in text and "[s3]\ns3 done by mid" in text

    # s2 and s3 depend only on s1: they ran at the same time
    cheap = {_step(r.body): r.at for r in fake_upstream.requests_for(CHEAP) if _step(r.body) != "?"}
    assert abs(cheap["s2"] - cheap["s3"]) < 0.4  # each answer takes 0.4 s: they overlapped

    # every call is in the ledger with its place in the tree, and the costs agree
    rows = ledger.plan_attempts(result.plan_id)
    assert len(rows) == len(result.attempts)
    assert {r["plan_role"] for r in rows} == {"planner", "executor", "reviewer"}
    assert all(r["plan_id"] == result.plan_id for r in rows)
    assert (
        ledger.plan_cost(result.plan_id)
        == result.cost_usd
        == sum((a.cost_usd for a in result.attempts), Decimal(0))
    )
    tree = plan_tree(ledger, result.plan_id)
    assert tree.root.cost_usd == tree.ledger_total_usd == result.cost_usd
    assert ledger.plan(result.plan_id)["status"] == "accepted"  # type: ignore[index]
    stored = {s["subtask_id"]: s for s in ledger.plan_subtasks(result.plan_id)}
    assert stored["s3"]["reviewer_climbs"] == 1 and stored["s3"]["final_tier"] == "mid"
    assert stored["s5"]["planned_tier"] == "cheap" and stored["s5"]["assigned_tier"] == "mid"


async def test_the_reviewer_is_never_the_executors_model(
    fake_upstream: FakeUpstream, ledger: Ledger
) -> None:
    fleet(fake_upstream, plan_json())
    async with Cascade(policy_for(fake_upstream), ledger=ledger, env=ENV) as cascade:
        result = await PlanRunner(cascade).arun("goal")
    rows = ledger.plan_attempts(result.plan_id)
    executed = {
        r["task_id"]: r["model"]
        for r in rows
        if r["plan_role"] == "executor" and r["outcome"] == "accepted"
    }
    reviews = [r for r in rows if r["plan_role"] == "reviewer"]
    assert len(reviews) == 7  # six subtasks, one reviewed twice
    for review in reviews:
        assert review["model"] != executed[review["parent_id"]]
    # s6 ran on the top tier's primary: the top tier's alternate reviewed it
    s6 = [r for r in reviews if r["subtask_id"] == "s6"]
    assert [r["model"] for r in s6] == [ALT]


async def test_with_no_other_model_the_review_is_skipped_and_says_why(
    fake_upstream: FakeUpstream, ledger: Ledger
) -> None:
    fleet(fake_upstream, plan_json())
    policy = policy_for(fake_upstream, alternate=False)
    async with Cascade(policy, ledger=ledger, env=ENV) as cascade:
        result = await PlanRunner(cascade).arun("goal")
    s6 = next(r for r in result.subtasks if r.subtask.id == "s6")
    assert s6.outcome == "accepted" and s6.review == "skipped"
    assert s6.review_note is not None and "has no model but claude-opus-4-6" in s6.review_note
    stored = next(s for s in ledger.plan_subtasks(result.plan_id) if s["subtask_id"] == "s6")
    assert stored["review"] == "skipped" and "favour their own answers" in stored["review_note"]
    assert not [
        r
        for r in ledger.plan_attempts(result.plan_id)
        if r["subtask_id"] == "s6" and r["plan_role"] == "reviewer"
    ]


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        (
            [("a", "extract", "x", ["b"], "cheap"), ("b", "extract", "y", ["a"], "cheap")],
            "the plan has a dependency cycle: a → b → a",
        ),
        ([("a", "poetry", "x", [], "cheap")], "unknown kind 'poetry'"),
        ([("a", "extract", "x", [], "huge")], "unknown tier 'huge'"),
        ([("a", "extract", "x", ["zz"], "cheap")], "unknown subtask 'zz'"),
    ],
    ids=["cycle", "unknown-kind", "unknown-tier", "unknown-dependency"],
)
async def test_a_plan_no_tier_gets_right_is_refused_with_a_clear_error(
    fake_upstream: FakeUpstream,
    ledger: Ledger,
    rows: list[tuple[str, str, str, list[str], str]],
    expected: str,
) -> None:
    fleet(fake_upstream, plan_json(rows))
    async with Cascade(policy_for(fake_upstream), ledger=ledger, env=ENV) as cascade:
        result = await PlanRunner(cascade).arun("goal")
    assert result.status == "refused" and result.subtasks == ()
    assert result.failure is not None and "the plan was refused" in result.failure
    assert expected in result.failure
    # nothing but the planner ran, and what it cost is recorded
    assert {r["plan_role"] for r in ledger.plan_attempts(result.plan_id)} == {"planner"}
    stored = ledger.plan(result.plan_id)
    assert stored is not None and stored["status"] == "refused" and expected in stored["failure"]
    assert stored["cost_usd"] == ledger.plan_cost(result.plan_id) == result.cost_usd > 0


async def test_a_refused_plan_climbs_with_its_problems_in_the_handoff(
    fake_upstream: FakeUpstream, ledger: Ledger
) -> None:
    cyclic = plan_json([("a", "extract", "x", ["a"], "cheap")])
    fleet(fake_upstream, plan_json())
    fake_upstream.set_script(MID, ModelScript(reply=cyclic))  # a mid planner gets it wrong
    async with Cascade(policy_for(fake_upstream), ledger=ledger, env=ENV) as cascade:
        runner = PlanRunner(cascade, planner_tier="mid", review=False)
        result = await runner.arun("goal")
    assert result.status == "accepted"
    planners = [a for a in result.planner_attempts]
    assert [(a.tier, a.outcome) for a in planners] == [("mid", "rejected"), ("strong", "accepted")]
    note = fake_upstream.requests_for(STRONG)[0].body["messages"][-1]["content"]
    assert "a subtask cannot depend on itself" in note


async def test_budgets_hold_for_the_plan_and_for_each_subtask(
    fake_upstream: FakeUpstream, ledger: Ledger
) -> None:
    fleet(fake_upstream, plan_json())
    policy = policy_for(fake_upstream)
    async with Cascade(policy, ledger=ledger, env=ENV) as cascade:
        broke = await PlanRunner(cascade, budget_usd=Decimal("0.000001")).arun("goal")
        # $0.008 covers a cheap call's worst case (1,024 tokens out at $5/M), not a mid one's
        runner = PlanRunner(cascade, subtask_budget_usd=Decimal("0.008"), review=False)
        tight = await runner.arun("goal")
    assert broke.status == "budget" and broke.subtasks == () and broke.cost_usd == 0
    assert broke.failure is not None and f"plan:{broke.plan_id}" in broke.failure
    by_id = {r.subtask.id: r for r in tight.subtasks}
    assert [by_id[s].outcome for s in ("s1", "s2", "s3")] == ["accepted"] * 3
    assert by_id["s4"].outcome == "budget" and by_id["s4"].attempts == ()
    assert f"plan-subtask:{tight.plan_id}:s4" in (by_id["s4"].review_note or "")
    assert by_id["s5"].outcome == by_id["s6"].outcome == "skipped"
    assert tight.status == "failed" and tight.failure is not None and "s4: budget" in tight.failure


async def test_a_reviewer_refusing_the_top_tier_fails_the_subtask_and_skips_its_dependents(
    fake_upstream: FakeUpstream, ledger: Ledger
) -> None:
    fleet(fake_upstream, plan_json(), reject="done by")  # every output is rejected
    async with Cascade(policy_for(fake_upstream), ledger=ledger, env=ENV) as cascade:
        result = await PlanRunner(cascade).arun("goal")
    by_id = {r.subtask.id: r for r in result.subtasks}
    assert by_id["s1"].outcome == "rejected" and by_id["s1"].tier == "strong"
    assert by_id["s1"].reviewer_climbs == 2  # cheap → mid → strong, then refused at the top
    assert {by_id[s].outcome for s in ("s2", "s3", "s4", "s5", "s6")} == {"skipped"}
    assert result.status == "failed" and result.output is None
    assert ledger.plan_cost(result.plan_id) == result.cost_usd


def test_the_blocking_twin_runs_the_same_plan(fake_upstream: FakeUpstream, ledger: Ledger) -> None:
    fleet(fake_upstream, plan_json(SIX[:2]))
    with Cascade(policy_for(fake_upstream), ledger=ledger, env=ENV) as cascade:
        result = PlanRunner(cascade, review=False).run("goal")
    assert result.status == "accepted" and result.output == "s2 done by cheap"


async def test_the_planner_hears_the_observed_failure_rates_when_the_policy_says_so(
    fake_upstream: FakeUpstream, ledger: Ledger
) -> None:
    fleet(fake_upstream, plan_json())
    extra = "\n[plan]\nprompt_failure_rates = true\n"
    async with Cascade(policy_for(fake_upstream, extra), ledger=ledger, env=ENV) as cascade:
        await PlanRunner(cascade).arun("first")
        first = _system(fake_upstream.requests_for(STRONG)[0].body)
        await PlanRunner(cascade).arun("second")
    planners = [r for r in fake_upstream.requests_for(STRONG) if "planner of" in _system(r.body)]
    second = _system(planners[-1].body)
    assert "Observed in past plans" not in first  # nothing observed yet
    assert "Observed in past plans" in second
    assert "classify on cheap: 1 of 1 subtasks failed (100%)" in second
    assert "extract on cheap: 0 of 2 subtasks failed (0%)" in second
