"""Running the gateway: request log lines, fail-fast start, and policy reloads that cannot hurt.

The reload tests run `tierwise serve` as a real process (one worker, then two) and reload it
the ways an operator would: SIGHUP and the admin route, with a good and a broken file.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx2
import pytest
from typer.testing import CliRunner

from tierwise.cli import build_app
from tierwise.gateway import GatewayConfig
from tierwise.gateway.logs import REQUEST_LOGGER, JsonFormatter
from tierwise.gateway.server import GatewayServer
from tierwise.policy import loads_policy
from tierwise.testing import FakeUpstream, ModelScript
from tierwise.testing.policies import TEST_KEY_ENV, upstream_policy_text

HI = [{"role": "user", "content": "hi"}]


# -- the request log ---------------------------------------------------------------------------


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def request_lines() -> Iterator[list[dict[str, object]]]:
    handler = _Lines()
    logger = logging.getLogger(REQUEST_LOGGER)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)


def test_every_request_leaves_one_structured_line(
    fake_upstream: FakeUpstream, tmp_path: Path, request_lines: list[dict[str, object]]
) -> None:
    extra = "\n[budgets]\ntask_usd = 0.0000001\n\n[kinds.free]\nbudget_usd_day = 100\n"
    text = upstream_policy_text(fake_upstream, extra='\n[defaults]\ndoubt = "cheap"\n')
    config = GatewayConfig(
        policy=loads_policy(text), ledger_url=str(tmp_path / "l.db"), env={TEST_KEY_ENV: "k" * 9}
    )
    budgeted = GatewayConfig(
        policy=loads_policy(upstream_policy_text(fake_upstream, extra=extra)),
        ledger_url=str(tmp_path / "b.db"),
        env={TEST_KEY_ENV: "k" * 9},
    )
    fake_upstream.set_script("claude-haiku-4-5", ModelScript(faults=("500:always",)))
    with (
        GatewayServer(config) as gateway,
        anthropic.Anthropic(base_url=gateway.base_url, api_key="x", max_retries=0) as claude,
    ):
        ok = claude.messages.with_raw_response.create(
            model="tierwise/auto",
            max_tokens=8,
            messages=HI,  # type: ignore[arg-type]
        )
        with claude.messages.stream(model="tierwise/auto", max_tokens=8, messages=HI) as s:  # type: ignore[arg-type]
            "".join(s.text_stream)
        with pytest.raises(anthropic.BadRequestError):
            claude.messages.create(model="tierwise/auto", max_tokens=-1, messages=HI)  # type: ignore[arg-type]
    with (
        GatewayServer(budgeted) as gateway,
        anthropic.Anthropic(base_url=gateway.base_url, api_key="x", max_retries=0) as claude,
        pytest.raises(anthropic.RateLimitError),
    ):
        claude.messages.create(model="tierwise/auto", max_tokens=8, messages=HI)  # type: ignore[arg-type]

    assert len(request_lines) == 4  # one each, streams included
    served, streamed, refused, budget = request_lines
    assert served["task_id"] == ok.headers["x-tierwise-task-id"]
    assert served["status"] == 200 and served["kind"] == "auto" and served["route"] == "auto"
    assert served["tiers"] == ["cheap", "mid"]  # the cheap tier's 500s made it climb
    assert served["attempts"] == 2 and float(str(served["cost_usd"])) > 0
    assert served["error"] is None and served["dialect"] == "anthropic"
    assert {"latency_ms", "overhead_ms", "key"} <= set(served)
    assert streamed["status"] == 200 and streamed["tiers"] == ["cheap", "mid"]
    assert refused["status"] == 400 and refused["error"] == "invalid_request"
    assert budget["status"] == 429 and budget["error"] == "BudgetExceededError"
    assert budget["attempts"] == 0 and budget["level"] == "info"


# -- fail-fast start ----------------------------------------------------------------------------


def test_serve_refuses_to_start_without_a_tiers_key(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        build_app(), ["serve", "--ledger", str(tmp_path / "l.db")], env={"ANTHROPIC_API_KEY": ""}
    )
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("refusing to start: $ANTHROPIC_API_KEY is not set")
    assert len(result.stderr.strip().splitlines()) == 1


def test_allow_missing_keys_starts_and_reports_the_tier_unavailable(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    from tierwise.gateway.upstream import missing_keys

    text = upstream_policy_text(fake_upstream)
    assert set(missing_keys(loads_policy(text), {})) == {"cheap", "mid", "strong"}
    assert missing_keys(loads_policy(text), {TEST_KEY_ENV: "set"}) == {}
    allowed = GatewayConfig(
        policy=loads_policy(text),
        ledger_url=str(tmp_path / "l.db"),
        env={},
        allow_missing_keys=True,
    )
    with GatewayServer(allowed) as gateway:
        health = httpx2.get(f"{gateway.base_url}/healthz").json()
    assert health["status"] == "degraded"
    assert set(health["unavailable"]) == {"cheap", "mid", "strong"}
    assert "TIERWISE_TEST_KEY" in health["unavailable"]["cheap"]


# -- reloads -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """`tierwise serve` in a subprocess, on a policy file the test edits."""

    def __init__(self, tmp: Path, up: FakeUpstream, workers: int) -> None:
        self.policy = tmp / "tierwise.toml"
        self.good = upstream_policy_text(up)
        self.policy.write_text(self.good)
        self.port = _free_port()
        self.log = tmp / "serve.log"
        env = {**os.environ, TEST_KEY_ENV: "reload-test-key"}
        self._out = self.log.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "tierwise", "serve", "--policy", str(self.policy),
                "--ledger", str(tmp / "l.db"), "--port", str(self.port),
                "--workers", str(workers),
            ],
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.wait(lambda: self.revisions(3) != set())

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def revisions(self, asks: int) -> set[str]:
        """Revisions the workers report (asked several times: requests spread over workers)."""
        seen = set()
        for _ in range(asks):
            try:
                status = httpx2.get(f"{self.base}/v1/tierwise/admin/status", timeout=5)
            except httpx2.HTTPError:
                continue
            if status.status_code == 200:
                seen.add(status.json()["policy_revision"])
        return seen

    def wait(self, ok: object, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not ok():  # type: ignore[operator]
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.2)

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        self._out.close()


@pytest.fixture(params=[1, 2], ids=["one-worker", "two-workers"])
def served(
    request: pytest.FixtureRequest, tmp_path: Path, fake_upstream: FakeUpstream
) -> Iterator[Served]:
    server = Served(tmp_path, fake_upstream, int(request.param))
    try:
        yield server
    finally:
        server.close()


def test_sighup_reloads_a_good_file_and_keeps_the_old_policy_for_a_broken_one(
    served: Served,
) -> None:
    from tierwise.policy import load_policy

    first = served.revisions(6)
    assert len(first) == 1
    served.policy.write_text(served.good + '\n[kinds.added]\nfloor = "mid"\ndoubt = "cheap"\n')
    second = load_policy(served.policy).revision
    served.proc.send_signal(signal.SIGHUP)
    served.wait(lambda: served.revisions(6) == {second})

    served.policy.write_text(served.good + "\n[kinds.broken\n")  # not TOML
    served.proc.send_signal(signal.SIGHUP)
    time.sleep(3)  # let every worker restart (or reload) and read the broken file
    assert served.revisions(8) == {second}  # the old policy stays, on every worker
    assert served.proc.poll() is None
    assert "broken" in served.log.read_text() or "invalid" in served.log.read_text()
    reply = httpx2.post(f"{served.base}/v1/messages", json={
        "model": "tierwise/added", "max_tokens": 8, "messages": HI
    }, timeout=30)  # fmt: skip
    assert reply.status_code == 200 and reply.headers["x-tierwise-tier"] == "mid"


def test_the_admin_route_reloads_or_refuses_with_the_reason(served: Served) -> None:
    from tierwise.policy import load_policy

    served.policy.write_text(served.good + "\n[kinds.broken\n")
    refused = httpx2.post(f"{served.base}/v1/tierwise/admin/reload", timeout=30)
    assert refused.status_code == 400 and refused.json()["ok"] is False
    assert "tierwise.toml" in refused.json()["error"]
    served.policy.write_text(served.good + '\n[kinds.added]\nfloor = "strong"\n')
    accepted = httpx2.post(f"{served.base}/v1/tierwise/admin/reload", timeout=30)
    assert accepted.status_code in (200, 202) and accepted.json()["ok"] is True
    new = load_policy(served.policy).revision
    assert accepted.json()["revision"] == new
    served.wait(lambda: served.revisions(6) == {new})
