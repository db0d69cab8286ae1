"""`tierwise serve --workers 2`: two worker processes share one SQLite ledger safely."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anthropic
import httpx2

from tierwise.ledger import open_ledger
from tierwise.testing import FakeUpstream, ModelScript
from tierwise.testing.policies import TEST_KEY_ENV, upstream_policy_text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_workers_record_every_request_in_one_ledger(
    tmp_path: Path, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.set_script("claude-haiku-4-5", ModelScript(latency_s=0.02))
    policy = tmp_path / "tierwise.toml"
    policy.write_text(upstream_policy_text(fake_upstream))
    db = tmp_path / "ledger.db"
    port = _free_port()
    env = {**os.environ, TEST_KEY_ENV: "test"}
    cmd = [
        sys.executable,
        "-m",
        "tierwise",
        "serve",
        "--policy",
        str(policy),
        "--port",
        str(port),
        "--ledger",
        str(db),
        "--workers",
        "2",
        "--log-level",
        "warning",
    ]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
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

        def call(i: int) -> str:
            with anthropic.Anthropic(base_url=base, api_key="x", max_retries=0) as client:
                raw = client.messages.with_raw_response.create(
                    model="tierwise/classify",
                    max_tokens=20,
                    messages=[{"role": "user", "content": f"request {i}"}],
                )
                return raw.headers["x-tierwise-task-id"]

        with ThreadPoolExecutor(8) as pool:
            task_ids = list(pool.map(call, range(40)))
    finally:
        server.send_signal(signal.SIGTERM)
        output = server.communicate(timeout=30)[0].decode()
    assert server.returncode == 0, output
    assert len(set(task_ids)) == 40
    with open_ledger(db) as ledger:
        assert ledger.integrity_check() == []
        for task_id in task_ids:
            task = ledger.task(task_id)
            assert task is not None and task["outcome"] == "accepted"
        assert ledger.stats(kind="classify")["tasks"] == 40
