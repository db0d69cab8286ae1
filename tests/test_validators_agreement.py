"""The ``agreement`` validator against a scripted validation context.

The context is the cascade's internal interface (not the HTTP client), so a plain class stands
in for it here; the end-to-end test through the real Cascade and fake upstream lives in
``test_validators_cascade.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest

from tierwise.cascade.validators import Validator, Verdict, build_validator
from tierwise.errors import BudgetExceededError, RateLimitedError
from tierwise.pricing.usage import Usage
from tierwise.providers.base import Completion
from tierwise.task import Task


@dataclass
class ScriptedContext:
    """Answers ``call_tier`` from a table of tier → text (or exception); records the calls."""

    answers: dict[str, str | Exception]
    task: Task = field(default_factory=lambda: Task.create("classify", "Which is it? A, B or C"))
    completion: Completion | None = None
    tier: str = "cheap"
    calls: list[tuple[str, str]] = field(default_factory=list)

    def call_tier(self, tier: str, task: Task) -> Completion:
        self.calls.append((tier, task.id))
        answer = self.answers[tier]
        if isinstance(answer, Exception):
            raise answer
        return Completion(answer, f"{tier}-model", "anthropic", Usage(10, 0, 0, 0, 5), "end")

    async def acall_tier(self, tier: str, task: Task) -> Completion:
        return self.call_tier(tier, task)


def agreement(*tiers: str, normalise: str = "lower") -> Validator:
    return build_validator(
        {"type": "agreement", "tiers": list(tiers), "normalise": normalise},
        base_dir=Path("."),
        name="second_opinion",
    )


@pytest.mark.parametrize(
    ("mode", "output", "other"),
    [
        ("exact", "Paris", "Paris\n"),
        ("lower", "The answer:  PARIS", "the answer: paris"),
        ("choice", "The answer is (C).", "**C**"),
        ("choice", "C) because of the rate", "Answer: C"),
        ("number", "So the total is 1,250.", "#### 1250.00"),
        ("json", '{"label": "spam", "p": 1}', '```json\n{"p": 1.0, "label": "spam"}\n```'),
    ],
)
async def test_agreement_passes_when_normalised_answers_agree(
    mode: str, output: str, other: str
) -> None:
    ctx = ScriptedContext({"mid": other})
    validator = agreement("mid", normalise=mode)
    assert validator.check(output, ctx) == Verdict("second_opinion", True, "", 1.0)
    assert (await validator.acheck(output, ctx)).ok
    assert ctx.calls == [("mid", ctx.task.id)] * 2  # asked the same task, once per check


@pytest.mark.parametrize(
    ("mode", "output", "other", "reason"),
    [
        ("exact", "Paris", "paris", "tier mid answered 'paris', this output 'Paris'"),
        ("lower", "Paris", "Lyon", "tier mid answered 'lyon', this output 'paris'"),
        ("choice", "The answer is (C).", "answer: B", "tier mid answered 'B', this output 'C'"),
        ("number", "total 12", "total 12.5", "tier mid answered '12.5', this output '12'"),
        ("json", '{"a": 1}', '{"a": true}', "tier mid answered '{\"a\":true}', this output"),
    ],
)
async def test_agreement_fails_on_disagreement_naming_both_answers(
    mode: str, output: str, other: str, reason: str
) -> None:
    ctx = ScriptedContext({"mid": other})
    validator = agreement("mid", normalise=mode)
    for verdict in (validator.check(output, ctx), await validator.acheck(output, ctx)):
        assert not verdict.ok
        assert verdict.reason.startswith(reason)
        assert verdict.score == 0.0


def test_agreement_asks_every_tier_and_stops_at_the_first_disagreement() -> None:
    ctx = ScriptedContext({"cheap": "B", "mid": "C", "strong": "B"})
    verdict = agreement("cheap", "mid", "strong", normalise="choice").check("B", ctx)
    assert not verdict.ok
    assert verdict.score == pytest.approx(1 / 3)
    assert [tier for tier, _ in ctx.calls] == ["cheap", "mid"]  # strong never asked
    ctx = ScriptedContext({"cheap": "B", "mid": "answer is B", "strong": "**B**"})
    assert agreement("cheap", "mid", "strong", normalise="choice").check("B", ctx).ok
    assert [tier for tier, _ in ctx.calls] == ["cheap", "mid", "strong"]


def test_agreement_fails_without_calling_when_the_output_has_no_answer() -> None:
    ctx = ScriptedContext({"mid": "B"})
    verdict = agreement("mid", normalise="choice").check("I am not sure.", ctx)
    assert verdict == Verdict(
        "second_opinion", False, "could not find a multiple-choice letter (A–J) in the output"
    )
    assert ctx.calls == []


def test_agreement_fails_when_the_other_tier_gives_no_answer() -> None:
    ctx = ScriptedContext({"mid": "It depends."})
    verdict = agreement("mid", normalise="number").check("42", ctx)
    assert not verdict.ok
    assert verdict.reason == "tier mid gave no number to compare: 'It depends.'"


async def test_agreement_provider_error_fails_with_the_reason() -> None:
    error = RateLimitedError("429 from upstream", provider="anthropic", model="m", retry_after=3)
    ctx = ScriptedContext({"mid": error})
    validator = agreement("mid")
    for verdict in (validator.check("x", ctx), await validator.acheck("x", ctx)):
        assert verdict == Verdict(
            "second_opinion",
            False,
            "could not ask tier mid: provider error: RateLimitedError: 429 from upstream",
            0.0,
        )


def test_agreement_budget_refusal_fails_with_the_budget_name() -> None:
    error = BudgetExceededError("task:abc", Decimal("0.01"), Decimal("0.01"), Decimal("0.002"))
    verdict = agreement("mid").check("x", ScriptedContext({"mid": error}))
    assert not verdict.ok
    assert verdict.reason == "could not ask tier mid: not allowed by budget task:abc"


def test_agreement_unexpected_error_is_a_failed_verdict_not_an_exception() -> None:
    verdict = agreement("mid").check("x", ScriptedContext({"mid": KeyError("nope")}))
    assert not verdict.ok
    assert verdict.reason == "could not ask tier mid: KeyError: 'nope'"
