"""The cascade end to end: real SDK providers, the fake upstream over loopback, a SQLite ledger."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from tierwise.cascade import Cascade
from tierwise.errors import BudgetExceededError, EscalationExhaustedError
from tierwise.ledger import Ledger, open_ledger
from tierwise.policy import Policy, loads_policy
from tierwise.pricing import PriceCatalog, cost_of
from tierwise.providers.anthropic import AnthropicProvider
from tierwise.task import Task
from tierwise.testing import FakeClock, FakeUpstream, ModelScript, Reply

CHEAP, MID, STRONG = "claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-6"
ENV = {"TW_TEST_KEY": "sk-test-secret-value-123"}


def make_policy(base_url: str, extra: str = "") -> Policy:
    return loads_policy(
        f"""
version = 1
[[tiers]]
name = "cheap"
provider = "anthropic"
model = "{CHEAP}"
base_url = "{base_url}"
api_key_env = "TW_TEST_KEY"
alternates = ["claude-haiku-4-5-alt"]
[[tiers]]
name = "mid"
provider = "anthropic"
model = "{MID}"
base_url = "{base_url}"
api_key_env = "TW_TEST_KEY"
[[tiers]]
name = "strong"
provider = "anthropic"
model = "{STRONG}"
base_url = "{base_url}"
api_key_env = "TW_TEST_KEY"

[prices."claude-haiku-4-5-alt"]
input = 1
output = 5

[retry]
attempts = 3
backoff_s = 0.0
max_backoff_s = 0.0

[validators.invoice]
type = "json_schema"
[validators.invoice.schema]
type = "object"
required = ["total"]
properties = {{ total = {{ type = "number" }} }}

[[rules]]
when = {{ kind = ["extract", "classify"] }}
tier = "cheap"

[frontier]
domains = ["security"]

[kinds.extract]
validators = ["invoice"]
[kinds.classify]
validators = []
{extra}
"""
    )


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(default=None) as up:
        yield up


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with open_ledger(tmp_path / "ledger.db") as book:
        yield book


def answers(up: FakeUpstream, **by_model: str) -> None:
    names = {"cheap": CHEAP, "mid": MID, "strong": STRONG}
    for tier, text in by_model.items():
        up.set_script(names[tier], ModelScript(reply=text))


def test_schema_failure_climbs_exactly_one_tier_and_costs_add_up(
    upstream: FakeUpstream, ledger: Ledger
) -> None:
    answers(upstream, cheap='{"total": "twelve"}', mid='{"total": 12.5}', strong='{"total": 1}')
    policy = make_policy(upstream.base_url)
    with Cascade(policy, ledger=ledger, env=ENV) as cascade:
        result = cascade.run(Task.create("extract", "Invoice 7: total 12.50 EUR"))

    assert result.tier == "mid"
    assert json.loads(result.output) == {"total": 12.5}
    assert [(a.tier, a.outcome) for a in result.attempts] == [
        ("cheap", "rejected"),
        ("mid", "accepted"),
    ]
    assert upstream.requests_for(STRONG) == []
    rejected = result.attempts[0]
    assert "total" in (rejected.failure or "") and "number" in (rejected.failure or "")
    # The failed output and the reason travel up as context.
    sent = upstream.requests_for(MID)[0].body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[1]["content"] == '{"total": "twelve"}'
    assert "number" in sent[2]["content"]

    catalog = PriceCatalog()
    for attempt in result.attempts:
        assert attempt.usage.output_tokens > 0
        assert attempt.cost_usd == cost_of(attempt.usage, catalog.prices_for(attempt.model))
    assert result.cost_usd == sum(a.cost_usd for a in result.attempts)

    rows = ledger.attempts_of(result.task_id)
    assert [(r["tier"], r["outcome"]) for r in rows] == [("cheap", "rejected"), ("mid", "accepted")]
    assert sum(Decimal(r["cost_usd"]) for r in rows) == result.cost_usd
    task_row = ledger.task(result.task_id)
    assert task_row is not None
    assert Decimal(task_row["cost_usd"]) == result.cost_usd
    assert task_row["final_tier"] == "mid"
    assert cascade.escalations[("extract", "cheap", "invoice")] == 1
    assert ledger.integrity_check() == []


async def test_async_run_takes_the_same_path(upstream: FakeUpstream, ledger: Ledger) -> None:
    answers(upstream, cheap="not json", mid='{"total": 3}', strong='{"total": 3}')
    async with Cascade(make_policy(upstream.base_url), ledger=ledger, env=ENV) as cascade:
        result = await cascade.arun(Task.create("extract", "Invoice 8"))
    assert [(a.tier, a.outcome) for a in result.attempts] == [
        ("cheap", "rejected"),
        ("mid", "accepted"),
    ]
    assert len(ledger.attempts_of(result.task_id)) == 2


def test_every_tier_failing_raises_with_the_whole_trail(
    upstream: FakeUpstream, ledger: Ledger
) -> None:
    answers(upstream, cheap="nope", mid="still no", strong="{}")
    task = Task.create("extract", "Invoice 9")
    with (
        Cascade(make_policy(upstream.base_url), ledger=ledger, env=ENV) as cascade,
        pytest.raises(EscalationExhaustedError) as caught,
    ):
        cascade.run(task)
    trail = caught.value.attempts
    assert [(a.tier, a.outcome) for a in trail] == [
        ("cheap", "rejected"),
        ("mid", "rejected"),
        ("strong", "rejected"),
    ]
    assert [a.escalated_from for a in trail] == [None, 0, 1]
    rows = ledger.attempts_of(task.id)
    assert len(rows) == 3
    task_row = ledger.task(task.id)
    assert task_row is not None and task_row["outcome"] == "exhausted"
    assert Decimal(task_row["cost_usd"]) == sum(a.cost_usd for a in trail) > 0


def test_rate_limit_is_retried_after_the_servers_wait(
    upstream: FakeUpstream, ledger: Ledger
) -> None:
    answers(upstream, cheap='{"total": 1}')
    upstream.add_faults(CHEAP, "429")  # retry-after: 1 second
    slept: list[float] = []
    with Cascade(
        make_policy(upstream.base_url), ledger=ledger, env=ENV, sleep=slept.append
    ) as cascade:
        result = cascade.run(Task.create("extract", "Invoice 10"))
    assert result.tier == "cheap"
    assert len(upstream.requests_for(CHEAP)) == 2
    assert slept and slept[0] >= 1.0
    assert [a.outcome for a in result.attempts] == ["accepted"]


def test_a_spent_budget_stops_the_next_attempt(upstream: FakeUpstream, ledger: Ledger) -> None:
    answers(upstream, cheap="not json", mid='{"total": 2}')
    policy = make_policy(upstream.base_url)
    catalog = PriceCatalog()
    # Enough for the cheap attempt's worst case, not for the mid tier's.
    from tierwise.pricing import max_cost

    cheap_worst = max_cost(catalog.prices_for(CHEAP), input_tokens=200, max_tokens=64)
    task = Task.create("extract", "Invoice 11", max_tokens=64, budget_usd=cheap_worst)
    with (
        Cascade(policy, ledger=ledger, env=ENV) as cascade,
        pytest.raises(BudgetExceededError) as caught,
    ):
        cascade.run(task)
    err = caught.value
    assert err.budget == f"task:{task.id}"
    assert [a.tier for a in err.attempts] == ["cheap"]
    assert err.spent_usd == err.attempts[0].cost_usd
    assert upstream.requests_for(MID) == []
    assert "task:" in str(err)
    task_row = ledger.task(task.id)
    assert task_row is not None and task_row["outcome"] == "budget"


def test_provider_failing_mid_escalation_leaves_a_complete_trail(
    upstream: FakeUpstream, ledger: Ledger
) -> None:
    answers(upstream, cheap="not json", strong='{"total": 4}')
    upstream.set_script(MID, ModelScript(reply='{"total": 4}', faults=("500:always",)))
    with Cascade(make_policy(upstream.base_url), ledger=ledger, env=ENV) as cascade:
        result = cascade.run(Task.create("extract", "Invoice 12"))
    assert [(a.tier, a.outcome) for a in result.attempts] == [
        ("cheap", "rejected"),
        ("mid", "error"),
        ("strong", "accepted"),
    ]
    assert result.attempts[1].error_class == "ServerError"
    assert len(upstream.requests_for(MID)) == 3  # the retry policy's attempts
    rows = ledger.attempts_of(result.task_id)
    assert [r["outcome"] for r in rows] == ["rejected", "error", "accepted"]
    dump = json.dumps(rows, default=str)
    assert ENV["TW_TEST_KEY"] not in dump


def test_alternate_model_serves_when_the_primary_keeps_failing(
    upstream: FakeUpstream, ledger: Ledger
) -> None:
    upstream.set_script(CHEAP, ModelScript(reply="{}", faults=("529:always",)))
    upstream.set_script("claude-haiku-4-5-alt", ModelScript(reply='{"total": 5}'))
    with Cascade(make_policy(upstream.base_url), ledger=ledger, env=ENV) as cascade:
        result = cascade.run(Task.create("extract", "Invoice 13"))
    assert result.tier == "cheap"
    assert result.model == "claude-haiku-4-5-alt"
    assert [a.outcome for a in result.attempts] == ["error", "accepted"]


def test_start_tier_and_scorer_hooks_never_undercut_the_frontier(
    upstream: FakeUpstream, ledger: Ledger
) -> None:
    answers(upstream, cheap="{}", mid='{"total": 1}', strong='{"total": 1}')

    class AlwaysCheap:
        def propose(self, task: Task) -> str | None:
            return "cheap"

    policy = make_policy(upstream.base_url)
    with Cascade(policy, ledger=ledger, env=ENV, scorer=AlwaysCheap()) as cascade:
        started_mid = cascade.run(Task.create("classify", "hi"), start_tier="mid")
        pinned = cascade.run(Task.create("classify", "[domain: security] rotate the keys"))
    assert [a.tier for a in started_mid.attempts] == ["mid"]
    assert pinned.tier == "strong" and [a.tier for a in pinned.attempts] == ["strong"]
    assert upstream.requests_for(CHEAP) == []


def test_refusal_and_truncation_escalate(upstream: FakeUpstream, ledger: Ledger) -> None:
    upstream.set_script(CHEAP, ModelScript(reply=Reply(text="I can't.", stop="refusal")))
    upstream.set_script(MID, ModelScript(reply=Reply(text="partial answ", stop="max_tokens")))
    answers(upstream, strong="fine")
    policy = make_policy(
        upstream.base_url,
        '[kinds.draft_reply]\ndoubt = "cheap"\n'
        'validators = [{ type = "not_refusal" }, { type = "not_truncated" }]',
    )
    with Cascade(policy, ledger=ledger, env=ENV) as cascade:
        result = cascade.run(Task.create("draft_reply", "answer the customer"))
    assert [a.outcome for a in result.attempts] == ["rejected", "rejected", "accepted"]
    reasons = [a.failure or "" for a in result.attempts[:2]]
    assert reasons[0].startswith("not_refusal") and reasons[1].startswith("not_truncated")


class _SlowToImport(AnthropicProvider):
    """The real provider, whose one-off set-up takes 5 s on the injected clock."""

    def __init__(self, clock: FakeClock, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.clock = clock

    def warm(self) -> None:
        self.clock.advance(5.0)
        super().warm()


def test_recorded_latency_is_the_calls_not_the_client_set_up(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    """`tierwise run` once recorded 1,962 ms for a 22 ms call: the SDK import was timed."""
    clock = FakeClock()
    policy = make_policy(fake_upstream.base_url)
    provider = _SlowToImport(
        clock, base_url=fake_upstream.base_url, api_key=ENV["TW_TEST_KEY"], api_key_env="TW"
    )

    class Source:
        def for_tier(self, tier: str) -> list[tuple[str, AnthropicProvider]]:
            return [(policy.tier(tier).model, provider)]

    with open_ledger(tmp_path / "l.db") as ledger:
        cascade = Cascade(policy, providers=Source(), ledger=ledger, clock=clock)
        result = cascade.run(Task.create("chat", "hello"))
        assert clock.now == 5.0  # the set-up happened, on the clock
        assert [a.latency_s for a in result.attempts] == [0.0]  # ... but outside the attempt
        assert ledger.attempts_of(result.task_id)[0]["latency_s"] == 0.0
        provider.close()


def test_a_check_commands_output_reaches_the_next_tier_but_not_the_record(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    """The output explains the failure to the stronger model; the ledger keeps the safe reason."""
    import sys

    script = "import sys; sys.stdin.read(); print('line 3: total is missing'); sys.exit(1)"
    policy = make_policy(
        fake_upstream.base_url,
        extra=f"""
[validators.check]
type = "command"
argv = [{json.dumps(sys.executable)}, "-c", {json.dumps(script)}]

[kinds.checked]
validators = ["check"]
doubt = "cheap"
""",
    )
    with open_ledger(tmp_path / "l.db") as ledger, Cascade(policy, ledger=ledger, env=ENV) as c:
        with pytest.raises(EscalationExhaustedError) as info:
            c.run(Task.create("checked", "write the invoice"))
        rows = ledger.attempts_of(info.value.task_id)
    second = fake_upstream.requests_for(MID)[0].body["messages"][-1]["content"]
    assert "line 3: total is missing" in json.dumps(second)
    assert all("total is missing" not in (r["failure"] or "") for r in rows)
    assert rows[0]["failure"].startswith("check: ")
