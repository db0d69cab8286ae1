"""Replay: recorded answers through the real cascade, into the ledger, exactly like live calls."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tierwise.cascade import Cascade
from tierwise.errors import BadRequestError
from tierwise.evaluation.dataset import Dataset, Ladder, ModelResult, Row
from tierwise.evaluation.replay import PLACEHOLDER, ReplayProvider, ReplaySource
from tierwise.ledger import open_ledger
from tierwise.policy import Policy
from tierwise.pricing import PriceCatalog, Usage, cost_of
from tierwise.providers.base import CompletionRequest
from tierwise.task import Message, Task
from tierwise.testing import FakeUpstream, ModelScript, count_tokens, upstream_policy

CHEAP, STRONG = "claude-haiku-4-5", "claude-opus-4-6"
LADDER = Ladder(("cheap", "strong"), (CHEAP, STRONG))
PROMPTS = {
    "q1": "Which gas do plants absorb?\nA) oxygen\nB) carbon dioxide\nAnswer:",
    "q2": "Which planet is largest?\nA) Jupiter\nB) Mars\nAnswer:",
}
ANSWERS = {  # the cheap model's second answer is not an option letter: it must escalate
    ("q1", CHEAP): "B",
    ("q1", STRONG): "B",
    ("q2", CHEAP): "I do",
    ("q2", STRONG): "A",
}
KINDS = """
[validators.choice]
type = "python"
callable = "tierwise.evaluation.checks:multiple_choice"

[kinds.mc]
validators = ["choice"]
doubt = "cheap"
"""


def recorded_dataset() -> Dataset:
    """Rows whose usage and cost are what the fake upstream will report and bill."""
    catalog = PriceCatalog()
    rows = []
    for pid, prompt in PROMPTS.items():
        results = {}
        for model in (CHEAP, STRONG):
            text = ANSWERS[(pid, model)]
            usage = Usage(input_tokens=count_tokens(prompt), output_tokens=count_tokens(text))
            results[model] = ModelResult(
                score=1.0 if text in ("B", "A") else 0.0,
                response=text,
                cost_usd=cost_of(usage, catalog.prices_for(model)),
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
            )
        rows.append(Row(pid, prompt, "mc", results))
    return Dataset("recorded", tuple(rows), (CHEAP, STRONG), LADDER, formats={"mc": "choice"})


def _first_user_text(body: Mapping[str, Any]) -> str:
    content = body["messages"][0]["content"]
    if isinstance(content, list):
        return "".join(block.get("text", "") for block in content)
    return str(content)


def script_answers(up: FakeUpstream) -> None:
    """The live models answer exactly what the dataset recorded for each prompt."""
    by_prompt = {text: pid for pid, text in PROMPTS.items()}
    for model in (CHEAP, STRONG):
        up.set_script(
            model,
            ModelScript(
                reply=lambda body, m=model: ANSWERS[(by_prompt[_first_user_text(body)], m)]
            ),
        )


def test_replay_provider_answers_with_the_recorded_result() -> None:
    """Text, usage and the recorded cost of that row and model; never the score."""
    ds = recorded_dataset()
    provider = ReplayProvider(ds, CHEAP)
    request = CompletionRequest(CHEAP, (Message("user", "ignored"),), extra={"prompt_id": "q2"})
    done = provider.complete(request)
    res = ds.row("q2").results[CHEAP]
    assert done.text == "I do" and done.provider == "replay" and done.model == CHEAP
    assert done.usage == Usage(input_tokens=res.input_tokens or 0, output_tokens=1)
    assert Decimal(done.recorded_cost_usd or "x") == res.cost_usd
    assert "score" not in repr(done.raw)


async def test_replay_provider_async_and_placeholder() -> None:
    """The async twin answers the same; rows without text answer with a placeholder at $0."""
    row = Row("p", "q", "k", {"m": ModelResult(1.0)})
    ds = Dataset("d", (row,), ("m",), Ladder(("cheap",), ("m",)))
    done = await ReplayProvider(ds, "m").acomplete(
        CompletionRequest("m", (), extra={"prompt_id": "p"})
    )
    assert done.text == PLACEHOLDER
    assert done.recorded_cost_usd == "0"
    assert done.raw == {"prompt_id": "p", "cost_known": False}


@pytest.mark.parametrize(
    ("model", "extra", "message"),
    [
        (CHEAP, {}, "no extra"),
        (CHEAP, {"prompt_id": "zz"}, "no recorded row"),
        ("other-model", {"prompt_id": "q1"}, "no recorded result"),
    ],
)
def test_replay_provider_errors_are_bad_requests(
    model: str, extra: dict[str, str], message: str
) -> None:
    """A request it cannot answer is a non-retryable BadRequestError saying why."""
    provider = ReplayProvider(recorded_dataset(), model)
    with pytest.raises(BadRequestError, match=message) as exc:
        provider.complete(CompletionRequest(model, (), extra=extra))
    assert not exc.value.retryable


def test_replay_source_maps_tiers_to_models() -> None:
    """for_tier gives the tier's one replayed model; unknown models are refused up front."""
    source = ReplaySource(recorded_dataset(), LADDER)
    [(model, provider)] = source.for_tier("strong")
    assert model == STRONG and isinstance(provider, ReplayProvider)
    with pytest.raises(KeyError, match="no results for nope"):
        ReplaySource(recorded_dataset(), {"cheap": "nope"})


_SAME = (
    "attempt_no",
    "kind",
    "tier",
    "tier_index",
    "model",
    "outcome",
    "verdicts",
    "failure",
    "escalated_from",
    "stop_reason",
    "output_sha256",
    "output_chars",
)


def test_replayed_cascade_writes_the_rows_a_live_one_would(
    fake_upstream: FakeUpstream, upstream_env: dict[str, str], tmp_path: Path
) -> None:
    """Same policy, same answers: the replay ledger matches the live one, marked as replay."""
    script_answers(fake_upstream)
    policy: Policy = upstream_policy(fake_upstream, tiers=list(LADDER), extra=KINDS)
    ds = recorded_dataset()
    with (
        open_ledger(tmp_path / "live.db") as live_book,
        open_ledger(tmp_path / "replay.db") as replay_book,
    ):
        with Cascade(policy, ledger=live_book, env=upstream_env) as live:
            for pid, prompt in PROMPTS.items():
                live.run(Task.create("mc", prompt, id=pid))
        with Cascade(
            policy, ledger=replay_book, providers=ReplaySource(ds, LADDER), role="replay"
        ) as replay:
            for pid, prompt in PROMPTS.items():
                replay.run(Task.create("mc", prompt, id=pid))
        for pid in PROMPTS:
            live_rows, replay_rows = live_book.attempts_of(pid), replay_book.attempts_of(pid)
            assert [a["tier"] for a in live_rows] == (
                ["cheap"] if pid == "q1" else ["cheap", "strong"]
            )
            assert len(live_rows) == len(replay_rows)
            for a, b in zip(live_rows, replay_rows, strict=True):
                assert {k: a[k] for k in _SAME} == {k: b[k] for k in _SAME}
                assert (a["role"], b["role"]) == ("live", "replay")
                assert (a["provider"], b["provider"]) == ("anthropic", "replay")
                assert a["usage"]["output_tokens"] == b["usage"]["output_tokens"]
                if a["attempt_no"] == 0:  # an escalation sends the failure along: more input
                    assert a["usage"] == b["usage"] and a["cost_usd"] == b["cost_usd"]
            live_task, replay_task = live_book.task(pid), replay_book.task(pid)
            assert live_task is not None and replay_task is not None
            for key in ("outcome", "final_tier", "attempts"):
                assert live_task[key] == replay_task[key]
        assert replay_book.stats()["tasks"] == 0  # learning and reports read live rows only
        assert replay_book.integrity_check() == []
