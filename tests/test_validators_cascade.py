"""Validators inside the real Cascade: real SDK providers, the fake upstream, a SQLite ledger.

The ``agreement`` validator's calls to other tiers go through the cascade's context, so they are
priced, budgeted and recorded in the ledger as ``validator`` attempts of the task.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tierwise.cascade import Cascade
from tierwise.errors import EscalationExhaustedError
from tierwise.ledger import Ledger, open_ledger
from tierwise.policy import Policy, loads_policy
from tierwise.task import Task
from tierwise.testing import FakeUpstream, ModelScript

CHEAP, MID, STRONG = "claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-6"
ENV = {"TW_TEST_KEY": "sk-test-secret-value-456"}


def make_policy(base_url: str, base_dir: Path, extra: str = "") -> Policy:
    tiers = "".join(
        f"""
[[tiers]]
name = "{name}"
provider = "anthropic"
model = "{model}"
base_url = "{base_url}"
api_key_env = "TW_TEST_KEY"
max_tokens = 64
"""
        for name, model in (("cheap", CHEAP), ("mid", MID), ("strong", STRONG))
    )
    return loads_policy(
        f"""
version = 1
{tiers}
[retry]
attempts = 1
backoff_s = 0.0
max_backoff_s = 0.0

[validators.second_opinion]
type = "agreement"
tiers = ["mid"]
normalise = "choice"

[validators.has_answer]
type = "command"
argv = [{sys.executable!r}, "-c", "import sys; sys.exit(0 if 'answer' in sys.stdin.read() else 3)"]
timeout_s = 20

[[rules]]
when = {{ kind = ["classify", "quiz"] }}
tier = "cheap"

[kinds.quiz]
validators = ["second_opinion"]
[kinds.classify]
validators = ["has_answer"]
{extra}
""",
        base_dir=base_dir,
    )


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(default=None) as up:
        yield up


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with open_ledger(tmp_path / "ledger.db") as book:
        yield book


def trail(attempts: Any) -> list[tuple[str, str, str]]:
    return [(a.tier, a.role, a.outcome) for a in attempts]


@pytest.mark.parametrize("use_async", [False, True])
async def test_agreement_accepts_when_the_other_tier_agrees_and_records_its_call(
    upstream: FakeUpstream, ledger: Ledger, tmp_path: Path, use_async: bool
) -> None:
    upstream.set_script(CHEAP, ModelScript(reply="Thinking it over, the answer is (B)."))
    upstream.set_script(MID, ModelScript(reply="**B**"))
    task = Task.create("quiz", "Which planet is largest? A) Mars B) Jupiter C) Venus")
    with Cascade(make_policy(upstream.base_url, tmp_path), ledger=ledger, env=ENV) as cascade:
        result = await cascade.arun(task) if use_async else cascade.run(task)

    assert result.tier == "cheap"
    assert trail(result.attempts) == [
        ("cheap", "live", "accepted"),
        ("mid", "validator", "accepted"),
    ]
    assert result.attempts[0].verdicts[0].validator == "second_opinion"
    assert result.attempts[0].verdicts[0].ok
    # The second opinion was asked the task itself, not the cheap answer.
    (asked,) = upstream.requests_for(MID)
    assert [m["role"] for m in asked.body["messages"]] == ["user"]
    assert "largest" in str(asked.body["messages"][0]["content"])
    # Its cost is part of the task's cost, and on disk.
    validator_cost = result.attempts[1].cost_usd
    assert validator_cost > 0
    assert result.cost_usd == result.attempts[0].cost_usd + validator_cost
    rows = ledger.attempts_of(result.task_id)
    assert len(rows) == 2
    assert sum(Decimal(r["cost_usd"]) for r in rows) == result.cost_usd


def test_disagreement_escalates_with_the_reason(
    upstream: FakeUpstream, ledger: Ledger, tmp_path: Path
) -> None:
    upstream.set_script(CHEAP, ModelScript(reply="The answer is (A)."))
    upstream.set_script(MID, ModelScript(reply="Answer: B"))
    task = Task.create("quiz", "Which planet is largest? A) Mars B) Jupiter")
    with Cascade(make_policy(upstream.base_url, tmp_path), ledger=ledger, env=ENV) as cascade:
        result = cascade.run(task)

    assert result.tier == "mid"
    assert trail(result.attempts) == [
        ("cheap", "live", "rejected"),
        ("mid", "validator", "accepted"),  # the second opinion that disagreed
        ("mid", "live", "accepted"),
        ("mid", "validator", "accepted"),  # mid's own answer, checked the same way
    ]
    failure = result.attempts[0].failure or ""
    assert failure == "second_opinion: tier mid answered 'B', this output 'A'"
    # The next tier saw the rejected answer and why.
    escalated = upstream.requests_for(MID)[1].body["messages"]
    assert [m["role"] for m in escalated] == ["user", "assistant", "user"]
    assert "tier mid answered 'B'" in str(escalated[2]["content"])
    assert len(ledger.attempts_of(result.task_id)) == 4
    assert result.cost_usd == sum(a.cost_usd for a in result.attempts)


def test_provider_error_in_the_second_opinion_fails_the_check(
    upstream: FakeUpstream, ledger: Ledger, tmp_path: Path
) -> None:
    upstream.set_script(CHEAP, ModelScript(reply="(C)"))
    upstream.set_script(MID, ModelScript(reply="(C)", faults=("500:always",)))
    upstream.set_script(STRONG, ModelScript(reply="(C)"))
    task = Task.create("quiz", "Pick one: A, B or C")
    with (
        Cascade(make_policy(upstream.base_url, tmp_path), ledger=ledger, env=ENV) as cascade,
        pytest.raises(EscalationExhaustedError) as caught,
    ):
        cascade.run(task)
    attempts = caught.value.attempts
    assert trail(attempts)[:2] == [("cheap", "live", "rejected"), ("mid", "validator", "error")]
    assert (attempts[0].failure or "").startswith(
        "second_opinion: could not ask tier mid: provider error: ServerError"
    )
    assert ENV["TW_TEST_KEY"] not in str(caught.value)
    assert len(ledger.attempts_of(task.id)) == len(attempts)


@pytest.mark.parametrize("use_async", [False, True])
async def test_command_validator_in_the_cascade(
    upstream: FakeUpstream, ledger: Ledger, tmp_path: Path, use_async: bool
) -> None:
    upstream.set_script(CHEAP, ModelScript(reply="no idea"))
    upstream.set_script(MID, ModelScript(reply="the answer is spam"))
    task = Task.create("classify", "Is this spam? WIN A PRIZE")
    with Cascade(make_policy(upstream.base_url, tmp_path), ledger=ledger, env=ENV) as cascade:
        result = await cascade.arun(task) if use_async else cascade.run(task)
    assert trail(result.attempts) == [("cheap", "live", "rejected"), ("mid", "live", "accepted")]
    assert (result.attempts[0].failure or "").startswith("has_answer: ")
    assert "exit 3" in (result.attempts[0].failure or "")


def test_second_opinion_is_held_to_the_task_budget(
    upstream: FakeUpstream, ledger: Ledger, tmp_path: Path
) -> None:
    from tierwise.errors import BudgetExceededError
    from tierwise.pricing import PriceCatalog, max_cost

    upstream.set_script(CHEAP, ModelScript(reply="(B)"))
    upstream.set_script(MID, ModelScript(reply="(B)"))
    # Enough for the cheap attempt's worst case, not for a mid-tier second opinion on top.
    budget = max_cost(PriceCatalog().prices_for(CHEAP), input_tokens=200, max_tokens=64)
    task = Task.create("quiz", "Pick one: A or B", max_tokens=64, budget_usd=budget)
    with (
        Cascade(make_policy(upstream.base_url, tmp_path), ledger=ledger, env=ENV) as cascade,
        pytest.raises(BudgetExceededError) as caught,
    ):
        cascade.run(task)
    assert upstream.requests_for(MID) == []  # no unbudgeted call was made
    (cheap,) = caught.value.attempts
    assert cheap.outcome == "rejected"
    assert cheap.failure == (
        f"second_opinion: could not ask tier mid: not allowed by budget task:{task.id}"
    )
