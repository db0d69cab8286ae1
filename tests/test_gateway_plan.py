"""Through the gateway: the handoff note on a climb, the layer-2 judge, and the reserved model
``tierwise/plan-execute`` — official SDK clients → a real uvicorn server → the fake upstream.

The ladder mixes dialects (cheap and strong Anthropic, mid OpenAI-compatible), so the handoff
note is checked where it is appended to the caller's own body and where it is translated.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest

from tierwise.cascade.judge import JUDGE_PROMPT_VERSION
from tierwise.gateway import GatewayConfig
from tierwise.gateway.server import GatewayServer
from tierwise.ledger import Ledger, open_ledger
from tierwise.policy import loads_policy
from tierwise.testing import FakeUpstream, ModelScript, Reply

CHEAP, MID, STRONG = "claude-haiku-4-5", "gpt-4o-mini", "claude-opus-4-6"

POLICY = """
version = 1

[[tiers]]
name = "cheap"
provider = "anthropic"
model = "{cheap}"
base_url = "{anthropic_url}"
api_key_env = "TW_TEST_KEY"

[[tiers]]
name = "mid"
provider = "openai"
model = "{mid}"
base_url = "{openai_url}"
api_key_env = "TW_TEST_KEY"

[[tiers]]
name = "strong"
provider = "anthropic"
model = "{strong}"
base_url = "{anthropic_url}"
api_key_env = "TW_TEST_KEY"

[retry]
attempts = 2
backoff_s = 0.0
max_backoff_s = 0.0

[validators.json]
type = "json"

[defaults]
doubt = "cheap"
validators = []

[kinds.extract]
validators = ["json"]

[kinds.summarize]

[kinds.triage]
doubt = "judge"
"""

PLAN = {
    "subtasks": [
        {"id": "a", "kind": "extract", "prompt": "list the vendors as JSON", "depends_on": [],
         "tier": "cheap", "justification": "extraction"},
        {"id": "b", "kind": "summarize", "prompt": "summarise the vendors", "depends_on": ["a"],
         "tier": "cheap", "justification": "short summary"},
    ]
}  # fmt: skip


@pytest.fixture(scope="module")
def gateway(
    fake_upstream_server: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayServer]:
    up = fake_upstream_server
    policy = loads_policy(
        POLICY.format(
            cheap=CHEAP,
            mid=MID,
            strong=STRONG,
            anthropic_url=up.base_url,
            openai_url=up.openai_base_url,
        )
    )
    config = GatewayConfig(
        policy=policy,
        ledger_url=str(tmp_path_factory.mktemp("gw-plan") / "ledger.db"),
        env={"TW_TEST_KEY": "sk-upstream-secret-1234567890"},
    )
    with GatewayServer(config) as server:
        yield server


@pytest.fixture
def up(fake_upstream: FakeUpstream, gateway: GatewayServer) -> FakeUpstream:
    return fake_upstream


@pytest.fixture
def claude(gateway: GatewayServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gateway.base_url, api_key="unused", max_retries=0) as c:
        yield c


@pytest.fixture
def gpt(gateway: GatewayServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.openai_base_url, api_key="unused", max_retries=0) as c:
        yield c


@pytest.fixture
def ledger(gateway: GatewayServer) -> Iterator[Ledger]:
    url = gateway.config.ledger_url
    assert url is not None
    with open_ledger(url, create=False) as book:
        yield book


def _text(content: Any) -> str:
    return content if isinstance(content, str) else " ".join(b["text"] for b in content)


# -- the handoff note ----------------------------------------------------------------------------


def test_a_climb_through_the_gateway_hands_the_note_up_in_the_tiers_dialect(
    up: FakeUpstream, claude: anthropic.Anthropic
) -> None:
    up.set_script(CHEAP, ModelScript(reply="Vendors: Acme and Globex"))
    up.set_script(MID, ModelScript(reply='{"vendors": ["Acme", "Globex"]}'))
    message = claude.messages.create(
        model="tierwise/extract",
        max_tokens=200,
        messages=[{"role": "user", "content": "Which vendors are on the page?"}],
    )
    assert json.loads(message.content[0].text) == {"vendors": ["Acme", "Globex"]}  # type: ignore[union-attr]
    sent = up.requests_for(MID)[-1].body["messages"]  # translated to the OpenAI dialect
    assert sent[-2] == {"role": "assistant", "content": "Vendors: Acme and Globex"}
    note = _text(sent[-1]["content"]).splitlines()
    assert note[0] == "tierwise handoff note v1"
    assert f'("cheap", model {CHEAP})' in note[1] and "rejected by an automatic check" in note[1]
    assert note[2] == "Asked: Which vendors are on the page?"
    assert note[3] == "Answered: Vendors: Acme and Globex (24 characters in all)"
    assert note[4].startswith("Rejected because: json: ")
    assert note[5].startswith("Avoid: reusing or patching the rejected answer")


def test_an_openai_caller_climbing_to_an_anthropic_tier_gets_the_same_note(
    up: FakeUpstream, gpt: openai.OpenAI
) -> None:
    up.set_script(CHEAP, ModelScript(reply="not json"))
    up.set_script(MID, ModelScript(reply="still not json"))
    up.set_script(STRONG, ModelScript(reply='{"ok": true}'))
    reply = gpt.chat.completions.create(
        model="tierwise/extract", messages=[{"role": "user", "content": "Give me JSON"}]
    )
    assert reply.choices[0].message.content == '{"ok": true}'
    sent = up.requests_for(STRONG)[-1].body["messages"]
    lines = _text(sent[-1]["content"]).splitlines()
    assert lines[0] == "tierwise handoff note v1" and f'("mid", model {MID})' in lines[1]
    assert lines[3].startswith("Answered: still not json")
    assert lines[5].startswith("Rejected before: cheap: json: ")


# -- the layer-2 judge ---------------------------------------------------------------------------


def test_the_judge_routes_a_gateway_request(
    up: FakeUpstream, claude: anthropic.Anthropic, ledger: Ledger
) -> None:
    def cheap(request: dict[str, Any]) -> Reply:
        if JUDGE_PROMPT_VERSION in _text(request.get("system") or ""):
            return Reply('{"tier": "strong", "reason": "a risky refund dispute"}')
        return Reply("cheap answer")

    up.set_script(CHEAP, ModelScript(reply=cheap))
    up.set_script(STRONG, ModelScript(reply="strong answer"))
    raw = claude.messages.with_raw_response.create(
        model="tierwise/triage",
        max_tokens=100,
        messages=[{"role": "user", "content": "Customer threatens a chargeback"}],
    )
    assert raw.parse().content[0].text == "strong answer"  # type: ignore[union-attr]
    assert raw.headers["x-tierwise-tier"] == "strong"
    assert raw.headers["x-tierwise-attempts"] == "2"
    task_id = raw.headers["x-tierwise-task-id"]
    rows = ledger.attempts_of(task_id)
    assert [(r["role"], r["tier"]) for r in rows] == [("judge", "cheap"), ("live", "strong")]
    assert Decimal(raw.headers["x-tierwise-cost-usd"]) == sum(r["cost_usd"] for r in rows)
    task = ledger.task(task_id)
    assert task is not None and task["decision"]["step"] == "judge"
    assert task["decision"]["judge"] == "a risky refund dispute"


# -- tierwise/plan-execute -----------------------------------------------------------------------


def _fleet(up: FakeUpstream, plan: dict[str, Any]) -> None:
    """Strong plans; mid and strong review; cheap's first summary is rejected."""

    def reply(name: str) -> Any:
        def answer(request: dict[str, Any]) -> Reply:
            system = _text(request.get("system") or "")
            messages = request.get("messages") or []
            system += " ".join(_text(m["content"]) for m in messages if m["role"] == "system")
            user = _text(messages[-1]["content"]) if messages else ""
            if "planner of tierwise" in system:
                return Reply(json.dumps(plan))
            if "reviewer of tierwise" in system:
                bad = "vague summary" in user
                verdict = {"verdict": "reject" if bad else "accept", "reason": "too vague"}
                return Reply(json.dumps(verdict))
            step = re.search(r"Your step \((\w+)\)", _text(messages[0]["content"]))
            if step and step.group(1) == "a":
                return Reply('{"vendors": ["Acme", "Globex"]}')
            return Reply("vague summary" if name == "cheap" else f"Acme and Globex ({name})")

        return answer

    up.set_script(CHEAP, ModelScript(reply=reply("cheap")))
    up.set_script(MID, ModelScript(reply=reply("mid")))
    up.set_script(STRONG, ModelScript(reply=reply("strong")))


def test_plan_execute_answers_the_reviewed_result_with_the_plan_id(
    up: FakeUpstream, claude: anthropic.Anthropic, ledger: Ledger
) -> None:
    _fleet(up, PLAN)
    raw = claude.messages.with_raw_response.create(
        model="tierwise/plan-execute",
        max_tokens=500,
        messages=[{"role": "user", "content": "Summarise the vendors on acme.example"}],
    )
    message = raw.parse()
    assert message.content[0].text == "Acme and Globex (mid)"  # type: ignore[union-attr]
    assert message.model == "tierwise/plan-execute" and message.stop_reason == "end_turn"
    plan_id = raw.headers["x-tierwise-plan-id"]
    rows = ledger.plan_attempts(plan_id)  # committed before the answer left
    assert {r["plan_role"] for r in rows} == {"planner", "executor", "reviewer"}
    assert Decimal(raw.headers["x-tierwise-cost-usd"]) == ledger.plan_cost(plan_id)
    assert raw.headers["x-tierwise-attempts"] == str(len(rows))
    stored = {s["subtask_id"]: s for s in ledger.plan_subtasks(plan_id)}
    assert stored["b"]["reviewer_climbs"] == 1 and stored["b"]["final_tier"] == "mid"
    assert ledger.plan(plan_id)["status"] == "accepted"  # type: ignore[index]
    usage = message.usage
    assert usage.output_tokens == sum(r["usage"]["output_tokens"] for r in rows)


def test_plan_execute_streams_to_an_openai_caller(up: FakeUpstream, gpt: openai.OpenAI) -> None:
    _fleet(up, PLAN)
    with gpt.chat.completions.with_streaming_response.create(
        model="tierwise/plan-execute",
        messages=[{"role": "user", "content": "Summarise the vendors"}],
        stream=True,
    ) as response:
        assert response.headers["x-tierwise-plan-id"]
        text = "".join(
            chunk.choices[0].delta.content or "" for chunk in response.parse() if chunk.choices
        )
    assert text == "Acme and Globex (mid)"


def test_a_refused_plan_is_a_502_naming_the_problem_and_the_plan(
    up: FakeUpstream, claude: anthropic.Anthropic, ledger: Ledger
) -> None:
    cyclic = {"subtasks": [{**PLAN["subtasks"][0], "depends_on": ["a"]}]}
    _fleet(up, cyclic)
    with pytest.raises(anthropic.APIStatusError) as info:
        claude.messages.create(
            model="tierwise/plan-execute",
            max_tokens=100,
            messages=[{"role": "user", "content": "anything"}],
        )
    error = info.value
    assert error.status_code == 502
    assert "the plan was refused" in error.message and "cannot depend on itself" in error.message
    plan_id = error.response.headers["x-tierwise-plan-id"]
    assert ledger.plan(plan_id)["status"] == "refused"  # type: ignore[index]
    assert Decimal(error.response.headers["x-tierwise-cost-usd"]) == ledger.plan_cost(plan_id)
