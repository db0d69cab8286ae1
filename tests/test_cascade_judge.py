"""The layer-2 judge: asked only when no rule matched and the kind's doubt is ``judge``; bound by
floors and frontier pins; recorded with its cost; cached; falling back when it fails.

Every judge call goes through the real Anthropic SDK to the fake upstream, where the bottom
tier's model answers judge prompts with a scripted JSON verdict and other prompts plainly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tierwise.cascade import Cascade
from tierwise.cascade.judge import JUDGE_PROMPT_VERSION, JudgeCache, Judgement, parse_judgement
from tierwise.cli import build_app
from tierwise.ledger import open_ledger
from tierwise.policy import Policy
from tierwise.routing import Router
from tierwise.task import Task
from tierwise.testing import FakeClock, FakeUpstream, ModelScript, Reply, upstream_policy
from tierwise.testing.policies import TEST_KEY_ENV, upstream_policy_text

CHEAP, MID, STRONG = "claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-6"
ENV = {TEST_KEY_ENV: "test"}

KINDS = """
[judge]
timeout_s = 0.5

[[frontier.rules]]
name = "billing stays mid or higher"
when = { domain = "config" }
tier = "mid"

[frontier]
domains = ["security"]

[kinds.triage]
doubt = "judge"
judge_fallback = "strong"

[kinds.triage_floor]
doubt = "judge"
floor = "mid"

[kinds.ruled]
doubt = "judge"

[[rules]]
when = { kind = "ruled", input_chars = { max = 10 } }
tier = "cheap"
"""


def _is_judge(request: dict[str, Any]) -> bool:
    system = request.get("system") or ""
    text = system if isinstance(system, str) else " ".join(b["text"] for b in system)
    return JUDGE_PROMPT_VERSION in text


def _cheap_judging(verdict: str | Callable[[dict[str, Any]], str]) -> ModelScript:
    """The bottom model: answers judge prompts with *verdict*, anything else with 'cheap says'."""

    def reply(request: dict[str, Any]) -> Reply:
        if _is_judge(request):
            return Reply(verdict if isinstance(verdict, str) else verdict(request))
        return Reply("cheap says")

    return ModelScript(reply=reply)


def _says(tier: str, reason: str = "needs nuance") -> str:
    return json.dumps({"tier": tier, "reason": reason})


@pytest.fixture
def policy(fake_upstream: FakeUpstream) -> Policy:
    fake_upstream.set_script(MID, ModelScript(reply="mid says"))
    fake_upstream.set_script(STRONG, ModelScript(reply="strong says"))
    return upstream_policy(fake_upstream, extra=KINDS)


def _judge_requests(up: FakeUpstream) -> int:
    return sum(1 for r in up.requests_for(CHEAP) if _is_judge(r.body))


def test_the_judge_picks_the_tier_and_is_recorded_with_its_cost(
    fake_upstream: FakeUpstream, policy: Policy, tmp_path: Path
) -> None:
    fake_upstream.set_script(CHEAP, _cheap_judging(_says("mid")))
    with open_ledger(tmp_path / "l.db") as ledger, Cascade(policy, ledger=ledger, env=ENV) as c:
        result = c.run(Task.create("triage", "Is this refund request a dispute or a typo?"))
        rows = ledger.attempts_of(result.task_id)
        task_row = ledger.task(result.task_id)
        stats = ledger.stats(kind="triage")
    assert result.output == "mid says" and result.tier == "mid"
    assert result.decision.step == "judge" and result.decision.judge == "needs nuance"
    assert "the layer-2 judge picked it: needs nuance" in result.decision.explain()
    judge, live = result.attempts
    assert (judge.role, judge.tier, judge.model) == ("judge", "cheap", CHEAP)
    assert judge.outcome == "accepted"
    assert judge.cost_usd > 0 and live.role == "live" and live.escalated_from is None
    assert not result.escalated  # the judge's call is no rung of the climb
    assert [(r["role"], r["tier"]) for r in rows] == [("judge", "cheap"), ("live", "mid")]
    assert task_row is not None and task_row["decision_step"] == "judge"
    assert Decimal(task_row["cost_usd"]) == judge.cost_usd + live.cost_usd == result.cost_usd
    assert stats["escalation_rate"] == 0, stats  # nor an escalation in the stats


def test_the_judge_is_not_asked_when_a_rule_matched(
    fake_upstream: FakeUpstream, policy: Policy
) -> None:
    fake_upstream.set_script(CHEAP, _cheap_judging(_says("strong")))
    with Cascade(policy, env=ENV) as cascade:
        ruled = cascade.run(Task.create("ruled", "short"))
        judged = cascade.run(Task.create("ruled", "a longer text than ten characters"))
    assert ruled.decision.step == "rule" and [a.role for a in ruled.attempts] == ["live"]
    assert judged.decision.step == "judge" and judged.tier == "strong"
    assert _judge_requests(fake_upstream) == 1


def test_the_judge_never_undercuts_a_floor(fake_upstream: FakeUpstream, policy: Policy) -> None:
    fake_upstream.set_script(CHEAP, _cheap_judging(_says("cheap", "looks trivial")))
    with Cascade(policy, env=ENV) as cascade:
        result = cascade.run(Task.create("triage_floor", "classify this"))
    assert result.tier == "mid" and result.decision.floor == "mid"
    assert result.decision.step == "judge" and result.decision.judge == "looks trivial"


def test_the_judge_never_undercuts_a_frontier_pin(
    fake_upstream: FakeUpstream, policy: Policy
) -> None:
    fake_upstream.set_script(CHEAP, _cheap_judging(_says("cheap", "looks trivial")))
    with Cascade(policy, env=ENV) as cascade:
        pinned_mid = cascade.run(Task.create("triage", "x", domain="config"))
        pinned_top = cascade.run(Task.create("triage", "y", domain="security"))
    assert pinned_mid.tier == "mid" and pinned_mid.decision.step == "frontier"
    assert "the layer-2 judge: looks trivial" in pinned_mid.decision.explain()
    # pinned to the top tier: nothing left to pick, so the judge is not asked at all
    assert pinned_top.tier == "strong" and pinned_top.decision.judge is None
    assert _judge_requests(fake_upstream) == 1


def test_every_judge_pick_is_bound_by_floors_and_pins(policy: Policy) -> None:
    """The decision is the highest of the pick, the kind's floor (file or learned) and the pin."""
    router = Router(policy, floors={"triage": "mid"})
    floors = {"triage": 1, "triage_floor": 1, "undeclared_kind": 0}
    pins = {None: 0, "config": 1, "security": 2}
    for kind, floor in floors.items():
        for domain, pin in pins.items():
            task = Task.create(kind, "t", domain=domain)
            for pick, index in ((t, policy.tier_index(t)) for t in policy.ladder):
                decision = router.judged(task, pick, "why")
                assert decision.tier_index == max(index, floor, pin), (kind, domain, pick)
                assert decision.judge == "why"


@pytest.mark.parametrize(
    ("script", "why"),
    [
        (ModelScript(faults=("500:always",)), "the judge failed (ServerError)"),
        (ModelScript(latency_s=3.0), "the judge failed (ProviderTimeoutError)"),
        (_cheap_judging("the mid tier, I think"), "not JSON"),
        (_cheap_judging(_says("huge")), "'huge', which is not a tier"),
        (_cheap_judging('{"tier": "mid"}'), "'reason' is a required property"),
    ],
    ids=["error", "timeout", "prose", "unknown-tier", "schema"],
)
async def test_a_failing_judge_falls_back_to_the_kinds_direction(
    fake_upstream: FakeUpstream, policy: Policy, script: ModelScript, why: str, tmp_path: Path
) -> None:
    fake_upstream.set_script(CHEAP, script)
    async with Cascade(policy, env=ENV) as cascade:
        result = await cascade.arun(Task.create("triage", "hmm"))
    assert result.tier == "strong" and result.output == "strong says"  # judge_fallback
    assert result.decision.step == "doubt" and result.decision.doubt == "judge"
    assert result.decision.judge is not None and why in result.decision.judge
    assert result.decision.judge.startswith("fell back to 'strong': ")
    assert len(fake_upstream.requests_for(CHEAP)) == 1  # one try: no retries past the timeout
    judge = result.attempts[0]
    assert judge.role == "judge" and judge.outcome in ("error", "rejected")
    if judge.outcome == "rejected":  # a paid answer that was no judgement still costs
        assert judge.cost_usd > 0 and judge.failure is not None and why in judge.failure


def test_answers_are_cached_by_kind_and_prompt(fake_upstream: FakeUpstream, policy: Policy) -> None:
    fake_upstream.set_script(CHEAP, _cheap_judging(_says("mid")))
    with Cascade(policy, env=ENV) as cascade:
        first = cascade.run(Task.create("triage", "same text"))
        again = cascade.run(Task.create("triage", "same text"))
        other = cascade.run(Task.create("triage", "other text"))
    assert _judge_requests(fake_upstream) == 2
    assert again.decision.judge == "needs nuance (cached)" and again.tier == "mid"
    assert [a.role for a in again.attempts] == ["live"]  # no call, no cost
    assert first.attempts[0].role == other.attempts[0].role == "judge"


def test_the_cache_forgets_after_its_time() -> None:
    clock = FakeClock()
    cache = JudgeCache(10.0, clock=clock)
    cache.put(("k", "h"), Judgement("mid", "r"))
    clock.advance(9.9)
    assert cache.get(("k", "h")) == Judgement("mid", "r")
    clock.advance(0.2)
    assert cache.get(("k", "h")) is None
    JudgeCache(0).put(("k", "h"), Judgement("mid", "r"))  # cache_s = 0 keeps nothing


def test_the_judge_prompt_lists_the_ladder_and_the_taxonomy(
    fake_upstream: FakeUpstream, policy: Policy
) -> None:
    fake_upstream.set_script(CHEAP, _cheap_judging(_says("cheap")))
    with Cascade(policy, env=ENV) as cascade:
        cascade.run(Task.create("triage", "Route this ticket", files=2))
    body = fake_upstream.requests_for(CHEAP)[0].body
    prompt = body["messages"][0]["content"]
    for name, model in (("cheap", CHEAP), ("mid", MID), ("strong", STRONG)):
        assert f"- {name}" in prompt and model in prompt
    assert "Task kind: triage" in prompt and "files=2" in prompt and "Route this ticket" in prompt
    assert "Band A" in body["system"] and "Band C" in body["system"]
    assert body["max_tokens"] == 200


def test_parse_judgement_tolerates_a_code_fence_only() -> None:
    ladder = ("cheap", "mid")
    assert parse_judgement('```json\n{"tier": "mid", "reason": "x"}\n```', ladder).tier == "mid"
    with pytest.raises(ValueError, match="not JSON"):
        parse_judgement('Sure! {"tier": "mid", "reason": "x"}', ladder)
    with pytest.raises(ValueError, match="Additional properties"):
        parse_judgement('{"tier": "mid", "reason": "x", "extra": 1}', ladder)


def test_tierwise_run_asks_the_judge(
    fake_upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tierwise.toml"
    path.write_text(upstream_policy_text(fake_upstream, extra=KINDS))
    monkeypatch.setenv(TEST_KEY_ENV, "test")
    monkeypatch.setenv("TIERWISE_LEDGER", str(tmp_path / "ledger.db"))
    fake_upstream.set_script(CHEAP, _cheap_judging(_says("mid")))
    fake_upstream.set_script(MID, ModelScript(reply="mid says"))
    args = ["run", "--kind", "triage", "--prompt", "which team?", "--policy", str(path), "--json"]
    result = CliRunner().invoke(build_app(), args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["tier"] == "mid" and data["decision"]["step"] == "judge"
    assert data["decision"]["judge"] == "needs nuance"
    assert [a["role"] for a in data["attempts"]] == ["judge", "live"]
