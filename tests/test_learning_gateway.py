"""The articles' scenario through `tierwise serve --workers 2` and the fake upstream, with stated
prices: one kind's cheap model fails 80% and mid passes, another kind's cheap model passes.
Exactly the failing kind is proposed, with the numbers worked out here; once applied, every
worker starts its tasks on mid within 5 seconds and the fleet's escalation rate falls by that
kind's share; once the cheap model is fixed, probes lead to a demotion proposal. And the admin
routes that apply and revert changes over HTTP need an admin key."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest
from typer.testing import CliRunner

from tierwise.analytics import fleet_escalation
from tierwise.cli import build_app
from tierwise.gateway import GatewayConfig
from tierwise.gateway.server import GatewayServer
from tierwise.ledger import open_ledger
from tierwise.policy import loads_policy
from tierwise.testing import FakeUpstream, ModelScript
from tierwise.testing.policies import TEST_KEY_ENV, upstream_policy_text

CHEAP, MID = "claude-haiku-4-5", "claude-sonnet-4-6"
EXTRA = """
[prices.claude-haiku-4-5]
input = 1
output = 5
[prices.claude-sonnet-4-6]
input = 3
output = 15
[prices.claude-opus-4-6]
input = 15
output = 75

[validators.json]
type = "json"

[defaults]
doubt = "cheap"
validators = ["json"]

[fleet]
min_sample = 10
probe_share = 0.25
demotion_threshold = 0.3
"""
# Every prompt is 400 characters (100 input tokens for the fake), every answer 40 (10 output
# tokens): an attempt on cheap costs (100·1 + 10·5) / 1e6, the same work on mid 3 times that.
CHEAP_ATTEMPT = Decimal("0.00015")
MID_ATTEMPT = Decimal("0.00045")
GOOD = json.dumps({"total": "10 EUR", "note": "x" * 9})
BAD = "total: ten euros, I think, more or less."
assert len(GOOD) == len(BAD) == 40


def prompt(kind: str, i: int, hard: bool) -> str:
    text = f"{'HARD ' if hard else ''}{kind} document {i:04d} "
    return text + "." * (400 - len(text))


def hard(kind: str, i: int) -> bool:
    """extract: 4 in 5 are too hard for the cheap model; chat: 1 in 10."""
    return i % 5 != 0 if kind == "extract" else i % 10 == 0


def cheap_reply(request: dict[str, Any]) -> str:
    from tierwise.testing.script import last_user_text

    return BAD if last_user_text(request).startswith("HARD") else GOOD


def wilson_low(k: int, n: int) -> float:
    z = 1.959963984540054
    p = k / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(build_app(), list(args), env={"TIERWISE_ACTOR": "ops"})
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def workers(fake_upstream: FakeUpstream, tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """`tierwise serve --workers 2` on a free port: (base URL, policy file, ledger file)."""
    fake_upstream.reset({CHEAP: ModelScript(reply=cheap_reply), MID: ModelScript(reply=GOOD)})
    policy = tmp_path / "tierwise.toml"
    policy.write_text(upstream_policy_text(fake_upstream, extra=EXTRA))
    db = tmp_path / "ledger.db"
    port = _free_port()
    cmd = [
        sys.executable, "-m", "tierwise", "serve", "--policy", str(policy), "--port", str(port),
        "--ledger", str(db), "--workers", "2", "--log-level", "warning",
    ]  # fmt: skip
    env = {**os.environ, TEST_KEY_ENV: "test"}
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, server.communicate()[0].decode()
            try:
                if httpx2.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            assert time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.1)
        yield base, policy, db
    finally:
        server.send_signal(signal.SIGTERM)
        output = server.communicate(timeout=30)[0].decode()
    assert server.returncode == 0, output


def traffic(
    base: str, kinds: dict[str, int], first: int = 0
) -> list[tuple[str, int, dict[str, str]]]:
    """Send *n* requests of each kind, 8 at a time: (kind, i, response headers) each."""

    def call(job: tuple[str, int]) -> tuple[str, int, dict[str, str]]:
        kind, i = job
        with anthropic.Anthropic(base_url=base, api_key="x", max_retries=0) as client:
            raw = client.messages.with_raw_response.create(
                model=f"tierwise/{kind}",
                max_tokens=64,
                messages=[{"role": "user", "content": prompt(kind, i, hard(kind, i))}],
            )
        return kind, i, dict(raw.headers)

    jobs = [(kind, i) for kind, n in kinds.items() for i in range(first, first + n)]
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(call, jobs))


def worker_revisions(base: str) -> dict[int, str]:
    """The revision each worker serves, by pid: a burst of fresh connections reaches both."""

    def status(_: int) -> tuple[int, str]:
        reply = httpx2.get(f"{base}/v1/tierwise/admin/status", timeout=5)
        assert reply.status_code == 200, reply.text
        data = reply.json()
        return int(data["pid"]), str(data["policy_revision"])

    with ThreadPoolExecutor(16) as pool:
        return dict(pool.map(status, range(32)))


@pytest.mark.slow
def test_the_articles_scenario_through_two_workers(
    workers: tuple[str, Path, Path], fake_upstream: FakeUpstream
) -> None:
    base, policy_file, db = workers
    file_revision = loads_policy(policy_file.read_text()).revision
    common = ("-p", str(policy_file), "-l", str(db))

    # 1. extract fails on cheap 4 times in 5 and mid passes; chat's cheap model does the job
    start1 = datetime.now(UTC)
    first = traffic(base, {"extract": 40, "chat": 40})
    end1 = datetime.now(UTC)
    tiers = {(k, h["x-tierwise-tier"]) for k, _, h in first}
    assert tiers == {("extract", "cheap"), ("extract", "mid"), ("chat", "cheap"), ("chat", "mid")}

    code, out, err = _cli("learn", "propose", "--json", *common)
    assert code == 0, err
    run = json.loads(out)
    assert [p["kind"] for p in run["proposals"]] == ["extract"]  # exactly the failing kind
    (p,) = run["proposals"]
    assert (p["direction"], p["floor_before"], p["floor_after"]) == ("promote", None, "mid")
    failure = p["evidence"]["on_floor"]["failure"]
    assert (failure["count"], failure["of"]) == (32, 40)
    assert failure["low"] == pytest.approx(wilson_low(32, 40))
    assert p["evidence"]["on_floor"]["next_tier_failure"]["of"] == 32  # mid passed all 32
    assert p["evidence"]["on_floor"]["next_tier_failure"]["count"] == 0
    assert Decimal(p["money"]["saved_usd"]) == 32 * CHEAP_ATTEMPT  # failed cheap attempts
    assert Decimal(p["money"]["added_usd"]) == 8 * (MID_ATTEMPT - CHEAP_ATTEMPT)
    assert Decimal(p["money"]["net_usd"]) == Decimal("0.0024")
    assert p["money"]["break_even_failure"] == pytest.approx(2 / 3)
    assert set(p["reasons"]) == {"money", "red_line", "latency"}
    assert {h["kind"]: h["reason"] for h in run["holds"]} == {"chat": "below_threshold"}

    # 2. applied: every worker serves the new revision within 5 seconds, without a restart
    before = worker_revisions(base)
    assert set(before.values()) == {file_revision}
    code, out, err = _cli("learn", "apply", str(p["id"]), "--json", *common)
    applied_at = time.monotonic()
    assert code == 0, err
    applied = json.loads(out)
    assert applied["revision_before"] == file_revision
    revision = applied["revision_after"]
    seen: dict[int, str] = {}
    while True:
        seen.update(worker_revisions(base))
        if len(seen) >= 2 and set(seen.values()) == {revision}:
            break
        assert time.monotonic() - applied_at < 5, f"workers still serve {seen} after 5 s"
        time.sleep(0.2)
        seen = {pid: r for pid, r in seen.items() if r == revision}  # ask the others again

    start2 = datetime.now(UTC)
    second = traffic(base, {"extract": 40, "chat": 40}, first=1000)
    end2 = datetime.now(UTC)
    with open_ledger(db) as book:
        for kind, _, headers in second:
            task = book.task(headers["x-tierwise-task-id"])
            assert task is not None and task["policy_revision"] == revision
            if kind == "chat":
                continue
            assert task["decision_tier"] == "mid"  # every extract task starts on mid
            rows = book.attempts_of(task["id"])
            if headers["x-tierwise-tier"] != "mid":  # the few a passing probe answered
                assert headers["x-tierwise-tier"] == "cheap"
                assert [(a["role"], a["outcome"]) for a in rows] == [("probe", "accepted")]
        line1 = fleet_escalation(book, 0.09, since=start1, until=end1)
        line2 = fleet_escalation(book, 0.09, since=start2, until=end2)
    share = next(c for c in line1.contributors if c.kind == "extract").points
    assert (line1.escalated, line1.resolved, share) == (36, 80, 32 / 80)
    assert (line2.escalated, line2.resolved) == (4, 80)  # chat's four, as before
    assert line1.rate.value - line2.rate.value == pytest.approx(share)  # type: ignore[operator]

    # 3. the cheap model is fixed: probes on cheap pass, and the learner proposes demotion
    fake_upstream.set_script(CHEAP, ModelScript(reply=GOOD))
    fixed = datetime.now(UTC)
    later = fixed + timedelta(days=8)  # the learner's clock: past the 7-day cool-down
    window = f"{(later - fixed).total_seconds():.6f}s"  # evidence since the fix only
    probes: list[dict[str, Any]] = []
    batch = 2000
    while len(probes) < 14 and batch < 2400:  # 14 passing probes clear the threshold
        traffic(base, {"extract": 20}, first=batch)
        batch += 20
        with open_ledger(db) as book:
            probes = list(book.iter_attempts(role="probe", since=fixed))
    assert len(probes) >= 14, "too few probes were sampled"
    assert {a["outcome"] for a in probes} == {"accepted"} and {a["tier"] for a in probes} == {
        "cheap"
    }
    code, out, err = _cli(
        "learn", "propose", "--json", "--until", later.isoformat(), "--window", window, *common
    )
    assert code == 0, err
    run = json.loads(out)
    (p,) = run["proposals"]
    assert (p["direction"], p["floor_before"], p["floor_after"]) == ("demote", "mid", "cheap")
    below = p["evidence"]["below"]
    assert (below["passed"], below["rejected"]) == (len(probes), 0)
    assert Decimal(below["spend_usd"]) == len(probes) * CHEAP_ATTEMPT


# -- apply and revert over HTTP --------------------------------------------------------------


def test_applying_and_reverting_over_http_needs_an_admin_key(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    from tierwise.ledger.fixtures import record_task

    fake_upstream.reset({CHEAP: "json", MID: "json"})
    text = upstream_policy_text(fake_upstream, extra=EXTRA)
    db = tmp_path / "ledger.db"
    with open_ledger(db) as book:
        admin = book.create_api_key("root", role="admin")
        client = book.create_api_key("app")
        for _ in range(20):
            record_task(book, kind="extract", outcomes=["rejected", "accepted"])
    pol = loads_policy(text)
    policy_file = tmp_path / "tierwise.toml"
    policy_file.write_text(text)
    code, out, err = _cli("learn", "propose", "--json", "-p", str(policy_file), "-l", str(db))
    assert code == 0, err
    (p,) = json.loads(out)["proposals"]
    config = GatewayConfig(policy=pol, ledger_url=str(db), env={TEST_KEY_ENV: "t"}, key_cache_s=0)
    with GatewayServer(config) as server:
        url = f"{server.base_url}/v1/tierwise/admin/learn"

        def post(route: str, body: object, key: str | None) -> httpx2.Response:
            headers = {"authorization": f"Bearer {key}"} if key else {}
            return httpx2.post(f"{url}/{route}", json=body, headers=headers, timeout=10)

        assert post("apply", {"id": p["id"]}, None).status_code == 401
        refused = post("apply", {"id": p["id"]}, client)
        assert refused.status_code == 403 and "admin key" in refused.json()["error"]["message"]
        assert post("apply", {"id": 999}, admin).status_code == 404
        bad = post("apply", {"id": "one"}, admin)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "id"
        assert post("apply", {"id": p["id"], "by": "me"}, admin).status_code == 400

        done = post("apply", {"id": p["id"]}, admin)
        assert done.status_code == 200, done.text
        body = done.json()
        assert body["change"]["actor"] == "key:root" and body["change"]["status"] == "applied"
        assert body["revision"] == body["change"]["revision_after"]  # this worker, at once
        again = post("apply", {"id": p["id"]}, admin)
        assert again.status_code == 409 and "only a proposed change" in again.text

        with anthropic.Anthropic(base_url=server.base_url, api_key=client, max_retries=0) as c:
            raw = c.messages.with_raw_response.create(
                model="tierwise/extract",
                max_tokens=32,
                messages=[{"role": "user", "content": "Invoice 11"}],
            )
        assert raw.headers["x-tierwise-tier"] in ("mid", "cheap")  # cheap only via a probe
        with open_ledger(db) as book:
            task = book.task(raw.headers["x-tierwise-task-id"])
        assert task is not None and task["decision_tier"] == "mid"

        undone = post("revert", {"id": p["id"], "reason": "not yet"}, admin)
        assert undone.status_code == 200, undone.text
        assert undone.json()["revision"] == pol.revision  # the file's revision, exactly
        assert undone.json()["change"]["action"] == "revert"
