"""Shadow calls on every path the gateway serves: a spent shadow budget, the caller's own request
(tools, tool choice, response format, system prompt) in both dialects, and a live stream."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai

from tierwise.gateway import GatewayConfig
from tierwise.gateway.server import GatewayServer
from tierwise.ledger import open_ledger
from tierwise.policy import loads_policy
from tierwise.testing import FakeUpstream, ModelScript, timed_post
from tierwise.testing.policies import TEST_KEY_ENV, upstream_policy_text

CHEAP, MID, STRONG = "claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-6"


def _metric(base: str, name: str, headers: dict[str, str] | None = None) -> float:
    reply = httpx2.get(f"{base}/metrics", headers=headers, timeout=5)
    assert reply.status_code == 200, reply.text
    text = reply.text
    total = 0.0
    for m in re.finditer(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$", text, re.M):
        total += float(m.group(1))
    return total


def _settle(base: str, runs: int, headers: dict[str, str] | None = None) -> None:
    """Wait until *runs* shadow runs have finished (they run after the answers)."""
    deadline = time.monotonic() + 30
    while _metric(base, "tierwise_shadow_runs_total", headers) < runs:
        assert time.monotonic() < deadline, "shadow runs did not finish"
        time.sleep(0.05)


def test_a_spent_shadow_budget_pauses_shadowing_and_says_so(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    limit = Decimal("0.02")
    text = upstream_policy_text(
        fake_upstream,
        extra=f"""
[kinds.extract]
doubt = "cheap"
shadow = 1.0
[budgets]
shadow_day_usd = {limit}
""",
    )
    db = tmp_path / "ledger.db"
    with open_ledger(db) as book:
        secret = book.create_api_key("agent", budget_usd_day=Decimal(1))
        admin = book.create_api_key("ops", role="admin")
        key_id = next(k.id for k in book.list_api_keys() if k.name == "agent")
    config = GatewayConfig(policy=loads_policy(text), ledger_url=str(db), env={TEST_KEY_ENV: "k"})
    n = 30
    tasks: list[str] = []
    with GatewayServer(config) as gateway:
        with anthropic.Anthropic(base_url=gateway.base_url, api_key=secret) as client:
            for i in range(n):
                raw = client.messages.with_raw_response.create(
                    model="tierwise/extract",
                    max_tokens=256,
                    messages=[{"role": "user", "content": f"invoice {i}: total 10 EUR"}],
                )
                tasks.append(raw.headers["x-tierwise-task-id"])  # every caller was answered
                # one request's shadow run at a time
                _settle(gateway.base_url, i + 1, {"authorization": f"Bearer {admin}"})
        auth = {"authorization": f"Bearer {admin}"}
        metrics = httpx2.get(f"{gateway.base_url}/metrics", headers=auth, timeout=5).text
        status = httpx2.get(
            f"{gateway.base_url}/v1/tierwise/admin/status", headers=auth, timeout=5
        ).json()
    runs = {
        m.group(1): float(m.group(2))
        for m in re.finditer(
            r'^tierwise_shadow_runs_total\{kind="extract",status="(\w+)"\} (\S+)$', metrics, re.M
        )
    }
    assert runs["done"] >= 1 and runs["paused"] >= 1 and sum(runs.values()) == n
    assert "tierwise_shadow_paused 1.0" in metrics
    assert status["shadow"]["paused"] is True
    assert "shadow budget spent" in status["shadow"]["reason"]
    assert "[budgets] shadow_day_usd" in status["shadow"]["reason"]
    today = datetime.now(UTC).date().isoformat()
    with open_ledger(db) as book:
        shadow = book.budget(f"shadow-day:{today}")
        key = book.budget(f"key-day:{key_id}:{today}")
        attempts = [a for t in tasks for a in book.attempts_of(t)]
    shadowed = [
        t for t in tasks if any(a["task_id"] == t and a["role"] == "shadow" for a in attempts)
    ]
    assert shadow is not None and 0 < shadow.spent_usd <= limit  # never past its budget
    # the paused requests made no shadow call at all: shadowed tasks are the first ones
    assert shadowed == tasks[: len(shadowed)] and 0 < len(shadowed) < n
    upstream_calls = Counter(r.model for r in fake_upstream.requests)
    shadow_calls = Counter(a["model"] for a in attempts if a["role"] == "shadow")
    assert upstream_calls[STRONG] == shadow_calls[STRONG]  # every upstream call is on record
    live = sum((Decimal(a["cost_usd"]) for a in attempts if a["role"] == "live"), Decimal(0))
    assert key is not None and key.spent_usd == live  # the caller's key paid for no shadow call


TOOLS_ANTHROPIC = [
    {
        "name": "lookup",
        "description": "Look up an order",
        "input_schema": {"type": "object", "properties": {"id": {"type": "string"}}},
    }
]
TOOLS_OPENAI = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look up an order",
            "parameters": {"type": "object", "properties": {"id": {"type": "string"}}},
        },
    }
]


def _bodies(up: FakeUpstream, marker: str) -> dict[str, dict[str, Any]]:
    found = {}
    for r in up.requests:
        if isinstance(r.body, dict) and marker in json.dumps(r.body) and r.model is not None:
            found[r.model] = r.body
    return found


def test_a_shadow_call_is_the_callers_own_request(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    """System prompt, tools, tool choice and response format reach every shadow tier as sent."""
    kind = '\n[kinds.triage]\ndoubt = "cheap"\nshadow = 1.0\n'
    anthropic_text = upstream_policy_text(fake_upstream, extra=kind)
    openai_tiers = (("cheap", "gpt-4o-mini"), ("mid", "gpt-4o"), ("strong", "gpt-4.1"))
    openai_text = upstream_policy_text(
        fake_upstream, provider="openai", tiers=openai_tiers, extra=kind
    )
    for text, dialect in ((anthropic_text, "anthropic"), (openai_text, "openai")):
        fake_upstream.clear_requests()
        config = GatewayConfig(
            policy=loads_policy(text),
            ledger_url=str(tmp_path / f"{dialect}.db"),
            env={TEST_KEY_ENV: "k"},
        )
        marker = f"order-{dialect}"
        with GatewayServer(config) as gateway:
            if dialect == "anthropic":
                with anthropic.Anthropic(base_url=gateway.base_url, api_key="x") as client:
                    client.messages.create(
                        model="tierwise/triage",
                        max_tokens=128,
                        system="You are the order desk. Be brief.",
                        tools=TOOLS_ANTHROPIC,  # type: ignore[arg-type]
                        tool_choice={"type": "auto"},
                        messages=[{"role": "user", "content": f"where is {marker}?"}],
                    )
            else:
                with openai.OpenAI(base_url=gateway.openai_base_url, api_key="x") as oai:
                    oai.chat.completions.create(
                        model="tierwise/triage",
                        max_tokens=128,
                        messages=[
                            {"role": "system", "content": "You are the order desk. Be brief."},
                            {"role": "user", "content": f"where is {marker}?"},
                        ],
                        tools=TOOLS_OPENAI,  # type: ignore[arg-type]
                        tool_choice="auto",
                        response_format={"type": "json_object"},
                    )
            _settle(gateway.base_url, 1)
        bodies = _bodies(fake_upstream, marker)
        models = [m for _, m in openai_tiers] if dialect == "openai" else [CHEAP, MID, STRONG]
        assert set(bodies) == set(models), bodies.keys()
        live = bodies[models[0]]
        for shadow_model in models[1:]:
            assert bodies[shadow_model] == {**live, "model": shadow_model}
        assert live["tools"]
        assert "tool_choice" in live
        if dialect == "openai":
            assert live["response_format"] == {"type": "json_object"}
            assert live["messages"][0]["role"] == "system"
        else:
            assert live["system"] == "You are the order desk. Be brief."


def test_a_live_stream_is_shadowed_after_its_last_byte(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    """A passthrough stream relays the tier's events as they come; shadow calls wait for the
    relay to end (the trailer sent), and the upstream sees them only after that."""
    fake_upstream.set_script(CHEAP, ModelScript(chunks=8, chunk_delay_s=0.01))
    text = upstream_policy_text(
        fake_upstream,
        extra='\n[kinds.chat]\ndoubt = "cheap"\nstream = "passthrough"\nshadow = 1.0\n',
    )
    db = tmp_path / "ledger.db"
    config = GatewayConfig(policy=loads_policy(text), ledger_url=str(db), env={TEST_KEY_ENV: "k"})
    done: dict[str, float] = {}
    with GatewayServer(config) as gateway:
        for i in range(5):
            body = {
                "model": "tierwise/chat",
                "max_tokens": 64,
                "stream": True,
                "messages": [{"role": "user", "content": f"tell me a story number {i}"}],
            }
            reply = timed_post(
                gateway.base_url,
                "/v1/messages",
                json.dumps(body).encode(),
                {"anthropic-version": "2023-06-01", "content-type": "application/json"},
            )
            assert reply.status == 200 and b": tierwise " in reply.body  # the relay's trailer
            assert reply.kernel_stamped
            done[f"story number {i}"] = reply.last_byte_at
        _settle(gateway.base_url, 5)
    shadows = [r for r in fake_upstream.requests if r.model in (MID, STRONG)]
    assert len(shadows) == 10
    for r in shadows:
        story = next(k for k in done if k in json.dumps(r.body))
        assert r.at > done[story]
        assert r.body["stream"] is True  # the caller's own body, streamed the way it asked
    with open_ledger(db) as book:
        rows = [a for a in book.iter_attempts() if a["role"] == "shadow"]
    assert Counter(a["tier"] for a in rows) == {"mid": 5, "strong": 5}


def test_shadow_runs_past_max_in_flight_are_skipped_and_counted_busy(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    """A burst cannot pile up shadow calls: one run at a time here, the others are `busy`."""
    import threading

    fake_upstream.set_script(STRONG, ModelScript(latency_s=0.5))
    text = upstream_policy_text(
        fake_upstream,
        extra='\n[kinds.chat]\ndoubt = "mid"\nshadow = 1.0\nshadow_tiers = ["strong"]\n'
        "[shadow]\nmax_in_flight = 1\n",
    )
    config = GatewayConfig(
        policy=loads_policy(text), ledger_url=str(tmp_path / "l.db"), env={TEST_KEY_ENV: "k"}
    )
    with GatewayServer(config) as gateway:

        def ask(i: int) -> None:
            reply = httpx2.post(
                f"{gateway.base_url}/v1/messages",
                headers={"anthropic-version": "2023-06-01"},
                json={
                    "model": "tierwise/chat",
                    "max_tokens": 16,
                    "messages": [{"role": "user", "content": f"hello {i}"}],
                },
                timeout=30,
            )
            assert reply.status_code == 200

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        _settle(gateway.base_url, 4)
        busy = _metric(gateway.base_url, 'tierwise_shadow_runs_total{kind="chat",status="busy"}')
        done = _metric(gateway.base_url, 'tierwise_shadow_runs_total{kind="chat",status="done"}')
    assert busy >= 1 and done >= 1 and busy + done == 4
    assert len([r for r in fake_upstream.requests if r.model == STRONG]) == done
