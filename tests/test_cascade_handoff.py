"""The handoff note: what the next tier reads when a rejected answer makes a task climb.

Through the library's request builder, over the real Anthropic SDK and the fake upstream; the
gateway's builder is checked in ``test_gateway_plan.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tierwise.cascade import Cascade, Failure
from tierwise.cascade.handoff import HANDOFF_HEADER, HANDOFF_MAX_BYTES, handoff_note
from tierwise.errors import EscalationExhaustedError
from tierwise.ledger import open_ledger
from tierwise.policy import Policy
from tierwise.task import Task
from tierwise.testing import FakeUpstream, ModelScript, upstream_policy

CHEAP, MID, STRONG = "claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-6"
ENV = {"TIERWISE_TEST_KEY": "test"}

_KINDS = """
[validators.invoice]
type = "json_schema"
[validators.invoice.schema]
type = "object"
required = ["total"]
properties = { total = { type = "number" } }

[kinds.extract]
doubt = "cheap"
validators = ["invoice"]
"""


def _policy(up: FakeUpstream, extra: str = "") -> Policy:
    return upstream_policy(up, extra=_KINDS + extra)


def _note(up: FakeUpstream, model: str, index: int = 0) -> str:
    messages = up.requests_for(model)[index].body["messages"]
    assert [m["role"] for m in messages][-2:] == ["assistant", "user"]
    content = messages[-1]["content"]
    return content if isinstance(content, str) else content[0]["text"]


def _lines(note: str) -> dict[str, str]:
    """The note's ``Key: value`` lines by key."""
    out: dict[str, str] = {}
    for line in note.splitlines()[1:]:
        key, sep, value = line.partition(": ")
        if sep:
            out[key] = value
    return out


def test_a_climb_tells_the_next_tier_what_was_asked_answered_rejected_and_to_avoid(
    fake_upstream: FakeUpstream,
) -> None:
    fake_upstream.set_script(CHEAP, ModelScript(reply='{"total": "twelve"}'))
    fake_upstream.set_script(MID, ModelScript(reply='{"total": 12.5}'))
    with Cascade(_policy(fake_upstream), env=ENV) as cascade:
        result = cascade.run(Task.create("extract", "Invoice 7: total 12.50 EUR"))
    assert result.tier == "mid"
    sent = fake_upstream.requests_for(MID)[0].body["messages"]
    assert sent[1] == {"role": "assistant", "content": '{"total": "twelve"}'}
    note = _note(fake_upstream, MID)
    assert note.splitlines()[0] == HANDOFF_HEADER == "tierwise handoff note v1"
    assert f'("cheap", model {CHEAP})' in note and "rejected by an automatic check" in note
    lines = _lines(note)
    assert lines["Asked"] == "Invoice 7: total 12.50 EUR"
    assert lines["Answered"] == '{"total": "twelve"} (19 characters in all)'
    assert lines["Rejected because"].startswith("invoice: ")
    assert "'twelve' is not of type 'number'" in lines["Rejected because"]
    assert lines["Avoid"].startswith("reusing or patching the rejected answer")
    assert "Rejected before" not in lines  # one rejection so far
    assert note.splitlines()[-1].startswith("Answer the original request again")


def test_the_note_carries_a_checks_detail_which_the_ledger_does_not(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    script = "import sys; sys.stdin.read(); print('line 3: total is missing'); sys.exit(1)"
    extra = f"""
[validators.check]
type = "command"
argv = [{json.dumps(sys.executable)}, "-c", {json.dumps(script)}]

[kinds.checked]
validators = ["check"]
doubt = "cheap"
"""
    with (
        open_ledger(tmp_path / "l.db") as ledger,
        Cascade(_policy(fake_upstream, extra), ledger=ledger, env=ENV) as cascade,
    ):
        with pytest.raises(EscalationExhaustedError) as info:
            cascade.run(Task.create("checked", "write the invoice"))
        rows = ledger.attempts_of(info.value.task_id)
    because = _lines(_note(fake_upstream, MID))["Rejected because"]
    assert because.startswith("check: ") and because.endswith("line 3: total is missing")
    assert rows[0]["failure"].startswith("check: ")
    assert "total is missing" not in rows[0]["failure"]


def test_a_second_climb_names_the_earlier_rejection(fake_upstream: FakeUpstream) -> None:
    fake_upstream.set_script(CHEAP, ModelScript(reply="no json at all"))
    fake_upstream.set_script(MID, ModelScript(reply='{"sum": 3}'))
    fake_upstream.set_script(STRONG, ModelScript(reply='{"total": 3}'))
    with Cascade(_policy(fake_upstream), env=ENV) as cascade:
        result = cascade.run(Task.create("extract", "Invoice 8"))
    assert result.tier == "strong"
    lines = _lines(_note(fake_upstream, STRONG))
    assert lines["Answered"].startswith('{"sum": 3}')  # the answer just above: mid's
    assert "'total' is a required property" in lines["Rejected because"]
    assert lines["Rejected before"].startswith("cheap: invoice: ")
    assert "the rejections above" in lines["Avoid"]


def test_after_a_provider_error_the_next_tier_still_inherits_the_last_rejected_answer(
    fake_upstream: FakeUpstream,
) -> None:
    fake_upstream.set_script(CHEAP, ModelScript(reply="prose, not json"))
    fake_upstream.set_script(MID, ModelScript(faults=("500:always",)))
    fake_upstream.set_script(STRONG, ModelScript(reply='{"total": 1}'))
    with Cascade(_policy(fake_upstream), env=ENV) as cascade:
        result = cascade.run(Task.create("extract", "Invoice 9"))
    assert result.tier == "strong"
    sent = fake_upstream.requests_for(STRONG)[0].body["messages"]
    assert sent[1]["content"] == "prose, not json"
    assert f'("cheap", model {CHEAP})' in _note(fake_upstream, STRONG)


_text = st.text(st.characters(codec="utf-8"), max_size=5000)


@given(prompt=_text, output=_text, reason=_text, earlier=st.lists(_text, max_size=5))
def test_a_note_never_exceeds_its_byte_bound(
    prompt: str, output: str, reason: str, earlier: list[str]
) -> None:
    """Budgets reserve at most HANDOFF_MAX_BYTES tokens for the note, so it must hold."""
    failure = Failure(
        "cheap", reason, output, model="m", earlier=tuple(("cheap", e) for e in earlier)
    )
    note = handoff_note(Task.create("extract", prompt), failure)
    assert len(note.encode("utf-8", "surrogatepass")) <= HANDOFF_MAX_BYTES
    assert note.startswith(HANDOFF_HEADER)
