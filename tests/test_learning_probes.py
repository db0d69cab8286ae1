"""Demotion probes are a step of the live cascade: one tier below the floor, chosen from the task
id, recorded with role ``probe``; a failed probe costs money but never quality (the floor tier
answers afresh, nothing counts as an escalation); never where a failure could not be undone."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import anthropic
import pytest
from typer.testing import CliRunner

from tierwise.analytics import Settings, analyze
from tierwise.cascade import Cascade
from tierwise.cascade.probe import probe_due
from tierwise.cascade.shadow import sampled
from tierwise.cli import build_app
from tierwise.gateway import GatewayConfig
from tierwise.gateway.server import GatewayServer
from tierwise.ledger import Ledger, open_ledger
from tierwise.policy import Policy, loads_policy
from tierwise.task import Task
from tierwise.testing import FakeUpstream, ModelScript
from tierwise.testing.policies import TEST_KEY_ENV, upstream_policy_text

CHEAP, MID, STRONG = "claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-6"
EXTRA = """
[validators.json]
type = "json"

[defaults]
doubt = "cheap"
validators = ["json"]

[fleet]
probe_share = 1.0

[kinds.extract]
floor = "mid"

[kinds.loose]
floor = "mid"
validators = []

[kinds.security]
floor = "mid"

[kinds.live]
floor = "mid"
stream = "passthrough"

[kinds.ruled]
floor = "mid"

[[rules]]
when = { kind = "ruled" }
tier = "mid"

[frontier]
kinds = ["security"]
"""


def _policy(fake_upstream: FakeUpstream, extra: str = EXTRA) -> Policy:
    return loads_policy(upstream_policy_text(fake_upstream, extra=extra))


@pytest.fixture
def book(tmp_path: Path) -> Iterator[Ledger]:
    with open_ledger(tmp_path / "ledger.db") as ledger:
        yield ledger


def _roles(result_attempts: object) -> list[tuple[str, str, str]]:
    return [(a.role, a.tier, a.outcome) for a in result_attempts]  # type: ignore[attr-defined]


def test_a_failed_probe_costs_money_but_never_quality(
    fake_upstream: FakeUpstream, upstream_env: dict[str, str], book: Ledger
) -> None:
    fake_upstream.reset({CHEAP: "invalid_json", MID: "json"})
    with Cascade(_policy(fake_upstream), ledger=book, env=upstream_env) as cascade:
        result = cascade.run(Task.create("extract", "Invoice 7, total 10 EUR"))
    assert result.decision.tier == "mid" and result.tier == "mid"
    assert _roles(result.attempts) == [("probe", "cheap", "rejected"), ("live", "mid", "accepted")]
    assert not result.escalated and result.escalations == ()
    assert result.attempts[1].escalated_from is None
    # the floor tier was asked afresh: no rejected answer, no handoff note in its request
    (mid_request,) = fake_upstream.requests_for(MID)
    assert [m["role"] for m in mid_request.body["messages"]] == ["user"]
    assert result.cost_usd == sum((a.cost_usd for a in result.attempts), Decimal(0))
    report = analyze(book, Settings.from_policy(cascade.policy))
    group = report.group("extract", "mid")
    assert group is not None
    assert (group.totals.escalated, group.totals.resolved) == (0, 1)
    assert group.totals.probe_usd == result.attempts[0].cost_usd > 0


def test_a_passing_probe_is_the_answer(
    fake_upstream: FakeUpstream, upstream_env: dict[str, str], book: Ledger
) -> None:
    fake_upstream.reset({CHEAP: "json", MID: "json"})
    with Cascade(_policy(fake_upstream), ledger=book, env=upstream_env) as cascade:
        result = cascade.run(Task.create("extract", "Invoice 8"))
    assert result.tier == "cheap" and result.decision.tier == "mid"
    assert _roles(result.attempts) == [("probe", "cheap", "accepted")]
    assert fake_upstream.requests_for(MID) == []
    task = book.task(result.task_id)
    assert task is not None and (task["final_tier"], task["decision_tier"]) == ("cheap", "mid")


async def test_probes_in_async_runs_and_after_a_provider_error(
    fake_upstream: FakeUpstream, upstream_env: dict[str, str], book: Ledger
) -> None:
    fake_upstream.reset({CHEAP: "json", MID: "json"})
    fake_upstream.add_faults(CHEAP, "500:always")
    async with Cascade(_policy(fake_upstream), ledger=book, env=upstream_env) as cascade:
        result = await cascade.arun(Task.create("extract", "Invoice 9"))
    roles = _roles(result.attempts)
    assert roles[-1] == ("live", "mid", "accepted")
    assert {r for r in roles[:-1]} == {("probe", "cheap", "error")}
    assert not result.escalated


def test_where_probes_never_go(
    fake_upstream: FakeUpstream, upstream_env: dict[str, str], book: Ledger
) -> None:
    fake_upstream.reset({CHEAP: "json", MID: "json", STRONG: "json"})
    with Cascade(_policy(fake_upstream), ledger=book, env=upstream_env) as cascade:
        for kind in ("loose", "security", "ruled", "chat"):  # unchecked, frontier, a rule, no floor
            result = cascade.run(Task.create(kind, "x"))
            assert all(a.role == "live" for a in result.attempts), kind
        explicit = cascade.run(Task.create("extract", "x"), start_tier="mid")
        assert _roles(explicit.attempts) == [("live", "mid", "accepted")]
    off = _policy(fake_upstream, EXTRA.replace("probe_share = 1.0", "probe_share = 0"))
    with Cascade(off, ledger=book, env=upstream_env) as cascade:
        assert _roles(cascade.run(Task.create("extract", "x")).attempts) == [
            ("live", "mid", "accepted")
        ]
    budgeted = _policy(fake_upstream, EXTRA + '\n[budgets]\ntask_usd = 1\nclimb = "fit"\n')
    with Cascade(budgeted, ledger=book, env=upstream_env) as cascade:
        result = cascade.run(Task.create("extract", "x"))
        assert all(a.role == "live" for a in result.attempts)


def test_probe_sampling_is_decided_by_the_task_id() -> None:
    ids = [f"task-{i}" for i in range(20_000)]
    picked = [i for i in ids if probe_due(i, 0.02)]
    assert 0.015 < len(picked) / len(ids) < 0.025
    assert picked == [i for i in ids if probe_due(i, 0.02)]  # the same in every process
    assert set(picked) <= {i for i in ids if probe_due(i, 0.05)}  # nested
    shadowed = {i for i in ids if sampled(i, 0.02)}
    assert len(shadowed & set(picked)) < len(picked) / 5  # not the tasks shadow mode picks


def test_the_gateway_probes_buffered_answers_but_never_a_live_stream(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    fake_upstream.reset({CHEAP: ModelScript(behaviour="invalid_json"), MID: "json"})
    db = tmp_path / "ledger.db"
    config = GatewayConfig(
        policy=_policy(fake_upstream), ledger_url=str(db), env={TEST_KEY_ENV: "t"}
    )
    messages = [{"role": "user", "content": "Invoice 10"}]
    with (
        GatewayServer(config) as server,
        anthropic.Anthropic(base_url=server.base_url, api_key="x", max_retries=0) as client,
    ):
        whole = client.messages.with_raw_response.create(
            model="tierwise/extract", max_tokens=64, messages=messages
        )
        with client.messages.with_streaming_response.create(
            model="tierwise/extract", max_tokens=64, messages=messages, stream=True
        ) as buffered:
            buffered_id = buffered.headers["x-tierwise-task-id"]
            list(buffered.iter_lines())
        with client.messages.with_streaming_response.create(
            model="tierwise/live", max_tokens=64, messages=messages, stream=True
        ) as live:
            live_id = live.headers["x-tierwise-task-id"]
            assert live.headers["x-tierwise-tier"] == "mid"
            list(live.iter_lines())
    assert whole.headers["x-tierwise-tier"] == "mid"
    assert "x-tierwise-escalations" not in whole.headers  # a failed probe is no climb
    with open_ledger(db) as book:
        for task_id in (whole.headers["x-tierwise-task-id"], buffered_id):
            rows = [(a["role"], a["tier"], a["outcome"]) for a in book.attempts_of(task_id)]
            assert rows == [("probe", "cheap", "rejected"), ("live", "mid", "accepted")]
        assert [a["role"] for a in book.attempts_of(live_id)] == ["live"]

    result = CliRunner().invoke(build_app(), ["ledger", "stats", "-l", str(db), "--json"])
    assert result.exit_code == 0, result.output
    probes = json.loads(result.stdout)["probes"]
    assert (probes["attempts"], probes["passed"], probes["rejected"]) == (2, 0, 2)
    result = CliRunner().invoke(build_app(), ["ledger", "stats", "-l", str(db)])
    assert "demotion probes (included above, on the tier they ran on): 2 attempts" in " ".join(
        result.stdout.split()
    )
