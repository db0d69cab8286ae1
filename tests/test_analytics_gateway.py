"""Through the gateway and the fake upstream: a kind whose cheap tier always fails validation
drives `learn status` to exit 1 and `/metrics` to show the red line crossed; feedback over HTTP
and the CLI lands on the right task, once, and only where the caller's key may flag."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx2
import pytest
from typer.testing import CliRunner

from tierwise.cli import build_app
from tierwise.gateway import GatewayConfig
from tierwise.gateway.server import GatewayServer
from tierwise.ledger import open_ledger
from tierwise.policy import loads_policy
from tierwise.testing import FakeUpstream
from tierwise.testing.policies import TEST_KEY_ENV, upstream_policy_text

EXTRA = """
[validators.json]
type = "json"

[defaults]
doubt = "cheap"
validators = []

[kinds.extract]
doubt = "cheap"
validators = ["json"]

[kinds.chat]
doubt = "cheap"
"""
HI = [{"role": "user", "content": "Invoice 42, total 10 EUR"}]


def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(build_app(), list(args), env={"COLUMNS": "100"})
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def setup(fake_upstream: FakeUpstream, tmp_path: Path) -> tuple[GatewayConfig, Path, Path]:
    """A ladder whose cheap model never answers JSON (mid does), its policy file and ledger."""
    fake_upstream.reset({"claude-haiku-4-5": "invalid_json", "claude-sonnet-4-6": "json"})
    text = upstream_policy_text(fake_upstream, extra=EXTRA)
    policy_file = tmp_path / "tierwise.toml"
    policy_file.write_text(text)
    ledger = tmp_path / "ledger.db"
    config = GatewayConfig(
        policy=loads_policy(text), ledger_url=str(ledger), env={TEST_KEY_ENV: "t"}, key_cache_s=0
    )
    return config, policy_file, ledger


def _ask(server: GatewayServer, kind: str, key: str = "unused") -> tuple[str, str]:
    """One request of *kind*; its (task id, tier that answered)."""
    with anthropic.Anthropic(base_url=server.base_url, api_key=key, max_retries=0) as client:
        raw = client.messages.with_raw_response.create(
            model=f"tierwise/{kind}", max_tokens=64, messages=HI
        )
    return raw.headers["x-tierwise-task-id"], raw.headers["x-tierwise-tier"]


def _post(server: GatewayServer, body: object, key: str | None = None) -> httpx2.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx2.post(
        f"http://127.0.0.1:{server.port}/v1/tierwise/feedback",
        content=json.dumps(body).encode(),
        headers={"content-type": "application/json", **headers},
    )


def _metric(text: str, name: str) -> float:
    line = next(x for x in text.splitlines() if x.startswith(name + " "))
    return float(line.split()[1])


@pytest.fixture
def served(setup: tuple[GatewayConfig, Path, Path]) -> Iterator[tuple[GatewayServer, Path, Path]]:
    config, policy_file, ledger = setup
    with GatewayServer(config) as server:
        yield server, policy_file, ledger


def test_a_cheap_tier_that_always_fails_crosses_the_red_line(
    served: tuple[GatewayServer, Path, Path],
) -> None:
    server, policy_file, ledger = served
    chats = [_ask(server, "chat") for _ in range(3)]
    assert {tier for _, tier in chats} == {"cheap"}
    code, out, _ = _cli("learn", "status", "-l", str(ledger), "-p", str(policy_file))
    assert code == 0 and "below the red line" in out

    extracts = [_ask(server, "extract") for _ in range(6)]
    assert {tier for _, tier in extracts} == {"mid"}  # every one climbed
    code, out, err = _cli("learn", "status", "-l", str(ledger), "-p", str(policy_file), "--json")
    assert code == 1, err
    data = json.loads(out)
    line = data["red_line"]
    assert (line["resolved"], line["escalated"], line["above"]) == (9, 6, True)
    assert line["contributors"][0]["kind"] == "extract"
    groups = {g["kind"]: g for g in data["groups"]}
    assert groups["extract"]["reasons"] == {"json": 6}
    assert groups["extract"]["latency"]["escalated"]["tasks"] == 6
    assert groups["chat"]["status"] == "unmeasured"  # no validator: it cannot fail

    metrics = httpx2.get(f"http://127.0.0.1:{server.port}/metrics").text
    assert _metric(metrics, "tierwise_fleet_escalation_above_red_line") == 1.0
    assert _metric(metrics, "tierwise_fleet_escalation_rate") == pytest.approx(6 / 9)
    assert _metric(metrics, "tierwise_fleet_escalation_red_line") == 0.09
    assert _metric(metrics, "tierwise_fleet_resolved_tasks") == 9


def test_feedback_over_http_and_the_cli_lands_on_the_right_task_once(
    served: tuple[GatewayServer, Path, Path],
) -> None:
    server, _, ledger = served
    flagged, _ = _ask(server, "extract")
    other, _ = _ask(server, "extract")
    chat, _ = _ask(server, "chat")
    body = {"task_id": flagged, "flag": "wrong", "note": "total is 100 EUR"}
    first, again = _post(server, body), _post(server, body)
    assert first.status_code == again.status_code == 200
    assert (first.json()["change"], again.json()["change"]) == ("created", "unchanged")
    assert first.json()["author"] == "anonymous"
    code, _, err = _cli("feedback", chat, "--cheaper-would-do", "-l", str(ledger))
    assert code == 0, err
    with open_ledger(ledger) as book:
        assert [(f.flag, f.note) for f in book.feedback_of(flagged)] == [
            ("wrong", "total is 100 EUR")
        ]
        assert [f.flag for f in book.feedback_of(chat)] == ["cheaper_would_do"]
        assert book.feedback_of(other) == []

    unknown = _post(server, {"task_id": "nope", "flag": "wrong"})
    assert unknown.status_code == 404 and "no task" in unknown.json()["error"]["message"]
    bad = _post(server, {"task_id": flagged, "flag": "meh"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "flag"
    extra = _post(server, {"task_id": flagged, "flag": "wrong", "who": "me"})
    assert extra.status_code == 400 and "who" in extra.json()["error"]["message"]
    garbled = httpx2.post(f"http://127.0.0.1:{server.port}/v1/tierwise/feedback", content=b"{")
    assert garbled.status_code == 400
    huge = _post(server, {"task_id": flagged, "flag": "wrong", "note": "x" * 20_000})
    assert huge.status_code == 413
    with open_ledger(ledger) as book:  # nothing the refused requests carried was stored
        assert [f.flag for f in book.feedback_of(flagged)] == ["wrong"]


def test_a_key_flags_only_its_own_tasks_an_admin_any(
    setup: tuple[GatewayConfig, Path, Path],
) -> None:
    config, _, ledger = setup
    with open_ledger(ledger) as book:
        ana = book.create_api_key("ana")
        bo = book.create_api_key("bo")
        ops = book.create_api_key("ops", role="admin")
    with GatewayServer(config) as server:
        mine, _ = _ask(server, "chat", key=ana)
        theirs, _ = _ask(server, "chat", key=bo)
        ok = _post(server, {"task_id": mine, "flag": "wrong"}, key=ana)
        assert ok.status_code == 200 and ok.json()["author"] == "key:ana"
        refused = _post(server, {"task_id": theirs, "flag": "wrong"}, key=ana)
        assert refused.status_code == 404  # the same answer as an unknown task
        assert _post(server, {"task_id": theirs, "flag": "wrong"}).status_code == 401
        spoof = _post(server, {"task_id": mine, "flag": "wrong", "author": "bo"}, key=ana)
        assert spoof.status_code == 400
        admin = _post(server, {"task_id": theirs, "flag": "needed_frontier"}, key=ops)
        assert admin.status_code == 200 and admin.json()["author"] == "key:ops"
    with open_ledger(ledger) as book:
        assert [(f.author, f.flag) for f in book.feedback_of(mine)] == [("key:ana", "wrong")]
        assert [(f.author, f.flag) for f in book.feedback_of(theirs)] == [
            ("key:ops", "needed_frontier")
        ]


def test_the_fleet_gauges_are_cached_and_survive_an_unreadable_ledger(tmp_path: Path) -> None:
    import math

    from prometheus_client import CollectorRegistry

    from tierwise.gateway.fleet import FleetGauges
    from tierwise.ledger.fixtures import record_task

    clock = [100.0]
    registry = CollectorRegistry()

    def value(name: str) -> float | None:
        return registry.get_sample_value(f"tierwise_fleet_{name}")

    book = open_ledger(tmp_path / "ledger.db")
    gauges = FleetGauges(book, registry, 0.09, cache_s=5, clock=lambda: clock[0])
    assert math.isnan(value("escalation_rate") or 0.0) and value("escalation_red_line") == 0.09
    record_task(book, outcomes=["rejected", "accepted"])
    gauges.refresh()
    assert (value("escalation_rate"), value("escalation_above_red_line")) == (1.0, 1.0)
    for _ in range(3):
        record_task(book, outcomes=["accepted"])
    clock[0] += 4.9
    gauges.refresh()  # within the cache period: no new read
    assert value("escalation_rate") == 1.0
    clock[0] += 0.2
    gauges.refresh()
    assert (value("escalation_rate"), value("resolved_tasks")) == (0.25, 4)
    assert value("escalation_above_red_line") == 1.0
    book.close()
    clock[0] += 10
    gauges.refresh()  # logged, not raised; the last figures stay
    assert value("escalation_rate") == 0.25
